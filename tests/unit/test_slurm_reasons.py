"""spawners.slurm.reasons: Slurm's pending reasons in words, from captured squeue lines and a
few hand-made ones for reasons that need accounting (QOS/Assoc limits), which the capture
cluster did not run."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spawners.slurm.queue import Job, parse_squeue, queue_position
from spawners.slurm.reasons import describe_pending, expected_start, explain

pytestmark = pytest.mark.unit

OUT = Path(__file__).parent / "slurm_outputs"
JOBS = parse_squeue((OUT / "squeue_many.txt").read_text())
PENDING = parse_squeue((OUT / "squeue_pending_gpu.txt").read_text())
NOW = datetime(2026, 11, 24, 18, 20, tzinfo=UTC)


def test_resources_names_the_gpus_and_partition() -> None:
    assert explain(JOBS["3"]) == "waiting for 2 GPUs on partition gpu"
    assert explain(replace(JOBS["3"], gpus_per_node=1)) == "waiting for 1 GPU on partition gpu"
    assert explain(replace(JOBS["3"], gpus_per_node=None)) == (
        "waiting for free CPUs and memory on partition gpu"
    )


def test_priority_says_how_many_are_ahead() -> None:
    job = JOBS["16"]
    position = queue_position(job, PENDING.values())
    assert explain(job, position=position) == ("behind 2 jobs of higher priority on partition gpu")
    assert explain(JOBS["4"], position=1) == "behind 1 job of higher priority on partition gpu"
    assert explain(JOBS["4"]) == "behind jobs of higher priority on partition gpu"


@pytest.mark.parametrize(
    ("job_id", "words"),
    [
        ("5", "partition closed is down"),
        ("8", "waiting for another job to finish first"),
        ("6", "held at your request"),
        ("9", "held by the administrators"),
        ("11", "more CPUs, memory or GPUs than the nodes of partition gpu have"),
        ("13", "more nodes than partition gpu allows"),
        ("15", "down, drained or reserved (node2)"),
    ],
)
def test_captured_reasons(job_id: str, words: str) -> None:
    assert words in explain(JOBS[job_id], now=NOW)


def test_begin_time_says_when() -> None:
    job = JOBS["7"]
    assert job.start is not None
    local = job.start.astimezone(NOW.tzinfo)
    assert explain(job, now=NOW) == f"set to start no earlier than {local:%H:%M}"
    assert expected_start(job, NOW) is None  # said once, by explain


def test_just_submitted() -> None:
    job = parse_squeue((OUT / "squeue_just_submitted.txt").read_text())["23"]
    assert explain(job) == "just submitted; Slurm has not scheduled it yet"
    assert expected_start(job, NOW) is None  # no estimate yet (N/A)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        ("PartitionInactive", "partition gpu is down (inactive)"),
        ("PartitionTimeLimit", "more time than partition gpu allows"),
        ("QOSMaxGRESPerUser", "your own limits (Slurm: QOSMaxGRESPerUser)"),
        ("AssocMaxJobsLimit", "your own limits (Slurm: AssocMaxJobsLimit)"),
        ("AssocGrpGRES", "your group or account has reached its shared limit"),
        ("QOSGrpCpuLimit", "shared limit (Slurm: QOSGrpCpuLimit)"),
        ("QOSJobLimit", "usage limit (Slurm: QOSJobLimit)"),
        ("DependencyNeverSatisfied", "will never start"),
        ("Reservation", "reservation"),
    ],
)
def test_table_reasons(reason: str, words: str) -> None:
    assert words in explain(replace(JOBS["3"], reason=reason))


def test_unknown_reason_says_slurms_word() -> None:
    job = replace(JOBS["3"], reason="FrobnicatorBusy")
    assert explain(job) == "waiting (Slurm says: FrobnicatorBusy)"


def test_expected_start_today_and_another_day() -> None:
    soon = NOW + timedelta(minutes=45)
    job = replace(JOBS["3"], start=soon)
    assert expected_start(job, NOW) == f"Slurm expects it to start around {soon:%H:%M}"
    later = NOW + timedelta(days=1, hours=2)
    assert expected_start(replace(job, start=later), NOW) == (
        f"Slurm expects it to start around {later:%a %d %b %H:%M}"
    )
    assert expected_start(replace(job, start=NOW - timedelta(minutes=1)), NOW) is None


def test_describe_pending_is_one_line_with_the_estimate() -> None:
    soon = NOW + timedelta(minutes=45)
    line = describe_pending(replace(JOBS["3"], start=soon), now=NOW)
    assert (
        line
        == f"Waiting for 2 GPUs on partition gpu. Slurm expects it to start around {soon:%H:%M}."
    )


def test_running_job_has_no_estimate() -> None:
    running: Job = JOBS["1"]
    assert expected_start(running, NOW) is None

"""spawners.slurm.queue against squeue outputs captured from a real Slurm 22.05
(tests/unit/slurm_outputs/README.md says how each was made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spawners.slurm.queue import (
    FORMAT,
    SEP,
    Job,
    QueueParseError,
    Status,
    find_argv,
    observe,
    parse_ids,
    parse_squeue,
    pending_argv,
    queue_position,
    squeue_argv,
    status_of,
)
from spawners.slurm.run import Outcome

pytestmark = pytest.mark.unit

OUT = Path(__file__).parent / "slurm_outputs"


def text(name: str) -> str:
    return (OUT / name).read_text()


def captured(stem: str) -> Outcome:
    """The Outcome of a captured command: its stdout, stderr and exit status."""
    rc = int(text(f"{stem}.rc"))
    return Outcome(("squeue",), rc == 0, rc, text(f"{stem}.stdout"), text(f"{stem}.stderr"))


def ok(stdout: str) -> Outcome:
    return Outcome(("squeue",), True, 0, stdout, "")


# --- command lines ---------------------------------------------------------------------------


def test_one_squeue_for_many_jobs_all_states() -> None:
    argv = squeue_argv(["12", "3", "12"], squeue=["/opt/slurm/bin/squeue"])
    assert argv == [
        "/opt/slurm/bin/squeue",
        "--noheader",
        "--jobs=3,12",
        "--states=all",
        f"--format={FORMAT}",
    ]


def test_format_has_no_user_controlled_field() -> None:
    """Job name (%j, %x) and comment (%k) are set by the job's owner; with a newline and 0x1F
    in them a user could forge a line about someone else's job."""
    for code in ("%j", "%x", "%k", "%o", "%Z", "%y"):
        assert code not in FORMAT
    assert SEP == "\x1f"


@pytest.mark.parametrize("bad", ["1,2", "abc", "-1", "1 2", "", "1;id", "12\n"])
def test_job_ids_must_be_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm job id"):
        squeue_argv([bad])


def test_squeue_argv_needs_an_id() -> None:
    with pytest.raises(ValueError):
        squeue_argv([])


def test_pending_argv_and_find_argv() -> None:
    assert pending_argv(["gpu", "debug", "gpu"])[1:4] == [
        "--noheader",
        "--states=PENDING",
        "--partition=debug,gpu",
    ]
    with pytest.raises(ValueError):
        pending_argv(["gpu,debug"])
    with pytest.raises(ValueError):
        pending_argv([])
    assert find_argv("mlrp-fresh", "sbalice") == [
        "squeue",
        "--noheader",
        "--states=all",
        "--name=mlrp-fresh",
        "--user=sbalice",
        "--format=%i",
    ]
    for name, user in [("mlrp x", "a"), ("mlrp-a", "-u"), ("a,b", "a"), ("x\ny", "a")]:
        with pytest.raises(ValueError):
            find_argv(name, user)


def test_parse_ids_captured() -> None:
    assert parse_ids(text("squeue_by_name.txt")) == ["23", "22"]
    with pytest.raises(QueueParseError):
        parse_ids("23\nsqueue: error: x\n")


# --- parsing ---------------------------------------------------------------------------------


def test_parse_captured_queue() -> None:
    jobs = parse_squeue(text("squeue_many.txt"))
    assert set(jobs) == {"1", "2", "3", "4", "5", "6", "7", "8", "9", "11", "13", "15", "16"}
    running = jobs["1"]
    assert (running.state, running.reason, running.partition, running.user) == (
        "RUNNING",
        "None",
        "gpu",
        "sbalice",
    )
    assert (running.nodes, running.batch_host, running.gpus_per_node) == ("node1", "node1", 4)
    assert running.time_limit == 3600 and running.time_left == 58 * 60 + 28
    assert running.start is not None and running.start.tzinfo is not None
    assert running.start.replace(tzinfo=None).isoformat() == "2026-11-24T18:17:31"
    waiting = jobs["3"]
    assert (waiting.state, waiting.reason, waiting.gpus_per_node) == ("PENDING", "Resources", 2)
    assert waiting.batch_host is None and waiting.nodes == ""
    assert waiting.start is not None  # Slurm's estimate
    assert jobs["16"].start is None  # N/A
    assert jobs["15"].reason == "ReqNodeNotAvail, UnavailableNodes:node2"
    assert jobs["6"].priority == 0 and jobs["5"].gpus_per_node is None
    assert jobs["4"].priority == 4294901756


def test_parse_captured_ended() -> None:
    jobs = parse_squeue(text("squeue_ended.txt"))
    assert {j.id: j.state for j in jobs.values() if status_of(j.state) is Status.GONE} == {
        "14": "FAILED",
        "17": "FAILED",
        "18": "TIMEOUT",
        "1": "CANCELLED",
        "16": "COMPLETED",
        "10": "FAILED",
    }
    assert jobs["18"].time_left is None  # "INVALID"


@pytest.mark.parametrize(
    "bad",
    [
        "1\x1fRUNNING\x1fNone",  # too few fields
        "x1" + "\x1fA" * 11,  # id not digits
        "1\x1fRUNNING\x1fNone\x1fgpu\x1fu\x1fn\x1fn\x1fsoon\x1f1:00\x1f1:00\x1f1\x1fN/A",
    ],
)
def test_unreadable_lines_raise(bad: str) -> None:
    with pytest.raises(QueueParseError):
        parse_squeue(bad + "\n")


def test_an_id_listed_twice_is_refused() -> None:
    line = text("squeue_just_submitted.txt").splitlines()[0]
    with pytest.raises(QueueParseError, match="twice"):
        parse_squeue(f"{line}\n{line}\n")


# --- three-valued status ---------------------------------------------------------------------


def test_observe_running_and_gone_by_state() -> None:
    seen = observe(ok(text("squeue_ended.txt")), ["1", "2", "3", "16", "18"])
    assert {j: o.status for j, o in seen.items()} == {
        "1": Status.GONE,
        "2": Status.RUNNING,
        "3": Status.RUNNING,
        "16": Status.GONE,
        "18": Status.GONE,
    }
    assert seen["2"].job is not None and seen["2"].job.batch_host == "node2"


def test_pending_and_completing_are_still_ours() -> None:
    for state in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"):
        assert status_of(state) is Status.RUNNING, state
    for state in ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        assert status_of(state) is Status.GONE, state


def test_a_state_we_do_not_know_is_unknown_not_gone() -> None:
    line = text("squeue_just_submitted.txt").splitlines()[0].replace("PENDING", "NEW_STATE")
    seen = observe(ok(line + "\n"), ["23"])
    assert seen["23"].status is Status.UNKNOWN
    assert "NEW_STATE" in seen["23"].detail


def test_absent_from_a_successful_query_is_gone() -> None:
    seen = observe(ok(text("squeue_many.txt")), ["3", "999"])
    assert seen["3"].status is Status.RUNNING
    assert seen["999"].status is Status.GONE and seen["999"].job is None


def test_known_and_unknown_ids_together_captured() -> None:
    """Slurm 22.05: one query with a known and an unknown id exits 0 and lists the known one."""
    seen = observe(captured("squeue_known_and_unknown"), ["2", "424242"])
    assert seen["2"].status is Status.RUNNING
    assert seen["424242"].status is Status.GONE


def test_one_unknown_id_alone_is_gone_captured() -> None:
    """Slurm 22.05: a query of ONE id it no longer knows exits 1 "Invalid job id specified"."""
    outcome = captured("squeue_one_unknown")
    assert not outcome.ok
    assert observe(outcome, ["424242"])["424242"].status is Status.GONE


def test_invalid_id_message_with_several_ids_is_unknown() -> None:
    """That message cannot mean "gone" for several ids (Slurm lists the known ones then), so
    one strange failure never makes the other jobs gone."""
    outcome = captured("squeue_one_unknown")
    seen = observe(outcome, ["424242", "2"])
    assert {o.status for o in seen.values()} == {Status.UNKNOWN}


def test_controller_unreachable_is_unknown_captured() -> None:
    seen = observe(captured("squeue_unreachable"), ["2", "3"])
    assert {o.status for o in seen.values()} == {Status.UNKNOWN}
    assert "Unable to contact slurm controller" in seen["2"].detail


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome(("squeue",), False, None, "", "", timed_out=True),
        Outcome(("squeue",), False, None, "", "No such file", missing=True),
        Outcome(("squeue",), False, 1, "", "slurm_load_jobs error: Socket timed out"),
        Outcome(("squeue",), True, 0, "garbage that is not squeue output\n", ""),
    ],
)
def test_failed_or_unreadable_query_is_unknown(outcome: Outcome) -> None:
    seen = observe(outcome, ["2", "3"])
    assert {o.status for o in seen.values()} == {Status.UNKNOWN}


# --- queue position --------------------------------------------------------------------------


def _pending() -> dict[str, Job]:
    return parse_squeue(text("squeue_pending_gpu.txt"))


def test_queue_position_captured() -> None:
    pending = _pending()
    # 3 (Resources) is first; 4 (Priority) is behind 3; 16 is behind 3 and 4. Jobs pending for
    # PartitionConfig / PartitionNodeLimit / ReqNodeNotAvail are not competing: never ahead.
    assert queue_position(pending["3"], pending.values()) == 0
    assert queue_position(pending["4"], pending.values()) == 1
    assert queue_position(pending["16"], pending.values()) == 2


def test_queue_position_only_counts_the_same_partition() -> None:
    jobs = parse_squeue(text("squeue_many.txt"))
    assert queue_position(jobs["7"], jobs.values()) == 0  # debug: nobody competing there
    assert queue_position(jobs["1"], jobs.values()) is None  # running


def test_equal_priority_is_broken_by_submission_order() -> None:
    base = _pending()["4"]
    a = Job(**{**base.__dict__, "id": "40", "priority": 7})
    b = Job(**{**base.__dict__, "id": "41", "priority": 7})
    assert queue_position(b, [a, b]) == 1
    assert queue_position(a, [a, b]) == 0

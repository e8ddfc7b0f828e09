"""spawners.slurm.submit: sbatch/scancel command lines, job ids, and sbatch's refusals, read
from outputs captured from a real Slurm 22.05 (tests/unit/slurm_outputs/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spawners.slurm.run import Outcome
from spawners.slurm.submit import (
    SubmitError,
    explain_refusal,
    parse_job_id,
    sbatch_argv,
    scancel_argv,
    slurm_text,
    submit,
)

pytestmark = pytest.mark.unit

OUT = Path(__file__).parent / "slurm_outputs"


def captured(stem: str) -> Outcome:
    rc = int((OUT / f"{stem}.rc").read_text())
    out = (OUT / f"{stem}.stdout").read_text()
    err = (OUT / f"{stem}.stderr").read_text()
    return Outcome(("sbatch", "--parsable"), rc == 0, rc, out, err)


def test_sbatch_argv_reads_the_script_from_stdin() -> None:
    assert sbatch_argv() == ["sbatch", "--parsable"]
    assert sbatch_argv(["/opt/slurm/bin/sbatch"]) == ["/opt/slurm/bin/sbatch", "--parsable"]


def test_parse_job_id_captured_and_with_cluster() -> None:
    assert parse_job_id(captured("sbatch_ok").stdout) == "21"
    assert parse_job_id("4242;cluster2\n") == "4242"


@pytest.mark.parametrize("bad", ["", "Submitted batch job 21\n", "21\n22\n", "abc", "-1", "21 ;x"])
def test_parse_job_id_refuses_anything_else(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_job_id(bad)


@pytest.mark.parametrize(
    ("stem", "reason", "words"),
    [
        ("sbatch_too_many_gpus", "impossible", "No node of partition gpu has what you asked for"),
        ("sbatch_too_much_memory", "impossible", "No node of partition gpu has what you asked for"),
        ("sbatch_bad_partition", "partition", "no partition named gpu"),  # we name ours
        ("sbatch_group_not_permitted", "partition-access", "not allowed to use partition gpu"),
        ("sbatch_time_limit", "walltime", "more than partition gpu allows"),
        ("sbatch_too_many_cpus", "impossible", "more CPUs than partition gpu allows"),
    ],
)
def test_captured_refusals_in_words(stem: str, reason: str, words: str) -> None:
    outcome = captured(stem)
    assert not outcome.ok
    err = explain_refusal(outcome, "gpu")
    assert err.reason == reason
    assert words in err.message
    assert "sbatch: error" not in err.message  # Slurm's text is for the admin…
    assert " ".join(outcome.stderr.split()) in err.detail  # …and kept there, whole
    assert not err.uncertain


def test_slurm_text_drops_prefixes() -> None:
    assert slurm_text(captured("sbatch_bad_partition").stderr) == (
        "invalid partition specified: nope; Invalid partition name specified"
    )


def test_policy_refusal_needs_accounting_so_it_is_hand_made() -> None:
    """QOS limits need slurmdbd, which the capture cluster did not run; this is sbatch's text."""
    err = explain_refusal(
        Outcome(
            ("sbatch",),
            False,
            1,
            "",
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
            "(job submit limit, user's size and/or time limits)\n",
        ),
        "gpu",
    )
    assert err.reason == "slurm-policy" and "Slurm limits" in err.message


def test_unknown_refusal_shows_slurms_words() -> None:
    err = explain_refusal(
        Outcome(("sbatch",), False, 1, "", "sbatch: error: Batch job submission failed: Frob\n"),
        "gpu",
    )
    assert err.reason == "slurm-refused"
    assert err.message == "Slurm refused the session: Frob"


def test_unreachable_missing_and_timeout() -> None:
    unreachable = Outcome(
        ("sbatch",),
        False,
        1,
        "",
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)\n",
    )
    assert explain_refusal(unreachable, "gpu").reason == "slurm-unreachable"
    missing = Outcome(("sbatch",), False, None, "", "No such file", missing=True)
    assert explain_refusal(missing, "gpu").reason == "slurm-missing"
    late = explain_refusal(Outcome(("sbatch",), False, None, "", "", timed_out=True), "gpu")
    assert late.reason == "slurm-uncertain" and late.uncertain


def test_scancel_argv() -> None:
    assert scancel_argv(["12", "3"]) == ["scancel", "--", "12", "3"]
    assert scancel_argv(["7"], ["/opt/slurm/bin/scancel"])[0] == "/opt/slurm/bin/scancel"
    for bad in (["-u", "alice"], ["1 2"], ["--signal=KILL"], []):
        with pytest.raises(ValueError):
            scancel_argv(bad)


async def test_submit_with_no_sbatch_is_a_sentence_not_a_traceback() -> None:
    with pytest.raises(SubmitError) as caught:
        await submit(
            "#!/bin/bash\n",
            user="nobody",
            partition="gpu",
            env={"PATH": "/usr/sbin:/usr/bin:/bin"},
            sbatch=["/nonexistent/sbatch"],
        )
    assert caught.value.reason == "slurm-missing"
    assert "cannot run Slurm's sbatch" in caught.value.message

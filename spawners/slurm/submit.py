"""``sbatch`` and ``scancel``: command lines, the job id, and sbatch's refusals in words.

Submission runs as the user's own Unix account (``runuser -u USER -- sbatch --parsable``), so
Slurm applies that user's partitions, groups, QOS and accounting, and the job runs as them. The
script goes on sbatch's standard input: no file to create with the right owner and mode, none a
user could swap between writing and submitting, none to clean up; Slurm keeps its own copy.

A refused submission becomes a :class:`SubmitError` with a sentence for the user (naming what
to change), Slurm's own text for the admin, and a short `reason` label. A submission that timed
out is `uncertain`: Slurm may have queued the job anyway, so the caller should look for it by
name (:func:`spawners.slurm.queue.find_argv`) before trying again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from spawners.slurm.queue import JOB_ID, check_job_ids
from spawners.slurm.run import Outcome, run

# sbatch's refusals (substring of its stderr, Slurm 20.x-23.x), in order of precedence: the
# label for logs and metrics, and the sentence for the user ({p} is the partition).
REFUSALS: tuple[tuple[str, str, str], ...] = (
    (
        "Unable to contact slurm controller",
        "slurm-unreachable",
        "The cluster's scheduler (Slurm) is not answering right now. Try again in a few "
        "minutes; if it keeps happening, tell the administrators.",
    ),
    (
        "User's group not permitted to use this partition",
        "partition-access",
        "You are not allowed to use partition {p}. Pick another profile, or ask the "
        "administrators for access.",
    ),
    (
        "Invalid account or account/partition combination",
        "partition-access",
        "Your Slurm account may not use partition {p}. Pick another profile, or ask the "
        "administrators.",
    ),
    (
        "Invalid partition name specified",
        "partition",
        "The cluster has no partition named {p}. Tell the administrators: this profile needs "
        "fixing.",
    ),
    (
        "Requested time limit is invalid",
        "walltime",
        "The time you asked for is more than partition {p} allows. Ask for less time.",
    ),
    (
        "More processors requested than permitted",
        "impossible",
        "You asked for more CPUs than partition {p} allows. Ask for fewer CPUs.",
    ),
    (
        "Requested node configuration is not available",
        "impossible",
        "No node of partition {p} has what you asked for (GPUs, CPUs and memory together). "
        "Ask for fewer GPUs, CPUs or less memory.",
    ),
    (
        "Job violates accounting/QOS policy",
        "slurm-policy",
        "Your Slurm limits do not allow this session now (too many jobs, or too large or too "
        "long for your account). Stop another session or ask for less.",
    ),
    (
        "Invalid qos specification",
        "slurm-policy",
        "Your Slurm account has no quality of service (QOS) that allows this session. Ask the "
        "administrators.",
    ),
    (
        "Invalid user id",
        "account",
        "Your Unix account is not known to the cluster's scheduler. Ask the administrators.",
    ),
    (
        "Access/permission denied",
        "partition-access",
        "Slurm did not allow you to submit to partition {p}. Ask the administrators.",
    ),
)


class SubmitError(Exception):
    """sbatch did not give a job id. `message` is for the user, `detail` for the admin log."""

    def __init__(self, message: str, *, reason: str, detail: str, uncertain: bool = False):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.detail = detail
        self.uncertain = uncertain


def sbatch_argv(sbatch: Sequence[str] = ("sbatch",)) -> list[str]:
    """sbatch reading the script from standard input, printing only ``ID[;CLUSTER]``."""
    return [*sbatch, "--parsable"]


def parse_job_id(stdout: str) -> str:
    """The job id from ``sbatch --parsable`` (``"21"`` or ``"21;cluster"``); ValueError if
    the output is not one."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError(f"sbatch --parsable printed {stdout!r}, not one job id")
    job_id = lines[0].split(";", 1)[0]
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"sbatch --parsable printed {stdout!r}, not a job id")
    return job_id


def slurm_text(stderr: str) -> str:
    """sbatch's error lines without their ``sbatch: error:`` prefixes, on one line."""
    parts = []
    for line in stderr.splitlines():
        line = line.strip()
        for prefix in ("sbatch: error: ", "Batch job submission failed: "):
            line = line.removeprefix(prefix)
        if line:
            parts.append(line)
    return "; ".join(parts)


def explain_refusal(outcome: Outcome, partition: str) -> SubmitError:
    """The SubmitError for an sbatch that did not print a job id."""
    detail = outcome.describe()
    if outcome.missing:
        return SubmitError(
            "The hub cannot run Slurm's sbatch command (not installed, or not where the hub "
            "looks for it), so Slurm sessions cannot start. Tell the administrators.",
            reason="slurm-missing",
            detail=detail,
        )
    if outcome.timed_out:
        return SubmitError(
            "The cluster's scheduler (Slurm) did not answer in time. Your session may still "
            "start; wait a minute before trying again.",
            reason="slurm-uncertain",
            detail=detail,
            uncertain=True,
        )
    for needle, reason, sentence in REFUSALS:
        if needle.lower() in outcome.stderr.lower():
            return SubmitError(sentence.format(p=partition), reason=reason, detail=detail)
    said = slurm_text(outcome.stderr) or f"exit status {outcome.rc}"
    return SubmitError(f"Slurm refused the session: {said}", reason="slurm-refused", detail=detail)


async def submit(
    script: str,
    *,
    user: str,
    partition: str,
    env: Mapping[str, str],
    timeout: float = 60.0,
    sbatch: Sequence[str] = ("sbatch",),
    runuser: Sequence[str] = ("runuser",),
) -> str:
    """Submit `script` as Unix account `user`; the job id, or SubmitError.

    `env` is sbatch's whole environment: the variables the script's ``--export`` names come
    from it (JUPYTERHUB_*), plus what sbatch needs (PATH, SLURM_CONF).
    """
    outcome = await run(
        sbatch_argv(sbatch), env=env, timeout=timeout, as_user=user, stdin=script, runuser=runuser
    )
    if not outcome.ok:
        raise explain_refusal(outcome, partition)
    try:
        return parse_job_id(outcome.stdout)
    except ValueError as e:
        raise SubmitError(
            "Slurm accepted the session but its answer could not be read. Tell the administrators.",
            reason="slurm-uncertain",
            detail=f"{outcome.describe()}: {e}",
            uncertain=True,
        ) from None


@dataclass(frozen=True)
class CancelResult:
    """scancel's outcome. Slurm 22.05's scancel exits 0 for an id it does not know (it ended
    and was forgotten), so `ok` means "not running any more as far as Slurm knows"."""

    ok: bool
    outcome: Outcome


def scancel_argv(job_ids: Iterable[str], scancel: Sequence[str] = ("scancel",)) -> list[str]:
    """scancel for `job_ids` (digits only; ``--`` so no id is read as an option)."""
    ids = check_job_ids(job_ids)
    if not ids:
        raise ValueError("scancel_argv needs at least one job id")
    return [*scancel, "--", *ids]


async def cancel(
    job_ids: Iterable[str],
    *,
    env: Mapping[str, str] | None = None,
    as_user: str | None = None,
    timeout: float = 30.0,
    scancel: Sequence[str] = ("scancel",),
    runuser: Sequence[str] = ("runuser",),
) -> CancelResult:
    """Cancel `job_ids`, as the hub (root, the default) or as `as_user` (who may cancel only
    their own jobs: "Access/permission denied" otherwise)."""
    outcome = await run(
        scancel_argv(job_ids, scancel), env=env, timeout=timeout, as_user=as_user, runuser=runuser
    )
    return CancelResult(outcome.ok, outcome)

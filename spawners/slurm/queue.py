"""One ``squeue`` for many jobs: the command line, its parser, and running / gone / unknown.

The poller asks about all of its jobs in one call (:func:`squeue_argv`) and reads the answer
with :func:`observe`, which gives each job one of three statuses:

- RUNNING: Slurm still has the job in a state that holds or will hold resources (PENDING,
  CONFIGURING, RUNNING, COMPLETING, SUSPENDED, requeued…): keep waiting on it.
- GONE: the job ended (COMPLETED, CANCELLED, FAILED, TIMEOUT…), or a query that succeeded does
  not list it (Slurm forgot it after ``MinJobAge``).
- UNKNOWN: we could not tell: the command failed, timed out, is missing, or printed something
  we cannot read. UNKNOWN must never stop a server or free what it holds.

What Slurm 22.05 does with ids it no longer knows (captured in tests/unit/slurm_outputs/):
with two or more ids, squeue lists the known ones and exits 0 (the unknown ones are simply
absent); with exactly ONE unknown id it exits 1 with "slurm_load_jobs error: Invalid job id
specified". So that one message, for a query of one id, means GONE, not UNKNOWN; with
several ids the same message cannot occur for a missing job, and is read as UNKNOWN.

We use ``--format`` with a delimiter (ASCII unit separator, 0x1F) rather than ``--json``: the
text format has been stable for a decade, while the JSON schema changes with each Slurm release
(v0.0.38 in 22.05, v0.0.39 in 23.02 with different field shapes). No field we ask for is
user-controlled text (no job name or comment): a user can rename their own job, and a name with
a newline and delimiters in it could otherwise forge a line about another job.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from spawners.slurm.run import Outcome, run
from spawners.slurm.values import duration_seconds, gpu_count, integer, timestamp

SEP = "\x1f"
# (Job attribute, squeue --format code), in output order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "%i"),
    ("state", "%T"),  # long state name: PENDING, RUNNING…
    ("reason", "%r"),  # pending / end reason: Resources, Priority, None…
    ("partition", "%P"),
    ("user", "%u"),
    ("nodes", "%N"),  # node list, e.g. "node[1-2]"; empty while pending
    ("batch_host", "%B"),  # node running the batch script ("n/a" while pending)
    ("start", "%S"),  # actual start, or Slurm's estimate while pending (N/A when it has none)
    ("time_left", "%L"),
    ("time_limit", "%l"),
    ("priority", "%Q"),  # integer priority; 0 when held
    ("tres_per_node", "%b"),  # e.g. "gres:gpu:2", "N/A"
)
FORMAT = SEP.join(code for _, code in FIELDS)

JOB_ID = re.compile(r"^[0-9]{1,12}$")

# Long state names (squeue %T). Anything else is read as UNKNOWN, never guessed.
ALIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "RESIZING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "SIGNALING",
        "STAGE_OUT",
        "POWER_UP_NODE",
    }
)
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)
# The unknown id message of squeue (and scancel -v) in Slurm 20.x-23.x.
INVALID_JOB_ID = "Invalid job id specified"

# Pending reasons of jobs that compete for the partition's resources now. Jobs pending for any
# other reason (held, waiting for a start time, a dependency, a limit, or asking for what the
# partition cannot give) are skipped by Slurm's scheduler, so they are not "ahead" of anyone.
COMPETING = frozenset({"None", "Priority", "Resources"})


class QueueParseError(ValueError):
    """squeue printed something this module cannot read (wrong format option, new Slurm)."""


class Status(enum.Enum):
    RUNNING = "running"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Job:
    """One job as squeue reports it. Slurm's own words are kept (`state`, `reason`)."""

    id: str
    state: str
    reason: str
    partition: str
    user: str
    nodes: str
    batch_host: str | None
    start: datetime | None  # started at, or Slurm's estimate while pending; None when unknown
    time_left: int | None  # seconds; None when unlimited or not applicable
    time_limit: int | None  # seconds; None when unlimited
    priority: int | None
    gpus_per_node: int | None  # requested GPUs per node; None when the job asked for none shown

    @property
    def pending(self) -> bool:
        return self.state == "PENDING"

    @property
    def partitions(self) -> tuple[str, ...]:
        """A pending job may name several partitions ("gpu,debug")."""
        return tuple(p for p in self.partition.split(",") if p)


@dataclass(frozen=True)
class Observation:
    """What one poll says about one job: a status, the job when listed, and why (for logs)."""

    status: Status
    job: Job | None
    detail: str = ""


def check_job_ids(job_ids: Iterable[str]) -> list[str]:
    """The ids, checked to be Slurm job ids (digits); ValueError names the first bad one."""
    ids = list(job_ids)
    for j in ids:
        if not isinstance(j, str) or not JOB_ID.fullmatch(j):
            raise ValueError(f"{j!r} is not a Slurm job id")
    return ids


def squeue_argv(job_ids: Iterable[str], squeue: Sequence[str] = ("squeue",)) -> list[str]:
    """One squeue for all `job_ids`, in every state (so ended jobs read as ended, not absent)."""
    ids = check_job_ids(job_ids)
    if not ids:
        raise ValueError("squeue_argv needs at least one job id")
    return [
        *squeue,
        "--noheader",
        f"--jobs={','.join(sorted(set(ids), key=int))}",
        "--states=all",
        f"--format={FORMAT}",
    ]


def pending_argv(partitions: Iterable[str], squeue: Sequence[str] = ("squeue",)) -> list[str]:
    """All pending jobs of `partitions` (everyone's), for :func:`queue_position`."""
    names = sorted(set(partitions))
    if not names or not all(_PARTITION.fullmatch(p) for p in names):
        raise ValueError(f"not a list of partition names: {names!r}")
    return [
        *squeue,
        "--noheader",
        "--states=PENDING",
        f"--partition={','.join(names)}",
        f"--format={FORMAT}",
    ]


def find_argv(job_name: str, user: str, squeue: Sequence[str] = ("squeue",)) -> list[str]:
    """Ids of `user`'s jobs named `job_name`, in any state: finds a job whose id was never
    saved (hub killed between sbatch and its checkpoint, or sbatch timed out after submitting).
    Parse with :func:`parse_ids`."""
    if not _JOB_NAME.fullmatch(job_name):
        raise ValueError(f"{job_name!r} is not a job name this platform gives")
    if not _USER.fullmatch(user):
        raise ValueError(f"{user!r} is not a Unix user name")
    return [
        *squeue,
        "--noheader",
        "--states=all",
        f"--name={job_name}",
        f"--user={user}",
        "--format=%i",
    ]


_PARTITION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_JOB_NAME = re.compile(r"^[a-z0-9_.-]{1,80}$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def parse_ids(stdout: str) -> list[str]:
    """The job ids of a ``--format=%i`` listing, one per line."""
    ids = [line.strip() for line in stdout.splitlines() if line.strip()]
    bad = [i for i in ids if not JOB_ID.fullmatch(i)]
    if bad:
        raise QueueParseError(f"not job ids in squeue output: {bad[:3]!r}")
    return ids


def parse_squeue(stdout: str) -> dict[str, Job]:
    """Jobs by id from the output of :func:`squeue_argv` or :func:`pending_argv`.

    Raises QueueParseError for a line that does not have the fields in FORMAT, or an id listed
    twice: a reader that guesses could call a running job gone.
    """
    jobs: dict[str, Job] = {}
    for n, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(SEP)
        if len(parts) != len(FIELDS):
            raise QueueParseError(
                f"squeue line {n} has {len(parts)} fields, expected {len(FIELDS)}: {line!r}"
            )
        raw = dict(zip((name for name, _ in FIELDS), parts, strict=True))
        try:
            job = _job(raw)
        except ValueError as e:
            raise QueueParseError(f"squeue line {n}: {e}: {line!r}") from None
        if job.id in jobs:
            raise QueueParseError(f"squeue listed job {job.id} twice")
        jobs[job.id] = job
    return jobs


def _job(raw: Mapping[str, str]) -> Job:
    if not JOB_ID.fullmatch(raw["id"]):
        raise ValueError(f"job id {raw['id']!r}")
    host = raw["batch_host"].strip()
    return Job(
        id=raw["id"],
        state=raw["state"].strip(),
        reason=raw["reason"].strip(),
        partition=raw["partition"].strip(),
        user=raw["user"].strip(),
        nodes=raw["nodes"].strip(),
        batch_host=None if host.lower() in ("", "n/a", "(null)") else host,
        start=timestamp(raw["start"]),
        time_left=duration_seconds(raw["time_left"]),
        time_limit=duration_seconds(raw["time_limit"]),
        priority=integer(raw["priority"]),
        gpus_per_node=gpu_count(raw["tres_per_node"]),
    )


def status_of(state: str) -> Status:
    """RUNNING for states that hold or wait for resources, GONE for ended, else UNKNOWN."""
    if state in ALIVE_STATES:
        return Status.RUNNING
    if state in ENDED_STATES:
        return Status.GONE
    return Status.UNKNOWN


def observe(outcome: Outcome, job_ids: Iterable[str]) -> dict[str, Observation]:
    """Each asked-for job's status, from the Outcome of running :func:`squeue_argv`.

    A failed, timed-out or unreadable query makes every job UNKNOWN. A successful one makes a
    listed job RUNNING or GONE by its state, and an unlisted one GONE. See the module docstring
    for the single-unknown-id exit status.
    """
    ids = check_job_ids(job_ids)
    if not outcome.ok:
        if len(set(ids)) == 1 and outcome.rc == 1 and INVALID_JOB_ID in outcome.stderr:
            return {ids[0]: Observation(Status.GONE, None, "Slurm no longer knows this job")}
        why = outcome.describe()
        return {j: Observation(Status.UNKNOWN, None, why) for j in ids}
    try:
        jobs = parse_squeue(outcome.stdout)
    except QueueParseError as e:
        return {j: Observation(Status.UNKNOWN, None, str(e)) for j in ids}
    seen: dict[str, Observation] = {}
    for j in ids:
        job = jobs.get(j)
        if job is None:
            seen[j] = Observation(Status.GONE, None, "not in Slurm's queue any more")
        else:
            status = status_of(job.state)
            detail = f"{job.state} ({job.reason})"
            if status is Status.UNKNOWN:
                detail = f"state {job.state!r} is not one this platform knows"
            seen[j] = Observation(status, job, detail)
    return seen


async def query(
    job_ids: Iterable[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    squeue: Sequence[str] = ("squeue",),
) -> dict[str, Observation]:
    """Run one squeue for `job_ids` (as the hub's own account) and :func:`observe` it."""
    ids = check_job_ids(job_ids)
    if not ids:
        return {}
    outcome = await run(squeue_argv(ids, squeue), env=env, timeout=timeout)
    return observe(outcome, ids)


def queue_position(job: Job, pending: Iterable[Job]) -> int | None:
    """How many pending jobs that compete now are ahead of `job` in its partition(s).

    Ahead means: pending, in a partition `job` also asks for, and of higher priority (equal
    priority: submitted earlier, i.e. a smaller id, which is Slurm's own tie-break), and
    competing: pending for Resources, Priority or None (see COMPETING). None when `job` is not
    pending or has no priority to compare.
    """
    if not job.pending or job.priority is None:
        return None
    mine = set(job.partitions)
    ahead = 0
    for other in pending:
        if other.id == job.id or not other.pending or other.priority is None:
            continue
        if not mine.intersection(other.partitions) or not _competing(other):
            continue
        if (other.priority, -int(other.id)) > (job.priority, -int(job.id)):
            ahead += 1
    return ahead


def _competing(job: Job) -> bool:
    return bool(job.priority) and job.reason.partition(",")[0].strip() in COMPETING

"""Why a job waits, in words a student understands, from Slurm's pending reason.

Slurm's reasons are single words (``Resources``, ``Priority``, ``QOSMaxGRESPerUser``…), some
followed by detail (``ReqNodeNotAvail, UnavailableNodes:node2``). :func:`explain` looks the word
up in a table; a word the table does not have is shown as Slurm's own, so a new Slurm never
makes the message wrong, only less friendly. :func:`expected_start` adds Slurm's estimate when
it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from spawners.slurm.queue import Job


@dataclass(frozen=True)
class _Ctx:
    partition: str
    gpus: int | None
    position: int | None
    detail: str  # what follows the reason word, e.g. "UnavailableNodes:node2"
    word: str  # Slurm's reason word
    start: datetime | None
    now: datetime


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _resources(c: _Ctx) -> str:
    if c.gpus:
        return f"waiting for {_gpus(c.gpus)} on partition {c.partition}"
    return f"waiting for free CPUs and memory on partition {c.partition}"


def _priority(c: _Ctx) -> str:
    if c.position:
        return f"behind {_jobs(c.position)} of higher priority on partition {c.partition}"
    return f"behind jobs of higher priority on partition {c.partition}"


def _req_node(c: _Ctx) -> str:
    nodes = c.detail.removeprefix("UnavailableNodes:").strip()
    where = f" ({nodes})" if nodes else ""
    return (
        f"the nodes it needs on partition {c.partition} are down, drained or reserved{where}; "
        "it starts when they are back"
    )


def _begin(c: _Ctx) -> str:
    if c.start is not None:
        return f"set to start no earlier than {_clock(c.start, c.now)}"
    return "set to start at a later time"


def _own_limit(c: _Ctx) -> str:
    return (
        f"you have reached one of your own limits (Slurm: {c.word}); "
        "it starts when one of your other jobs ends"
    )


def _group_limit(c: _Ctx) -> str:
    return (
        f"your group or account has reached its shared limit (Slurm: {c.word}); "
        "it starts when other jobs of your group end"
    )


def _other_limit(c: _Ctx) -> str:
    return f"held back by a usage limit (Slurm: {c.word}); ask the administrators if it persists"


_TABLE: dict[str, Callable[[_Ctx], str]] = {
    "None": lambda c: "just submitted; Slurm has not scheduled it yet",
    "Resources": _resources,
    "Priority": _priority,
    "PartitionDown": lambda c: f"partition {c.partition} is down; it starts when it is back up",
    "PartitionInactive": lambda c: (
        f"partition {c.partition} is down (inactive); it starts when the administrators reopen it"
    ),
    "ReqNodeNotAvail": _req_node,
    "NodeDown": lambda c: f"a node it needs on partition {c.partition} is down",
    "PartitionTimeLimit": lambda c: (
        f"it asks for more time than partition {c.partition} allows, "
        "so it will not start; stop it and ask for less"
    ),
    "PartitionNodeLimit": lambda c: (
        f"it asks for more nodes than partition {c.partition} allows, "
        "so it will not start; stop it and ask for fewer"
    ),
    "PartitionConfig": lambda c: (
        f"it asks for more CPUs, memory or GPUs than the nodes of "
        f"partition {c.partition} have, so it will not start; stop it and ask for less"
    ),
    "BadConstraints": lambda c: f"it asks for something no node of partition {c.partition} has",
    "JobHeldUser": lambda c: "held at your request; it will not start until released",
    "JobHeldAdmin": lambda c: "held by the administrators; it will not start until they release it",
    "BeginTime": _begin,
    "Dependency": lambda c: "waiting for another job to finish first",
    "DependencyNeverSatisfied": lambda c: (
        "waiting for another job that did not succeed, so it will never start; stop it"
    ),
    "Reservation": lambda c: "waiting for its reservation to begin",
    "Licenses": lambda c: "waiting for software licenses",
    "Prolog": lambda c: "starting: the node is preparing for it",
    "Cleaning": lambda c: "waiting while Slurm cleans up after an earlier run",
    "InvalidAccount": lambda c: "your Slurm account is not valid; ask the administrators",
    "InvalidQOS": lambda c: (
        "your Slurm quality of service (QOS) is not valid; ask the administrators"
    ),
    "AccountNotAllowed": lambda c: f"your Slurm account may not use partition {c.partition}",
    "QOSNotAllowed": lambda c: f"your quality of service (QOS) may not use partition {c.partition}",
    "launch failed requeued held": lambda c: (
        "held after it failed to start on a node; ask the administrators"
    ),
}

# Families of limit reasons (QOSMaxGRESPerUser, AssocGrpCpuLimit, …): by prefix, in order.
_PREFIXES: tuple[tuple[str, Callable[[_Ctx], str]], ...] = (
    ("AssocMax", _own_limit),
    ("QOSMax", _own_limit),
    ("AssocGrp", _group_limit),
    ("QOSGrp", _group_limit),
    ("QOS", _other_limit),
    ("Assoc", _other_limit),
)


def explain(job: Job, *, position: int | None = None, now: datetime | None = None) -> str:
    """Why pending `job` waits, in a plain sentence fragment (no final period).

    `position` is from :func:`spawners.slurm.queue.queue_position`. A reason this table does
    not know is reported as Slurm's own word.
    """
    word, _, detail = job.reason.partition(",")
    word = word.strip()
    ctx = _Ctx(
        partition=job.partition or "?",
        gpus=job.gpus_per_node,
        position=position,
        detail=detail.strip(),
        word=word,
        start=job.start,
        now=now or datetime.now().astimezone(),
    )
    rule = _TABLE.get(word)
    if rule is None:
        rule = next((fn for prefix, fn in _PREFIXES if word.startswith(prefix)), None)
    if rule is None:
        return f"waiting (Slurm says: {job.reason})" if job.reason else "waiting"
    return rule(ctx)


def expected_start(job: Job, now: datetime | None = None) -> str | None:
    """ "Slurm expects it to start around 14:05" when Slurm has an estimate in the future.

    Slurm fills the estimate in its backfill pass (every 30 s by default), so a job just
    submitted has none. A BeginTime job's start is the time it asked for, said by
    :func:`explain` already.
    """
    if not job.pending or job.start is None or job.reason.startswith("BeginTime"):
        return None
    now = now or datetime.now().astimezone()
    if job.start <= now:
        return None
    return f"Slurm expects it to start around {_clock(job.start, now)}"


def describe_pending(job: Job, *, position: int | None = None, now: datetime | None = None) -> str:
    """The whole progress line for a pending job: the reason, then the estimate if any.

    "Waiting for 2 GPUs on partition gpu. Slurm expects it to start around 14:05."
    """
    text = explain(job, position=position, now=now)
    line = text[:1].upper() + text[1:] + "."
    start = expected_start(job, now)
    return f"{line} {start}." if start else line


def _clock(when: datetime, now: datetime) -> str:
    """14:05 today, or "Tue 25 Nov 14:05" on another day, in the hub's local time."""
    local = when.astimezone(now.tzinfo)
    if local.date() == now.date():
        return local.strftime("%H:%M")
    return local.strftime("%a %d %b %H:%M")

"""Partitions and their nodes, read from Slurm (not retyped in YAML), and requests that can
never run.

Two commands, both as the hub's own account: ``scontrol --all show partition --oneliner``
(limits, allowed groups, state) and ``scontrol show node --oneliner --details`` (CPUs, memory,
GPUs and GPUs in use per node, and which partitions each node is in). ``--details`` is what
makes scontrol print ``GresUsed``; the alternative, ``gres/gpu`` in ``AllocTRES``, is there only
when the site lists ``gres/gpu`` in ``AccountingStorageTRES``, so it is the fallback.

:func:`impossible` answers "can this request ever run on this partition?" with the sentence
naming the limit it breaks, or None. A partition that is down, or nodes that are busy or
drained, are not impossible: they are a wait, which :mod:`.reasons` explains.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from spawners.slurm.values import duration_seconds, gpu_count, is_unlimited

# A key=value token of scontrol's one-line output starts after whitespace with a CamelCase key.
# Values may contain spaces ("OS=Linux 6.1 #1 SMP", "Reason=fan broken [root@…]"), so a token
# runs until the next " Key=". A value that itself contains " Word=" (only an admin's Reason can)
# splits into an extra key, which is harmless because the first occurrence of a key wins.
_TOKEN = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")

# Node state words that mean "cannot start a job now" (scontrol prints e.g. "MIXED+DRAIN",
# "IDLE+NOT_RESPONDING", "DOWN+DRAIN", "IDLE+POWERED_DOWN"; powered-down nodes can be
# powered up, so they count as usable).
_UNUSABLE = frozenset(
    {
        "DOWN",
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "FAIL",
        "FAILING",
        "FUTURE",
        "NOT_RESPONDING",
        "MAINT",
        "INVALID_REG",
        "REBOOT_ISSUED",
        "REBOOT_REQUESTED",
        "UNKNOWN",
        "INVAL",
    }
)


class SlurmInfoError(ValueError):
    """scontrol printed something this module cannot read."""


def partitions_argv(scontrol: Sequence[str] = ("scontrol",)) -> list[str]:
    """Every partition, hidden ones too (an admin may offer a hidden partition on the hub)."""
    return [*scontrol, "--all", "show", "partition", "--oneliner"]


def nodes_argv(scontrol: Sequence[str] = ("scontrol",)) -> list[str]:
    """Every node, with the GPUs in use (``--details`` adds GresUsed)."""
    return [*scontrol, "show", "node", "--oneliner", "--details"]


def parse_oneliner(line: str) -> dict[str, str]:
    """One ``--oneliner`` record as a dict; the first occurrence of a key wins."""
    fields: dict[str, str] = {}
    matches = list(_TOKEN.finditer(line))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields.setdefault(m.group(1), line[m.end() : end].strip())
    return fields


def parse_records(stdout: str, key: str) -> list[dict[str, str]]:
    """The records of a ``scontrol show … --oneliner`` output; each must start with `key`."""
    records = []
    for n, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        fields = parse_oneliner(line)
        if key not in fields or not line.lstrip().startswith(key + "="):
            raise SlurmInfoError(f"scontrol line {n} does not start with {key}=: {line[:80]!r}")
        records.append(fields)
    return records


@dataclass(frozen=True)
class Node:
    name: str
    state: str  # e.g. "IDLE", "MIXED+DRAIN"
    cpus: int
    memory_mb: int  # RealMemory
    gpus: int
    gpus_used: int
    partitions: tuple[str, ...]
    address: str = ""  # NodeAddr: where slurmctld (and the hub) reach the node

    @property
    def usable(self) -> bool:
        """Can start a job now (not down, drained, failing or not responding)."""
        words = set(self.state.rstrip("*~#!%$@^-").split("+"))
        return not (words & _UNUSABLE) and not self.state.endswith("*")

    @property
    def gpus_free(self) -> int:
        return max(0, self.gpus - self.gpus_used) if self.usable else 0


def parse_nodes(stdout: str) -> list[Node]:
    """Nodes from :func:`nodes_argv`'s output."""
    nodes = []
    for f in parse_records(stdout, "NodeName"):
        try:
            gpus = gpu_count(f.get("Gres", "")) or 0
            used = gpu_count(f.get("GresUsed", "")) if "GresUsed" in f else None
            if used is None:
                used = gpu_count(f.get("AllocTRES", "")) or 0
            nodes.append(
                Node(
                    name=f["NodeName"],
                    state=f.get("State", "UNKNOWN"),
                    # CPUEfctv leaves out cores reserved for the system (CoreSpecCount).
                    cpus=int(f.get("CPUEfctv", f.get("CPUTot", "0"))),
                    memory_mb=int(f.get("RealMemory", "0")),
                    gpus=gpus,
                    gpus_used=used,
                    partitions=tuple(p for p in f.get("Partitions", "").split(",") if p),
                    address=f.get("NodeAddr", f["NodeName"]),
                )
            )
        except ValueError as e:
            raise SlurmInfoError(f"node {f.get('NodeName')!r}: {e}") from None
    return nodes


@dataclass(frozen=True)
class Partition:
    """A partition as Slurm has it, with what its nodes offer.

    `max_time` is seconds (None: UNLIMITED). `allow_groups` is None when every group may use it.
    The per-node maxima are over the partition's nodes, capped by the partition's own
    MaxCPUsPerNode / MaxMemPerNode. `gpus_free` counts only nodes that can start a job now.
    """

    name: str
    state: str  # UP, DOWN, DRAIN, INACTIVE
    max_time: int | None
    nodes: tuple[Node, ...]
    allow_groups: frozenset[str] | None
    root_only: bool
    max_nodes: int | None
    max_gpus_per_node: int
    max_cpus_per_node: int
    max_memory_mb_per_node: int
    gpus_total: int
    gpus_free: int

    @property
    def up(self) -> bool:
        return self.state == "UP"


def parse_partitions(partitions_stdout: str, nodes_stdout: str) -> dict[str, Partition]:
    """Partitions by name, from the outputs of :func:`partitions_argv` and :func:`nodes_argv`."""
    nodes = parse_nodes(nodes_stdout)
    result: dict[str, Partition] = {}
    for f in parse_records(partitions_stdout, "PartitionName"):
        name = f["PartitionName"]
        members = tuple(n for n in nodes if name in n.partitions)
        try:
            result[name] = _partition(f, members)
        except ValueError as e:
            raise SlurmInfoError(f"partition {name!r}: {e}") from None
    return result


def _partition(f: Mapping[str, str], members: tuple[Node, ...]) -> Partition:
    groups = f.get("AllowGroups", "ALL")
    cap_cpus = _limit(f.get("MaxCPUsPerNode", "UNLIMITED"))
    cap_mem = _limit(f.get("MaxMemPerNode", "UNLIMITED"))
    max_cpus = max((n.cpus for n in members), default=0)
    max_mem = max((n.memory_mb for n in members), default=0)
    return Partition(
        name=f["PartitionName"],
        state=f.get("State", "UNKNOWN"),
        max_time=duration_seconds(f.get("MaxTime", "UNLIMITED")),
        nodes=members,
        allow_groups=None if groups == "ALL" else frozenset(g for g in groups.split(",") if g),
        root_only=f.get("RootOnly", "NO") == "YES",
        max_nodes=_limit(f.get("MaxNodes", "UNLIMITED")),
        max_gpus_per_node=max((n.gpus for n in members), default=0),
        max_cpus_per_node=min(max_cpus, cap_cpus) if cap_cpus is not None else max_cpus,
        max_memory_mb_per_node=min(max_mem, cap_mem) if cap_mem is not None else max_mem,
        gpus_total=sum(n.gpus for n in members),
        gpus_free=sum(n.gpus_free for n in members),
    )


def _limit(text: str) -> int | None:
    """A count or megabytes limit; None for UNLIMITED."""
    if is_unlimited(text):
        return None
    return int(text.rstrip("M"))


@dataclass(frozen=True)
class Request:
    """What a spawn asks of Slurm (one node)."""

    partition: str
    gpus: int
    cpus: int
    memory_mb: int
    walltime_minutes: int


def impossible(request: Request, partition: Partition, user_groups: Iterable[str]) -> str | None:
    """The sentence saying why `request` can never run on `partition`, or None if it can.

    Checked, in this order: the partition allows one of `user_groups` (Unix group names) and is
    not root-only; the walltime is within MaxTime; some node has enough GPUs; some node has
    enough CPUs; some node has enough memory; and one node has all three together. A partition
    that is down, or full, is not impossible: the job waits.
    """
    p = partition
    if p.root_only:
        return f"Partition {p.name} is reserved for the administrators."
    if p.allow_groups is not None and not p.allow_groups.intersection(user_groups):
        allowed = ", ".join(sorted(p.allow_groups))
        return (
            f"Partition {p.name} is only for members of {allowed}, and you are not one. "
            "Pick another profile, or ask the administrators for access."
        )
    if p.max_time is not None and request.walltime_minutes * 60 > p.max_time:
        limit, asked = _minutes(p.max_time), _minutes(request.walltime_minutes * 60)
        return (
            f"Partition {p.name} allows at most {limit} per session; you asked for {asked}. "
            f"Ask for {limit} or less."
        )
    if not p.nodes:
        return f"Partition {p.name} has no nodes."
    if request.gpus > p.max_gpus_per_node:
        most = p.max_gpus_per_node
        return (
            f"The nodes of partition {p.name} have at most {_count(most, 'GPU')} each; you asked "
            f"for {request.gpus}. Ask for {most} or fewer."
            if most
            else f"Partition {p.name} has no GPUs; you asked for {request.gpus}."
        )
    if request.cpus > p.max_cpus_per_node:
        return (
            f"The nodes of partition {p.name} have at most {_count(p.max_cpus_per_node, 'CPU')} "
            f"each; you asked for {request.cpus}. Ask for {p.max_cpus_per_node} or fewer."
        )
    if request.memory_mb > p.max_memory_mb_per_node:
        return (
            f"The nodes of partition {p.name} have at most {_mb(p.max_memory_mb_per_node)} of "
            f"memory each; you asked for {_mb(request.memory_mb)}."
        )
    cap_cpus = p.max_cpus_per_node
    cap_mem = p.max_memory_mb_per_node
    if not any(
        n.gpus >= request.gpus
        and min(n.cpus, cap_cpus) >= request.cpus
        and min(n.memory_mb, cap_mem) >= request.memory_mb
        for n in p.nodes
    ):
        return (
            f"No single node of partition {p.name} has {_count(request.gpus, 'GPU')}, "
            f"{_count(request.cpus, 'CPU')} and {_mb(request.memory_mb)} of memory together. "
            "Ask for less of one of them."
        )
    return None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _mb(mb: int) -> str:
    return f"{mb:,} MB"


def _minutes(seconds: int) -> str:
    minutes = seconds // 60
    if minutes % 60 == 0 and minutes >= 60:
        return _count(minutes // 60, "hour")
    return _count(minutes, "minute")

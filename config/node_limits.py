"""Warnings for profiles that ask for more than this node has: a server would never get it.

Not errors: a file may be written on one machine for another, and cgroups only cap (a 64-CPU
limit on a 2-CPU node is no limit at all, but starts fine). `mlrp config check` prints these;
GPUs are judged elsewhere (`config.render.node_inventory`), as a profile asking for more GPUs
than the node has could never start.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from config.schema import MLRPConfig

GIB = 1024**3


@dataclass(frozen=True)
class Node:
    cpus: int | None  # CPUs the hub (and so the servers it starts) may run on; None: unknown
    memory: int | None  # bytes of RAM; None: unknown


def node_cpus() -> int | None:
    """The CPUs this process may run on: its affinity mask (what taskset, cpusets and container
    runtimes restrict), which the servers the hub starts inherit; else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def node_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal of /proc/meminfo in bytes, or None when it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "MemTotal":  # "MemTotal:       24684096 kB"
                number, *unit = value.split()
                return int(number) * (1024 if unit == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def this_node() -> Node:
    return Node(node_cpus(), node_memory())


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def beyond_node(cfg: MLRPConfig, node: Node, unnamed: Collection[int] = ()) -> list[str]:
    """One warning per profile limit this node cannot give, each naming the key path.
    `unnamed`: profiles whose slug is a stand-in (config.collect), named by index only."""
    warnings = []
    for i, p in enumerate(cfg.profiles):
        if p.backend != "local":  # runs on another backend's nodes, which check their own
            continue
        where = f"profiles[{i}]" if i in unnamed else f"profiles[{i}] ({p.slug})"
        if p.cpus is not None and node.cpus is not None and p.cpus > node.cpus:
            warnings.append(
                f"{where}.cpus: {p.cpus:g} is more than this node's {node.cpus} CPU(s); a "
                "server would never get them"
            )
        size = p.memory_bytes
        if size is not None and node.memory is not None and size > node.memory:
            warnings.append(
                f"{where}.memory: {p.memory} ({_gib(size)}) is more than this node's "
                f"{_gib(node.memory)} of memory; a server would never get it"
            )
    return warnings

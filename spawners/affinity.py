"""Which CPUs a local server may run on: its CPU affinity, spread over the node's CPUs.

A 1-CPU server's cgroup quota (spawners.cgroups) limits how much CPU time it gets, but not what
it is told: without more, `os.sched_getaffinity(0)` lists every host CPU, and so do the
libraries that size thread pools from it. Pinning the server (and everything it starts) to
ceil(cpus) CPUs makes the count it sees the count it has. The CPUs are chosen least-used first,
so servers spread over the node instead of all crowding CPU 0.

Why affinity and not the cgroup cpuset controller: affinity needs neither root nor a writable
cgroup tree (developer mode, cgroup v2 hosts without cpuset delegated), it is inherited by
every process the server starts, and the CPU *time* is enforced by the quota anyway. A user may
widen their own affinity again with sched_setaffinity; that buys no more CPU time than the
quota allows. What each tool reports on a pinned 1-CPU server:

* `len(os.sched_getaffinity(0))`: 1. `os.cpu_count()` reports the host's CPUs on Python 3.11
  and 3.12; Python 3.13 reads PYTHON_CPU_COUNT (which the backend sets) and adds
  `os.process_cpu_count()`, which reads the affinity.
* GNU `nproc`: OMP_NUM_THREADS first, then the affinity; both say 1.
* NumPy's BLAS (OpenBLAS, MKL), PyTorch's `torch.get_num_threads()`: OMP_NUM_THREADS and their
  own variables (spawners.backends.local.thread_env).

The placer lives as long as the hub process: a restart rebuilds it from each server's saved
state (:meth:`CpuPlacer.adopt`), and a server's CPUs are forgotten at its teardown.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placement:
    """The CPUs one server is pinned to, and the share of each it is counted for."""

    cpus: tuple[int, ...]
    share: float  # the profile's cpus spread over these CPUs: 1.5 CPUs on 2 -> 0.75 each

    def as_state(self) -> dict[str, Any]:
        return {"cpus": list(self.cpus), "share": self.share}

    @classmethod
    def from_state(cls, saved: Any) -> Placement | None:
        """The placement saved by :meth:`as_state`; None for anything else (older state)."""
        if not isinstance(saved, dict):
            return None
        cpus, share = saved.get("cpus"), saved.get("share")
        if not (isinstance(cpus, list) and cpus and all(isinstance(c, int) for c in cpus)):
            return None
        if not isinstance(share, int | float) or not share > 0:
            return None
        return cls(tuple(cpus), float(share))


def pinned_count(cpus: float | None, node_cpus: int) -> int | None:
    """How many CPUs a server with this CPU limit is pinned to; None: not pinned (no limit, or
    a limit that leaves no CPU of the node out)."""
    if cpus is None:
        return None
    count = max(1, math.ceil(cpus))
    return count if count < node_cpus else None


def thread_count(cpus: float | None, node_cpus: int) -> int | None:
    """The number of threads a server's libraries should start: its CPU limit rounded up, and
    never more than the node has (a 64-CPU profile on a 2-CPU node gets 2). None: no limit."""
    if cpus is None:
        return None
    return max(1, min(math.ceil(cpus), node_cpus))


def node_cpus() -> tuple[int, ...]:
    """The CPUs this process (the hub) may run on: servers are placed among these."""
    return tuple(sorted(os.sched_getaffinity(0)))


@dataclass
class CpuPlacer:
    """Chooses each server's CPUs, least-used first, and remembers them until its teardown.

    Used from the hub's event loop only (no locking).
    """

    node: tuple[int, ...] = field(default_factory=node_cpus)
    _held: dict[str, Placement] = field(default_factory=dict)

    def load(self) -> dict[int, float]:
        """CPU -> the sum of the shares of the servers pinned to it (unpinned ones count 0)."""
        used = dict.fromkeys(self.node, 0.0)
        for placement in self._held.values():
            for cpu in placement.cpus:
                if cpu in used:
                    used[cpu] += placement.share
        return used

    def place(self, server: str, cpus: float | None) -> Placement | None:
        """Pick CPUs for `server` (its owner key, "alice/") and hold them; None: leave the
        server unpinned. A server placed again first gives up its old CPUs.
        """
        count = pinned_count(cpus, len(self.node))
        self._held.pop(server, None)
        if count is None or cpus is None:
            return None
        used = self.load()
        chosen = sorted(sorted(self.node, key=lambda cpu: (used[cpu], cpu))[:count])
        placement = Placement(tuple(chosen), cpus / count)
        self._held[server] = placement
        return placement

    def adopt(self, server: str, placement: Placement) -> None:
        """Count a running server's CPUs again (after a hub restart)."""
        self._held[server] = placement

    def release(self, server: str, placement: Placement) -> None:
        """Forget `server`'s CPUs (its processes are gone), if they are still `placement`
        (not those of a newer start of the same server); unknown servers are fine."""
        if self._held.get(server) is placement:
            del self._held[server]

    def held(self) -> dict[str, Placement]:
        return dict(self._held)


def preexec_pin(cpus: Iterable[int]) -> Callable[[], None]:
    """A ``preexec_fn`` step that pins the child (and all it will start) to `cpus`.

    Safe between fork and exec: one system call, no logging. A CPU that went offline since it
    was chosen makes the call fail; the server then starts unpinned (its thread variables and
    its cgroup quota still hold) rather than not at all.
    """
    chosen = frozenset(cpus)
    setaffinity = os.sched_setaffinity

    def _pin() -> None:
        try:
            setaffinity(0, chosen)
        except OSError:
            pass

    return _pin


# One placer per Platform (per hub process and configuration). Keyed by id, with a weak
# reference to check the id still names the same Platform (a dataclass with eq is unhashable,
# so it cannot be a WeakKeyDictionary key).
_placers: dict[int, tuple[weakref.ref[Any], CpuPlacer]] = {}


def placer_for(owner: object) -> CpuPlacer:
    """The CpuPlacer shared by every server of `owner` (a spawners.platform.Platform)."""
    key = id(owner)
    entry = _placers.get(key)
    if entry is None or entry[0]() is not owner:
        entry = (weakref.ref(owner), CpuPlacer())
        _placers[key] = entry
    return entry[1]

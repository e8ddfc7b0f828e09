"""CPU and memory limits for local single-user servers, through Linux cgroups.

The local placement backend starts each user's server as a child of the hub (which runs as root)
and drops to the user's account in a ``preexec_fn``. Without a cgroup, one notebook that loads a
dataset too large for the machine takes every other user's server down with it (the kernel's OOM
killer picks whoever is biggest, often the hub). With one, the kernel enforces the profile's CPU
and memory limits on the server and everything it starts, and the OOM killer stays inside it.

Both cgroup layouts in the field are supported:

* **v1** (and the "hybrid" layout of older distributions): one hierarchy per controller, so a
  server gets one group per controller, ``<root>/memory/mlrp/<name>`` and
  ``<root>/cpu/mlrp/<name>``, limited by ``memory.limit_in_bytes`` and
  ``cpu.cfs_period_us``/``cpu.cfs_quota_us``.
* **v2** (unified): one group, ``<root>/mlrp/<name>``, limited by ``memory.max`` and ``cpu.max``.
  Controllers must first be enabled in each ancestor's ``cgroup.subtree_control``.

Where neither is writable (a hub not running as root, a read-only ``/sys/fs/cgroup`` in a
container), :func:`probe` says so and limits are advisory; the spawner shows that to admins
rather than pretending.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/sys/fs/cgroup")
PARENT = "mlrp"
CPU_PERIOD_US = 100_000
# The kernel refuses CFS quotas under 1 ms; 0.01 CPU at a 100 ms period is exactly that.
MIN_CPUS = 0.01
# Controllers that limit a server: memory, CPU time, number of tasks (processes and threads).
CONTROLLERS = ("memory", "cpu", "pids")
# v1 only: the freezer stops every task of a group at once, so a kill round cannot be outrun by
# fork(). (v2 has cgroup.kill, which needs no controller.)
FREEZER = "freezer"

_DEVICE_RE = re.compile(r"[cb] \d{1,4}:\d{1,7} [rwm]{1,3}")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MEMORY_RE = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# A v1 hierarchy is usable for a controller when this file exists in its root (pids.max and
# freezer.state exist only below the root).
_V1_LIMIT_FILE = {
    "memory": "memory.limit_in_bytes",
    "cpu": "cpu.cfs_quota_us",
    "pids": "cgroup.procs",
    FREEZER: "cgroup.procs",
}
# (major, minor) of the first kernel with cgroup.kill.
_CGROUP_KILL_KERNEL = (5, 14)


class CgroupError(OSError):
    """A cgroup could not be created or limited; the message names the file and the reason."""


def memory_size(text: str) -> int:
    """Parse a memory size such as ``4G``, ``512M``, ``4GiB``, ``1.5G`` or ``1024`` into bytes,
    without judging the value (it may be zero or negative); ValueError if it is not a size.

    Units are binary (``1G`` is 2**30 bytes), as in JupyterHub's ``mem_limit``, because that is
    what admins mean when they size a server against a machine's RAM. The YAML schema and
    :func:`parse_memory` word their own messages around this one parser.
    """
    match = _MEMORY_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"memory must be a number with an optional unit K, M, G or T (e.g. 4G); got {text!r}"
        )
    number, unit = match.group(1), (match.group(2) or "").lower()
    if not unit and "." in number:
        raise ValueError(f"memory without a unit is a whole number of bytes; got {text!r}")
    return int(Decimal(number) * _UNITS[unit])


def parse_memory(text: str) -> int:
    """:func:`memory_size`, refusing zero and negative sizes."""
    value = memory_size(text)
    if value <= 0:
        raise ValueError(f"memory must be greater than zero; got {text!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one server may use; ``None`` means unlimited for that resource."""

    cpus: float | None
    memory_bytes: int | None
    # Tasks (processes and threads) the server may have at once: a fork bomb stops there.
    max_processes: int | None = None
    # Device nodes the server may not open, as v1 devices.deny lines ("c 195:3 rwm"): the GPUs
    # leased to others. Only cgroup v1 has a devices controller; v2 fences devices with eBPF,
    # which we do not do (yet): there CUDA_VISIBLE_DEVICES is the only fence.
    denied_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse values the kernel would reject, here rather than halfway through create()."""
        for line in self.denied_devices:
            if _DEVICE_RE.fullmatch(line) is None:
                raise ValueError(f"denied_devices entries look like 'c 195:3 rwm'; got {line!r}")
        if self.cpus is not None and not (math.isfinite(self.cpus) and self.cpus >= MIN_CPUS):
            raise ValueError(f"cpus must be at least {MIN_CPUS}; got {self.cpus!r}")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes must be greater than zero; got {self.memory_bytes!r}")
        if self.max_processes is not None and self.max_processes < 1:
            raise ValueError(f"max_processes must be at least 1; got {self.max_processes!r}")


@dataclass(frozen=True)
class CgroupSupport:
    """What this node does for one guarantee, for logs, ``mlrp doctor`` and the spawn form.

    `kind` per probe: probe() (limits): "v1", "v2" or "none". probe_kill() (a stopped
    server's leftovers): "v2-kill" (cgroup.kill, one atomic write), "v1-freezer" (freeze, kill,
    thaw: nothing can fork meanwhile), "signals" (kill what is listed, round after round) or
    "none" (no server cgroups: a detached process outlives its server). probe_fence() (device
    nodes of GPUs leased to others): "v1-devices" (enforced), "v2" (no devices controller
    exists), "no-devices" (v1 without a writable one) or "no-cgroups".
    """

    enforced: bool
    kind: str
    detail: str


# The same record, named for what each probe answers.
KillSupport = CgroupSupport
FenceSupport = CgroupSupport


@dataclass(frozen=True)
class _Layout:
    """What the hierarchy under a root offers: its kind and the controllers we can use."""

    kind: str
    controllers: tuple[str, ...]
    writable: bool
    reason: str


def _read(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _write(path: Path, value: str) -> None:
    """Write one value to a cgroup interface file, as ``echo value > path`` would.

    One ``write()`` call, because the kernel parses each write on its own: a value split over
    two writes is two (wrong) values.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode("ascii"))
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"could not write {value!r} to {path}: {e.strerror}") from e


def _mkdir(path: Path) -> None:
    """Create a cgroup directory; an existing one (a hub restart) is reused."""
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as e:
        raise CgroupError(f"could not create cgroup {path}: {e.strerror}") from e


def _detect(root: Path) -> _Layout:
    """Find which cgroup layout lives under ``root``, using only stat() and access()."""
    controllers_file = root / "cgroup.controllers"
    if controllers_file.is_file():
        try:
            offered = set(_read(controllers_file).split())
        except OSError as e:
            return _Layout("v2", (), False, f"cannot read {controllers_file}: {e.strerror}")
        usable = tuple(c for c in CONTROLLERS if c in offered)
        writable = os.access(root, os.W_OK) and os.access(root / "cgroup.subtree_control", os.W_OK)
        return _Layout("v2", usable, writable, str(root))
    # v1 or hybrid: the controllers have their own mounts; a cgroup2 mount at
    # <root>/unified (hybrid) holds no controllers we use and is ignored.
    usable = tuple(c for c in (*CONTROLLERS, FREEZER) if (root / c / _V1_LIMIT_FILE[c]).is_file())
    unwritable = [str(root / c) for c in usable if not os.access(root / c, os.W_OK)]
    return _Layout("v1", usable, not unwritable, ", ".join(unwritable) or str(root))


def _limiting(layout: _Layout) -> tuple[str, ...]:
    """The controllers of `layout` that enforce memory or CPU limits."""
    return tuple(c for c in layout.controllers if c in ("memory", "cpu"))


def probe(root: Path = DEFAULT_ROOT) -> CgroupSupport:
    """Say whether :meth:`ServerCgroup.create` would enforce limits under ``root``.

    Cheap and uncached (stat and access only), so ``mlrp doctor`` and the spawn form always show
    the current truth, e.g. after an admin remounts /sys/fs/cgroup.
    """
    layout = _detect(root)
    if not _limiting(layout):
        return CgroupSupport(
            False,
            "none",
            f"no cgroup memory or cpu controller under {root}: limits are advisory",
        )
    if not layout.writable:
        return CgroupSupport(
            False,
            "none",
            f"cgroups not writable ({layout.kind} at {layout.reason}, uid {os.geteuid()}): "
            "limits are advisory",
        )
    detail = f"cgroup {layout.kind} ({', '.join(layout.controllers)})"
    if _devices_usable(root, layout.kind):
        detail += "; GPU device nodes can be fenced (devices)"
    missing = [c for c in ("memory", "cpu") if c not in layout.controllers]
    if missing:
        detail += f"; no {' or '.join(missing)} controller: those limits are advisory"
    return CgroupSupport(True, layout.kind, detail)


def _makes_groups(layout: _Layout) -> bool:
    """Whether servers get a cgroup under this layout: it is writable, and it has a controller
    to limit or freeze with (v1), or cgroup.kill, which needs none (v2)."""
    return layout.writable and (bool(layout.controllers) or layout.kind == "v2")


def _kernel_has_cgroup_kill(release: str | None = None) -> bool:
    numbers = re.findall(r"\d+", release if release is not None else os.uname().release)
    return tuple(int(n) for n in numbers[:2]) >= _CGROUP_KILL_KERNEL


def probe_kill(root: Path = DEFAULT_ROOT) -> KillSupport:
    """Say how :meth:`ServerCgroup.kill` would end a server's processes under ``root``."""
    layout = _detect(root)
    if not _makes_groups(layout):
        return KillSupport(
            False,
            "none",
            f"no writable cgroups under {root} (uid {os.geteuid()}): processes a server "
            "detaches survive its stop",
        )
    if layout.kind == "v2" and _kernel_has_cgroup_kill():
        return KillSupport(True, "v2-kill", f"cgroup.kill (cgroup v2 at {root})")
    if FREEZER in layout.controllers:
        return KillSupport(True, "v1-freezer", f"cgroup v1 freezer at {root / FREEZER}")
    return KillSupport(
        True,
        "signals",
        f"no freezer or cgroup.kill under {root}: leftovers are killed in rounds; a process "
        "that forks faster than that can hold a stop up until the kill timeout",
    )


def _devices_usable(root: Path, kind: str) -> bool:
    deny = root / "devices" / "devices.deny"
    return kind == "v1" and deny.is_file() and os.access(root / "devices", os.W_OK)


def probe_fence(root: Path = DEFAULT_ROOT) -> FenceSupport:
    """Say whether a server's cgroup would fence device nodes under ``root``.

    Follows the same path as :meth:`ServerCgroup.create`: no usable, writable memory or cpu
    controller means no cgroup at all, hence no fence either.
    """
    layout = _detect(root)
    if not _makes_groups(layout):
        return FenceSupport(False, "no-cgroups", probe(root).detail)
    if layout.kind == "v2":
        # v2 has no devices controller: device access is an eBPF program attached to the group.
        return FenceSupport(False, "v2", f"cgroup v2 only (at {root}): fencing devices needs eBPF")
    if not _devices_usable(root, layout.kind):
        return FenceSupport(
            False,
            "no-devices",
            f"no writable cgroup v1 devices controller at {root / 'devices'} (uid {os.geteuid()})",
        )
    return FenceSupport(True, "v1-devices", f"cgroup v1 devices controller at {root / 'devices'}")


def _signal_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


def _check_name(name: str) -> None:
    """Refuse names that are not one safe path component.

    The name comes from a user or server name and becomes a directory under /sys/fs/cgroup,
    written by root: "../x" or "a/b" would create or limit some other cgroup.
    """
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise ValueError(
            "cgroup name must be 1-64 characters of a-z, 0-9, '_', '.' or '-', "
            f"starting with a letter or digit; got {name!r}"
        )


def _enable_controllers(group: Path, controllers: tuple[str, ...]) -> None:
    """Enable controllers for the children of a v2 group, if they are not already.

    Writes only the missing ones, in one write, so a host where systemd already enabled them is
    not touched at all.
    """
    control = group / "cgroup.subtree_control"
    try:
        enabled = set(_read(control).replace("+", " ").split())
    except OSError as e:
        raise CgroupError(f"could not read {control}: {e.strerror}") from e
    missing = [c for c in controllers if c not in enabled]
    if missing:
        _write(control, " ".join(f"+{c}" for c in missing))


def _warn_unenforced(limits: Limits, controllers: tuple[str, ...]) -> None:
    if limits.memory_bytes is not None and "memory" not in controllers:
        log.warning("no cgroup memory controller: memory limit %d is advisory", limits.memory_bytes)
    if limits.cpus is not None and "cpu" not in controllers:
        log.warning("no cgroup cpu controller: cpu limit %s is advisory", limits.cpus)
    if limits.max_processes is not None and "pids" not in controllers:
        log.warning("no cgroup pids controller: process limit %d is advisory", limits.max_processes)


def _quota_us(cpus: float) -> int:
    return round(cpus * CPU_PERIOD_US)


def _limit_v1(controller: str, group: Path, limits: Limits) -> None:
    """Write one v1 controller's limit; unlimited is -1, so a re-create can lift a limit."""
    if controller == "memory":
        value = -1 if limits.memory_bytes is None else limits.memory_bytes
        _write(group / "memory.limit_in_bytes", str(value))
    elif controller == "cpu":
        # Period first: the quota is checked against the period in force.
        _write(group / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        quota = -1 if limits.cpus is None else _quota_us(limits.cpus)
        _write(group / "cpu.cfs_quota_us", str(quota))
    elif controller == "pids":
        _write(group / "pids.max", _pids_max(limits))
    elif controller == "devices":
        # A new group allows everything, like its parent; each line adds one exception.
        for line in limits.denied_devices:
            _write(group / "devices.deny", line)


def _pids_max(limits: Limits) -> str:
    return "max" if limits.max_processes is None else str(limits.max_processes)


def _limit_v2(controllers: tuple[str, ...], group: Path, limits: Limits) -> None:
    """Write v2 limits; "max" means unlimited, so a re-create can lift a limit."""
    if "memory" in controllers:
        memory = "max" if limits.memory_bytes is None else str(limits.memory_bytes)
        _write(group / "memory.max", memory)
    if "cpu" in controllers:
        quota = "max" if limits.cpus is None else str(_quota_us(limits.cpus))
        _write(group / "cpu.max", f"{quota} {CPU_PERIOD_US}")
    if "pids" in controllers:
        _write(group / "pids.max", _pids_max(limits))


class ServerCgroup:
    """One cgroup (per controller on v1) for one user server.

    Lives under ``<root>/<controller>/mlrp/<name>`` (v1) or ``<root>/mlrp/<name>`` (v2). The
    spawner creates it before starting the server, has the child join it in ``preexec_fn`` before
    it drops to the user's account (moving a process into a cgroup needs root, and joining before
    ``exec`` means not one allocation of the server escapes the limit), and removes it once the
    server's processes are gone.
    """

    def __init__(self, name: str, kind: str, groups: tuple[Path, ...]) -> None:
        self.name = name
        self.kind = kind
        self._groups = groups
        # Encoded once here, so join() in a forked child does no path work.
        self._procs_files = tuple(os.fsencode(g / "cgroup.procs") for g in groups)

    def __repr__(self) -> str:
        return f"ServerCgroup({self.name!r}, kind={self.kind!r})"

    @classmethod
    def create(cls, name: str, limits: Limits, root: Path = DEFAULT_ROOT) -> ServerCgroup | None:
        """Create (or re-limit, after a hub restart) the server's cgroup.

        Returns None where cgroups are not enforced (see :func:`probe`): the caller starts the
        server unconfined and says so. Raises ValueError for an unsafe name and CgroupError
        when the kernel refuses a directory or a limit.
        """
        _check_name(name)
        layout = _detect(root)
        if not _makes_groups(layout):
            return None
        _warn_unenforced(limits, layout.controllers)
        groups: tuple[Path, ...]
        if layout.kind == "v2" and limits.denied_devices:
            log.warning("cgroup v2 has no devices controller: GPU fencing is advisory for %s", name)
        if layout.kind == "v2":
            groups = (cls._create_v2(name, limits, root, layout.controllers),)
        else:
            groups = cls._create_v1(name, limits, root, layout.controllers)
        log.info("cgroup %s (%s) limits %s at %s", name, layout.kind, limits, groups)
        return cls(name, layout.kind, groups)

    @staticmethod
    def _create_v1(
        name: str, limits: Limits, root: Path, controllers: tuple[str, ...]
    ) -> tuple[Path, ...]:
        groups = []
        fence = bool(limits.denied_devices) and _devices_usable(root, "v1")
        for controller in (*controllers, "devices") if fence else controllers:
            parent = root / controller / PARENT
            _mkdir(parent)
            group = parent / name
            _mkdir(group)
            _limit_v1(controller, group, limits)
            groups.append(group)
        return tuple(groups)

    @staticmethod
    def _create_v2(name: str, limits: Limits, root: Path, controllers: tuple[str, ...]) -> Path:
        # Each level must hand the controllers down before the level below can use them.
        if controllers:
            _enable_controllers(root, controllers)
        parent = root / PARENT
        _mkdir(parent)
        if controllers:
            _enable_controllers(parent, controllers)
        group = parent / name
        _mkdir(group)
        _limit_v2(controllers, group, limits)
        return group

    @property
    def paths(self) -> list[Path]:
        """The group directories: one per controller on v1, one on v2."""
        return list(self._groups)

    def join(self, pid: int) -> None:
        """Move process ``pid`` (and its threads) into every group.

        Safe in a ``preexec_fn`` between fork and exec: only os.open/os.write/os.close on
        pre-encoded paths, no logging, no locks. An error raises, which makes Popen fail; a
        server that cannot be confined is not started silently unconfined.
        """
        data = b"%d" % pid
        for path in self._procs_files:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def preexec_join(self) -> Callable[[], None]:
        """A ``preexec_fn`` that moves the child into the group; call it before setuid()."""
        join = self.join
        getpid = os.getpid

        def _join_self() -> None:
            join(getpid())

        return _join_self

    @classmethod
    def find(cls, name: str, root: Path = DEFAULT_ROOT) -> ServerCgroup | None:
        """The server cgroup called ``name`` as it exists now, or None if there is none (a hub
        restart lost the object; the groups and their processes are still there)."""
        _check_name(name)
        layout = _detect(root)
        if layout.kind == "v2":
            groups = [root / PARENT / name]
        else:
            groups = [root / c / PARENT / name for c in (*layout.controllers, "devices")]
        found = tuple(g for g in groups if g.is_dir())
        return cls(name, layout.kind, found) if found else None

    def pids(self) -> list[int]:
        """Processes now in the group (any of them, on v1), sorted; [] once it is removed.

        A process that has exited is no longer listed, even while it is a zombie."""
        found: set[int] = set()
        for group in self._groups:
            try:
                found.update(int(line) for line in _read(group / "cgroup.procs").split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def _group_of(self, controller: str) -> Path | None:
        """This server's v1 group of `controller` (<root>/<controller>/mlrp/<name>)."""
        for group in self._groups:
            if group.parent.parent.name == controller:
                return group
        return None

    def kill(self) -> list[int]:
        """Send SIGKILL to every process of the server, once; return the pids seen.

        However a process detached (a new session, nohup, a double fork), it stays in the
        group, so this ends all of them. v2: one write to cgroup.kill, which the kernel applies
        to the whole group atomically. v1: freeze the group, kill what it lists, thaw (a frozen
        process cannot fork, so none is missed; the kills take effect at the thaw). Without
        either, kill what is listed: the caller repeats until the group is empty. Never waits:
        callers poll :meth:`pids` in their own loop.
        """
        pids = self.pids()
        if not pids:
            return []
        if self.kind == "v2" and self._groups:
            kill_file = self._groups[0] / "cgroup.kill"
            if kill_file.is_file():
                _write(kill_file, "1")
                return pids
        freezer = self._group_of(FREEZER)
        if freezer is not None:
            _write(freezer / "freezer.state", "FROZEN")
            try:
                pids = self.pids()
                _signal_all(pids)
            finally:
                _write(freezer / "freezer.state", "THAWED")
            return pids
        _signal_all(pids)
        return pids

    def remove(self) -> None:
        """Remove the groups once the server's processes are gone.

        Missing groups are fine (already removed, or the machine rebooted). A group that still
        holds a process (EBUSY) is logged and left, so stopping a server never fails on it; the
        next create() with the same name reuses it.
        """
        for group in self._groups:
            try:
                os.rmdir(group)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise CgroupError(f"could not remove cgroup {group}: {e.strerror}") from e
                log.warning("cgroup %s still has processes %s; leaving it", group, self.pids())

"""A fake cgroup tree for unit tests of spawners.cgroups and of what `mlrp doctor` says about it.

The boundary: the real cgroupfs is a kernel filesystem; creating groups in it needs root and a
writable hierarchy, and it has one layout per machine. Here a directory under tmp_path plays
its part, and :class:`FakeKernelOs` (installed as ``spawners.cgroups.os``) adds what the kernel
does on mkdir/rmdir. Real enforcement is tested in test_cgroups.py on this machine's cgroups.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

V1_FILES = {
    "memory": ["cgroup.procs", "memory.limit_in_bytes", "memory.usage_in_bytes"],
    "cpu": ["cgroup.procs", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares"],
    "unified": ["cgroup.procs", "cgroup.controllers", "cgroup.subtree_control"],
}
V1_DEVICES_FILES = ["cgroup.procs", "devices.allow", "devices.deny", "devices.list"]


class FakeKernelOs:
    """The os module as cgroups.py sees it, with mkdir/rmdir acting like cgroupfs.

    On cgroupfs, mkdir makes a group whose interface files appear at once (on v2, only those of
    the controllers its parent enables in cgroup.subtree_control) and rmdir removes a group
    with its files but refuses (EBUSY) while it holds processes or child groups.
    """

    def __init__(
        self,
        root: Path,
        writable: bool = True,
        read_only: Sequence[Path] = (),
        *,
        exited_leave: bool = False,
    ) -> None:
        """`writable=False`: nothing is writable (a hub without root); `read_only`: these
        directories are not (e.g. a devices hierarchy mounted read-only). `exited_leave`: a
        process listed in cgroup.procs that has ended no longer counts, as on the kernel (for
        tests that put real processes in the fake groups; others list made-up pids).

        `writes` records every (file, value) written through this module, in order: the kernel
        keeps state the files here cannot show (each write to devices.deny adds a rule)."""
        self.root = root
        self.writable = writable
        self.read_only = {Path(p) for p in read_only}
        self.exited_leave = exited_leave
        self.writes: list[tuple[Path, str]] = []
        self._open: dict[int, Path] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        fd = os.open(path, flags, mode)
        self._open[fd] = Path(os.fsdecode(path))  # join() opens pre-encoded (bytes) paths
        return fd

    def write(self, fd: int, data: bytes) -> int:
        path = self._open.get(fd)
        if path is not None:
            self.writes.append((path, bytes(data).decode(errors="replace")))
            if path.name == "cgroup.kill" and bytes(data).strip() == b"1":
                for pid in (path.parent / "cgroup.procs").read_text().split():
                    try:
                        self.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                return len(data)
        return os.write(fd, data)

    def kill(self, pid: int, sig: int) -> None:
        """os.kill; a SIGKILLed process leaves every group at once, as it does on the kernel
        when it exits (which a SIGKILL makes it do). The files here also list processes that
        have exited since they joined (the kernel would not): those leave when signalled."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self._leave(pid)  # gone already: out of the lists, then the usual error
            raise
        if sig == signal.SIGKILL:
            self._leave(pid)

    def _leave(self, pid: int) -> None:
        for procs in self.root.rglob("cgroup.procs"):
            listed = procs.read_text().split()
            if str(pid) in listed:
                procs.write_text("\n".join(p for p in listed if p != str(pid)))

    def close(self, fd: int) -> None:
        self._open.pop(fd, None)
        os.close(fd)

    def _busy(self, procs: str) -> bool:
        if not self.exited_leave:
            return bool(procs.strip())
        return any(_running(int(pid)) for pid in procs.split())

    def access(self, path: Any, mode: int) -> bool:
        if mode & os.W_OK and (not self.writable or Path(path) in self.read_only):
            return False
        return os.access(path, mode)

    def mkdir(self, path: Any, mode: int = 0o777) -> None:
        path = Path(path)
        os.mkdir(path, mode)
        parent = path.parent
        if (parent / "cgroup.subtree_control").exists():
            enabled = (parent / "cgroup.subtree_control").read_text().replace("+", " ").split()
            files = {"cgroup.procs": "", "cgroup.subtree_control": ""}
            files["cgroup.controllers"] = " ".join(enabled)
            if "memory" in enabled:
                files["memory.max"] = "max\n"
            if "cpu" in enabled:
                files["cpu.max"] = "max 100000\n"
            if "pids" in enabled:
                files["pids.max"] = "max\n"
            files["cgroup.kill"] = ""  # no controller needed (Linux >= 5.14)
        else:  # v1: a group has the same interface files as its parent
            files = {p.name: "" for p in parent.iterdir() if p.is_file()}
        for file_name, text in files.items():
            (path / file_name).write_text(text)

    def rmdir(self, path: Any) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        busy = self._busy((path / "cgroup.procs").read_text()) or any(
            p.is_dir() for p in path.iterdir()
        )
        if busy:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        for p in path.iterdir():
            p.unlink()
        os.rmdir(path)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has left its cgroups)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def make_v2_root(tmp_path: Path, controllers: str, subtree: str = "") -> Path:
    """A pure cgroup v2 root offering `controllers` (space-separated), `subtree` enabled."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(subtree)
    (root / "cgroup.procs").write_text("1\n")
    return root


def make_v1_root(tmp_path: Path, *, devices: bool = False) -> Path:
    """A hybrid v1 root: memory and cpu hierarchies, a cgroup2 mount with no controllers, and
    with `devices` the devices hierarchy that fences GPUs."""
    root = tmp_path / "cgroup"
    files = dict(V1_FILES, **({"devices": V1_DEVICES_FILES} if devices else {}))
    for controller, names in files.items():
        (root / controller).mkdir(parents=True)
        for name in names:
            (root / controller / name).write_text("")
    return root

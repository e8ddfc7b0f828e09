"""What a server shares with other people's servers while it runs: its temp files and umask.

On a shared node, ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are one directory for everyone:
a file written there is readable by others under the usual umask, and a person can pre-create a
path another person's tool will write to later (ipykernel's debugger writes cells to
``/tmp/ipykernel_<pid>``). ``/dev/shm`` is worse: it is as large as RAM, and a file left there
outlives the server and every memory limit.

So each server runs in its own *mount namespace* (made as root in the child, before it drops to
the person's account), in which

* ``/tmp`` and ``/var/tmp`` are bind mounts of two fresh directories of the server's own,
  ``<tmp_root>/<tag>/tmp`` and ``.../var-tmp``, owned by the person, mode 0700, below a
  directory only root may enter. The hub removes them when the server has stopped.
* ``/dev/shm`` is a tmpfs of its own, half the size of the profile's memory limit
  (:func:`shm_size`). Its pages are charged to the memory cgroup of the process that writes them
  (the server's), so shared memory counts against the limit; the tmpfs goes away with the
  namespace, i.e. with the server's last process.

Mounts made in the namespace do not reach the host (``/`` is made a *slave* first: the host's
new mounts still reach the server). Where no namespace can be made (a hub that is not root),
the server gets ``TMPDIR``, ``TMP`` and ``TEMP`` pointing at its private directory instead:
well-behaved tools follow them, and the host's ``/tmp`` stays shared (``mlrp doctor`` says so).

Every step in the child runs between fork and exec (a ``preexec_fn``): only pre-built ctypes
calls on pre-encoded paths, no allocation-heavy work, no logging.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNS = 0x00020000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000

_SOURCE_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_DIRS = {"tmp": "/tmp", "var-tmp": "/var/tmp"}  # subdirectory → where it is mounted
DEFAULT_UMASK = 0o077

_libc = ctypes.CDLL(None, use_errno=True)
_unshare = _libc.unshare
_unshare.argtypes = [ctypes.c_int]
_mount = _libc.mount
_mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]


class IsolationError(OSError):
    """The server's private temp space could not be set up; the message says which step."""


def _check(result: int, what: bytes) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise IsolationError(err, f"{what.decode()}: {os.strerror(err)}")


def shm_size(memory_bytes: int | None) -> int | None:
    """Size of a server's /dev/shm: half its memory limit, as the kernel gives a node's
    /dev/shm half its RAM. Files there count against the limit, so a full /dev/shm is a clear
    "No space left on device" with memory to spare, never an out-of-memory kill of the server.
    None (no limit): the kernel's default, half of RAM."""
    return None if memory_bytes is None else max(memory_bytes // 2, 1 << 20)


def parse_umask(text: str) -> int:
    """``"077"`` or ``"0077"`` → 0o077; ValueError naming the accepted form otherwise."""
    value = text.strip()
    if not (1 <= len(value) <= 4) or any(c not in "01234567" for c in value):
        raise ValueError(f"umask must be 3 or 4 octal digits such as 077 or 0027; got {text!r}")
    return int(value, 8)


@dataclass(frozen=True)
class PrivateTmp:
    """One server's private temp space: ``<root>/<tag>`` with one subdirectory per mount."""

    root: Path  # only root may enter (0700): nobody reaches a server's files from outside
    tag: str  # accounts.server_tag: a path-safe name unique to the server
    uid: int
    gid: int
    shm_bytes: int | None  # size of the private /dev/shm (shm_size); None = RAM/2

    @property
    def base(self) -> Path:
        return self.root / self.tag

    def dir(self, name: str) -> Path:
        return self.base / name

    def prepare(self) -> None:
        """Create fresh, empty directories for this start (as root, in the hub).

        Anything an earlier run of the same server left is removed first, so a restart never
        inherits files, and a directory the person swapped for a symlink cannot redirect a bind
        mount (the person cannot write to ``base``).
        """
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.remove()
        os.mkdir(self.base, 0o700)
        for name in TMP_DIRS:
            path = self.dir(name)
            os.mkdir(path, 0o700)
            os.chown(path, self.uid, self.gid)

    def remove(self) -> None:
        """Delete the server's temp files (the server has stopped). Never follows a symlink."""
        try:
            info = os.lstat(self.base)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(self.base)
        else:
            os.unlink(self.base)

    def env(self) -> dict[str, str]:
        """Where temp files go when no namespace can be made (see :func:`private_tmp_works`)."""
        path = str(self.dir("tmp"))
        return {"TMPDIR": path, "TMP": path, "TEMP": path}

    def preexec_mounts(self) -> Callable[[], None]:
        """A ``preexec_fn`` step, run as root before dropping privileges: a new mount
        namespace with this server's ``/tmp``, ``/var/tmp`` and ``/dev/shm``."""
        binds = [
            (os.fsencode(self.dir(name)), target.encode()) for name, target in TMP_DIRS.items()
        ]
        shm_options = f"mode=0700,uid={self.uid},gid={self.gid}"
        if self.shm_bytes is not None:
            shm_options += f",size={self.shm_bytes}"
        shm = shm_options.encode()
        unshare, mount, check = _unshare, _mount, _check

        def _mounts() -> None:
            check(unshare(CLONE_NEWNS), b"unshare(CLONE_NEWNS)")
            check(mount(None, b"/", None, MS_REC | MS_SLAVE, None), b"make / a slave mount")
            # Every source is opened (in the new namespace) before anything is mounted, as a
            # later mount could hide one (a tmp_root under /tmp), never through a final symlink.
            fds = [os.open(source, _SOURCE_FLAGS) for source, _ in binds]
            for fd, (_, target) in zip(fds, binds, strict=True):
                check(mount(b"/proc/self/fd/%d" % fd, target, None, MS_BIND, None), target)
                os.close(fd)
            check(
                mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, shm),
                b"mount /dev/shm",
            )

        return _mounts


def preexec_umask(mask: int) -> Callable[[], None]:
    def _umask() -> None:
        os.umask(mask)

    return _umask


def private_tmp_works() -> tuple[bool, str]:
    """Whether this process can give servers a mount namespace (needs CAP_SYS_ADMIN), tried
    for real in a short-lived child; (ok, a sentence for logs and ``mlrp doctor``)."""
    if os.geteuid() != 0:
        return False, "the hub is not root: servers get TMPDIR instead of a private /tmp"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits at once
        code = 0
        try:
            _check(_unshare(CLONE_NEWNS), b"unshare")
            _check(_mount(None, b"/", None, MS_REC | MS_SLAVE, None), b"slave")
            _check(_mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1M"), b"")
        except OSError as e:
            code = e.errno or errno.EPERM
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return True, "each server gets a private /tmp, /var/tmp and /dev/shm (mount namespace)"
    return False, (
        f"mount namespaces are refused here ({os.strerror(code)}): servers get TMPDIR instead "
        "of a private /tmp, and /dev/shm stays shared"
    )

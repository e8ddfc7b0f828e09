"""Who answers on a server's port: checked before the hub routes there, held until it stops.

A local server listens on a TCP port of 127.0.0.1, which any account on the node may bind once
it is free. Two take-overs follow from that, both on the hub's origin with the person's cookies:

* *Before the start*: another account binds the port the hub picked, and the server listens
  elsewhere or fails. So before routing, the hub checks that the socket listening on the port
  belongs to the server's own process (and account).
* *After a crash*: the server dies, the port is free, another account binds it within
  milliseconds and answers the requests the proxy still sends there until the route goes. So the
  hub keeps a duplicate of the server's listening socket (``pidfd_getfd``, Linux >= 5.6). While
  the hub holds it, the port stays bound after the server's death: nobody else can bind it, and
  a request that arrives then waits unanswered in the backlog and is reset when the hub, after
  removing the route, lets go. The hub never accepts on it.

The hub learns of the death at once through a *pidfd* (readable when the process exits), so
the route goes within milliseconds instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has
TCP_LISTEN = "0A"

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class CustodyError(Exception):
    """The port is not (only) the server's; the message is for the admin log."""


def listening_socket(port: int, proc: Path = Path("/proc")) -> tuple[int, int] | None:
    """(inode, uid) of the socket listening on 127.0.0.1:`port`, from /proc/net/tcp."""
    want = f"0100007F:{port:04X}"
    try:
        lines = (proc / "net" / "tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 9 and fields[1] == want and fields[3] == TCP_LISTEN:
            return int(fields[9]), int(fields[7])
    return None


def socket_fd(pid: int, inode: int, proc: Path = Path("/proc")) -> int | None:
    """The number of `pid`'s file descriptor that is the socket `inode`, if it has one."""
    wanted = f"socket:[{inode}]"
    fd_dir = proc / str(pid) / "fd"
    try:
        entries = os.listdir(fd_dir)
    except OSError:
        return None
    for entry in entries:
        try:
            if os.readlink(fd_dir / entry) == wanted:
                return int(entry)
        except OSError:
            continue
    return None


def take_listening_socket(pid: int, port: int, uid: int | None) -> int:
    """Check that `pid` (running as `uid`, if given) owns the socket listening on
    127.0.0.1:`port`, and return the hub's own duplicate of it (a file descriptor).

    Raises CustodyError when the listener is another process or account, and OSError when the
    kernel refuses the duplicate (no pidfd_getfd, or no ptrace rights over the server).
    """
    found = listening_socket(port)
    if found is None:
        raise CustodyError(f"nothing listens on 127.0.0.1:{port}")
    inode, owner = found
    if uid is not None and owner != uid:
        raise CustodyError(
            f"127.0.0.1:{port} is held by uid {owner}, not by the server's account (uid {uid})"
        )
    fd = socket_fd(pid, inode)
    if fd is None:
        raise CustodyError(f"the socket on 127.0.0.1:{port} is not the server's (pid {pid})")
    pidfd = os.pidfd_open(pid)
    try:
        mine = _syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if mine < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"pidfd_getfd of pid {pid}: {os.strerror(err)}")
        return int(mine)
    finally:
        os.close(pidfd)


class ExitWatcher:
    """Calls `on_exit` once, on the event loop, as soon as process `pid` exits."""

    def __init__(self, pid: int, on_exit: Callable[[], None]) -> None:
        self.pid = pid
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(pid)  # ProcessLookupError if it is gone already
        self._loop.add_reader(self._pidfd, self._fire)

    def _fire(self) -> None:
        self.close()
        self._on_exit()

    def close(self) -> None:
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

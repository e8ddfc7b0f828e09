"""Run one Slurm command: an argument list, with a timeout, optionally as a user's own account.

:func:`run` never raises because the command failed, timed out or does not exist: every way a
command can go wrong is a field of :class:`Outcome`, because the caller's decision differs
(a timed-out ``squeue`` means "unknown", a refused ``sbatch`` means "tell the user").
It raises only for the caller's own mistakes (an empty argv, a user name that is not one).

There is never a shell: `argv` goes to ``execve`` as it is, so no value in it is ever parsed for
``;``, ``$()`` or spaces. Running as a user goes through ``runuser -u NAME --`` (the hub is root;
there is no sudo on these machines), so Slurm sees the user's own uid and applies that user's
partitions, limits and accounting.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# POSIX-portable user names (useradd's default rule, plus the trailing '$' of machine accounts
# left out). The name is one argv element after "-u", so this is about refusing nonsense early
# with a clear error, not about quoting.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")

# After the group is killed, how long to wait for the pipes to close. A grandchild that left the
# process group could keep them open forever; we stop reading rather than hang the hub.
_DRAIN_SECONDS = 2.0

# runuser's exit statuses when it cannot run the command it was asked to run (not found, not
# executable). A PATH entry the user may not enter (pyenv under /root) gives exit 1 and "runuser:
# failed to execute … Permission denied" instead, so that prefix counts too.
_RUNUSER_CANNOT_EXEC = (126, 127)


@dataclass(frozen=True)
class Outcome:
    """What happened when a command ran.

    `ok` is True only when it ran to the end and exited 0. `rc` is None when there is no exit
    status to report (not started, or killed on timeout). `missing` means the program (or, under
    ``runuser``, the program it was asked to run) was not found: the Slurm client is not
    installed or not on PATH, an admin problem rather than a scheduler one.
    """

    argv: tuple[str, ...]
    ok: bool
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    missing: bool = False

    def describe(self) -> str:
        """One line for the admin log: the command and how it ended, with its stderr."""
        cmd = " ".join(self.argv)
        if self.missing:
            how = "not found"
        elif self.timed_out:
            how = "timed out"
        elif self.rc is None:
            how = "could not start"
        else:
            how = f"exit {self.rc}"
        err = " ".join(self.stderr.split())
        return f"{cmd!r}: {how}" + (f": {err}" if err else "")


def as_user_argv(
    argv: Sequence[str], user: str, runuser: Sequence[str] = ("runuser",)
) -> list[str]:
    """`argv` run as Unix account `user`: ``runuser -u USER -- argv...``."""
    if not USER_NAME.fullmatch(user):
        raise ValueError(f"{user!r} is not a Unix user name")
    return [*runuser, "-u", user, "--", *argv]


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float,
    as_user: str | None = None,
    stdin: str | None = None,
    runuser: Sequence[str] = ("runuser",),
) -> Outcome:
    """Run `argv` (no shell) and return how it went; never raises because the command failed.

    `env` is the command's whole environment (None: the hub's own). `stdin` is written to the
    command's standard input (``sbatch`` reads its script there), else it reads /dev/null. The
    command runs in a new session, so on timeout the whole process group is killed (SIGKILL):
    under ``runuser``, that includes the user's process, which runuser would otherwise leave.
    """
    if not argv or any(not isinstance(a, str) for a in argv):
        raise ValueError(f"argv must be a non-empty list of strings, not {argv!r}")
    full = as_user_argv(argv, as_user, runuser) if as_user is not None else list(argv)
    shown = tuple(full)
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        return Outcome(shown, False, None, "", str(e), missing=True)
    except OSError as e:  # permission denied, not executable, too many open files…
        return Outcome(shown, False, None, "", str(e))
    readers = (
        asyncio.ensure_future(_read_all(proc.stdout)),
        asyncio.ensure_future(_read_all(proc.stderr)),
    )
    try:
        await asyncio.wait_for(_feed_and_wait(proc, stdin), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        try:
            # asyncio's wait() also waits for the pipes to close, which a process that left
            # the group (setsid) can hold open: do not let that hang the hub.
            await asyncio.wait_for(proc.wait(), _DRAIN_SECONDS)
        except TimeoutError:
            pass
        out, err = await _collect(readers)
        return Outcome(shown, False, None, out, err, timed_out=True)
    except BaseException:  # cancelled by the caller: leave no process behind
        _kill_group(proc.pid)
        for r in readers:
            r.cancel()
        raise
    out, err = await _collect(readers)
    rc = proc.returncode
    assert rc is not None  # _feed_and_wait returned, so the process exited
    missing = as_user is not None and (
        rc in _RUNUSER_CANNOT_EXEC or err.startswith("runuser: failed to execute")
    )
    return Outcome(shown, rc == 0, rc, out, err, missing=missing)


async def _feed_and_wait(proc: asyncio.subprocess.Process, stdin: str | None) -> None:
    if stdin is not None and proc.stdin is not None:
        try:
            proc.stdin.write(stdin.encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it exited without reading all of it; its exit status says why
        proc.stdin.close()
    await proc.wait()


async def _read_all(stream: asyncio.StreamReader | None) -> bytearray:
    """Everything the stream gives until EOF, kept as it arrives so a timeout keeps it too."""
    got = bytearray()
    if stream is None:
        return got
    try:
        while chunk := await stream.read(65536):
            got += chunk
    except asyncio.CancelledError:
        pass
    return got


async def _collect(readers: tuple[asyncio.Future[bytearray], ...]) -> tuple[str, str]:
    """The readers' text, after at most _DRAIN_SECONDS for the pipes to close."""
    _done, pending = await asyncio.wait(readers, timeout=_DRAIN_SECONDS)
    for r in pending:
        r.cancel()
    if pending:
        await asyncio.wait(pending)
    out, err = (_text(bytes(r.result())) for r in readers)
    return out, err


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")

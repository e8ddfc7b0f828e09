"""spawners.slurm.run: real processes (bash, cat, runuser to the `nobody` account), no Slurm."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from spawners.slurm.run import Outcome, as_user_argv, run

pytestmark = pytest.mark.unit

SBIN_PATH = "/usr/sbin:/usr/bin:/bin"  # runuser is in /usr/sbin
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runuser needs root")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_success_gives_output_and_ok() -> None:
    out = await run(["bash", "-c", "echo out; echo err >&2"], timeout=10)
    assert (out.ok, out.rc, out.stdout, out.stderr) == (True, 0, "out\n", "err\n")
    assert not out.timed_out and not out.missing


async def test_failure_is_an_outcome_not_an_exception() -> None:
    out = await run(["bash", "-c", "echo nope >&2; exit 3"], timeout=10)
    assert (out.ok, out.rc, out.stderr) == (False, 3, "nope\n")
    assert "exit 3" in out.describe() and "nope" in out.describe()


async def test_missing_program() -> None:
    out = await run(["/nonexistent/squeue", "--version"], timeout=10)
    assert out.missing and not out.ok and out.rc is None
    assert "not found" in out.describe()


async def test_no_shell_reads_the_words() -> None:
    hostile = "$(touch /tmp/mlrp-slurm-run-pwned); `id` ; echo x | cat"
    out = await run(["printf", "%s", hostile], timeout=10)
    assert out.stdout == hostile
    assert not Path("/tmp/mlrp-slurm-run-pwned").exists()


async def test_stdin_and_env_are_exactly_what_was_given() -> None:
    out = await run(
        ["bash", "-c", 'cat; echo "[$ONLY]"; env | wc -l'],
        timeout=10,
        env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
        stdin="script\n",
    )
    lines = out.stdout.splitlines()
    assert lines[0] == "script" and lines[1] == "[this]"
    assert int(lines[2]) <= 5  # ONLY, PATH and what bash itself sets (PWD, SHLVL, _)


async def test_timeout_kills_the_whole_group_and_keeps_partial_output(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    start = time.monotonic()
    out = await run(
        ["bash", "-c", f"echo started; sleep 60 & echo $! > {pids}; sleep 60"],
        timeout=1,
    )
    assert time.monotonic() - start < 8
    assert out.timed_out and not out.ok and out.rc is None
    assert out.stdout == "started\n"
    grandchild = int(pids.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        await asyncio.sleep(0.1)
    assert not _alive(grandchild), "the background sleep outlived the timeout"


async def test_a_process_that_left_the_group_does_not_hang_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    start = time.monotonic()
    out = await run(
        ["bash", "-c", f"setsid sleep 30 & echo $! > {pids}; sleep 60"],
        timeout=1,
    )
    took = time.monotonic() - start
    os.kill(int(pids.read_text()), 9)  # ours to clean up: it escaped the group on purpose
    assert out.timed_out
    assert took < 8, f"run() waited {took:.0f} s for pipes held by an escaped process"


async def test_cancelling_the_caller_kills_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    task = asyncio.ensure_future(run(["bash", "-c", f"echo $$ > {pids}; sleep 60"], timeout=60))
    for _ in range(50):
        if pids.exists() and pids.read_text().strip():
            break
        await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pid = int(pids.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not _alive(pid)


def test_as_user_argv_is_runuser_and_refuses_non_names() -> None:
    assert as_user_argv(["squeue"], "alice") == ["runuser", "-u", "alice", "--", "squeue"]
    assert as_user_argv(["x"], "bob", ["/usr/sbin/runuser"])[0] == "/usr/sbin/runuser"
    for bad in ["-x", "root; id", "a b", "", "Alice", "a\nb", "x" * 40]:
        with pytest.raises(ValueError, match="not a Unix user name"):
            as_user_argv(["squeue"], bad)


@needs_root
async def test_as_user_runs_with_that_account() -> None:
    out = await run(["id", "-un"], timeout=10, as_user="nobody", env={"PATH": SBIN_PATH})
    assert out.ok, out.describe()
    assert out.stdout.strip() == "nobody"
    assert out.argv == ("runuser", "-u", "nobody", "--", "id", "-un")


@needs_root
async def test_as_user_missing_program_is_missing() -> None:
    out = await run(["/nonexistent/sbatch"], timeout=10, as_user="nobody", env={"PATH": SBIN_PATH})
    assert out.missing and not out.ok


@needs_root
async def test_as_user_timeout_kills_the_users_process() -> None:
    out = await run(
        ["bash", "-c", "echo $$; exec sleep 60"],
        timeout=1,
        as_user="nobody",
        env={"PATH": SBIN_PATH},
    )
    assert out.timed_out
    pid = int(out.stdout)  # partial output survives the timeout, through runuser too
    for _ in range(50):
        if not _alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not _alive(pid), "runuser's child outlived the timeout"


def test_outcome_describe_names_the_failure() -> None:
    o = Outcome(("squeue",), False, None, "", "", timed_out=True)
    assert o.describe() == "'squeue': timed out"

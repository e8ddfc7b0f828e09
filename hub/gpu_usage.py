"""What the GPUs are doing now, read from NVML without ever blocking its caller for long.

NVML calls are synchronous and can hang on a sick GPU or driver. The hub must keep serving
every other page meanwhile, and `mlrp gpus` must still print who holds what. So NVML is read in
a daemon thread (it cannot hold the process open at exit), its answer awaited at most
NVML_TIMEOUT seconds; a later caller joins a read still under way instead of starting another,
so a hung driver costs one stuck thread, not one per page view.

Each process NVML lists is named by its Unix account (the owner of /proc/PID), read in the same
thread: user lookups may go to a slow directory service.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pwd
import threading
from dataclasses import dataclass, field

from spawners.gpus import UsageReport, read_usage

log = logging.getLogger(__name__)

NVML_TIMEOUT = 2.0  # seconds; a healthy NVML answers in milliseconds


@dataclass(frozen=True)
class Usage:
    """NVML's report, and the Unix account of each process it lists (by PID)."""

    report: UsageReport
    accounts: dict[int, str] = field(default_factory=dict)


def hung(timeout: float) -> Usage:
    return Usage(UsageReport(state="hung", error=f"NVML did not answer within {timeout:g} s"))


def account_of(pid: int) -> str:
    """The Unix account running `pid`; "uid N" without a name; "?" when /proc has no such
    process (it ended, or runs in another PID namespace than the one reading)."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def read() -> Usage:
    """NVML's report with the processes' accounts (synchronous: may block; see usage_within)."""
    report = read_usage()
    pids = {p.pid for g in report.gpus for p in (g.processes or ())}
    return Usage(report, {pid: account_of(pid) for pid in sorted(pids)})


_lock = threading.Lock()
_inflight: concurrent.futures.Future[Usage] | None = None


def _run(future: concurrent.futures.Future[Usage]) -> None:
    try:
        future.set_result(read())
    except Exception as e:  # noqa: BLE001  (anything, so that no caller waits forever)
        log.exception("Reading GPU usage from NVML failed")
        future.set_result(Usage(UsageReport(state="failed", error=str(e) or type(e).__name__)))


def _current() -> concurrent.futures.Future[Usage]:
    """The read under way, or a new one."""
    global _inflight
    with _lock:
        if _inflight is None or _inflight.done():
            _inflight = concurrent.futures.Future()
            threading.Thread(target=_run, args=(_inflight,), name="mlrp-nvml", daemon=True).start()
        return _inflight


def usage_within(timeout: float = NVML_TIMEOUT) -> Usage:
    """For synchronous callers (`mlrp gpus`)."""
    try:
        return _current().result(timeout)
    except concurrent.futures.TimeoutError:
        return hung(timeout)


async def usage_async(timeout: float = NVML_TIMEOUT) -> Usage:
    """For the hub's handlers: the event loop keeps running while NVML is read."""
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(_current())), timeout)
    except TimeoutError:
        return hung(timeout)

"""One shared poller per backend: all of a backend's servers checked in one call per period.

batchspawner runs one `squeue` per server per poll; with 50 servers that is 50 scheduler calls
every poll interval, plus more during each start. A `SharedPoller` instead keeps the keys of
every server it watches (Slurm job ids) and asks about all of them at once, at most once per
`period`: `status(key)` answers from the last batch while it is fresh, and otherwise waits for
the next one (concurrent callers share it). A background loop refreshes while anything is
watched, so a job cancelled from outside is noticed within one period and `on_change`
listeners (spawners' progress streams) hear of every change.

`check(keys)` returns a Poll for each key, or None when it could not ask at all (the command
failed, the controller did not answer): every key is then UNKNOWN, which never stops a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from spawners.backends.base import Poll

K = TypeVar("K", bound=Hashable)
Check = Callable[[list[K]], Awaitable[dict[K, Poll] | None]]
Listener = Callable[[Poll], None]

log = logging.getLogger(__name__)


class SharedPoller(Generic[K]):
    def __init__(self, check: Check[K], period: float, name: str = "poller") -> None:
        self.check = check
        self.period = period
        self.name = name
        self.calls = 0  # batch checks made (the benchmark counts them)
        self._watched: dict[K, list[Listener]] = {}
        self._last: dict[K, Poll] = {}
        self._asked_at = float("-inf")  # loop time of the last batch
        self._inflight: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # -- what the servers use ----------------------------------------------------------------
    def watch(self, key: K, on_change: Listener | None = None) -> None:
        listeners = self._watched.setdefault(key, [])
        if on_change is not None:
            listeners.append(on_change)
        self._ensure_loop()

    def unwatch(self, key: K) -> None:
        self._watched.pop(key, None)
        self._last.pop(key, None)

    @property
    def watched(self) -> list[K]:
        return list(self._watched)

    async def status(self, key: K, max_age: float | None = None) -> Poll:
        """`key`'s state as of at most `max_age` seconds ago (default: one period), asking now
        if the last batch is older. A starting server asks more often than the period; its
        checks are still one batch for everyone asking at that moment."""
        if key not in self._watched:
            self.watch(key)
        loop = asyncio.get_running_loop()
        age = self.period if max_age is None else max_age
        if key not in self._last or loop.time() - self._asked_at >= age:
            await self.refresh()
        return self._last.get(key, Poll.unknown("not checked yet"))

    # -- the batch ---------------------------------------------------------------------------
    async def refresh(self) -> None:
        """One batch check for every watched key; concurrent callers wait for the same one."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._ask())
        inflight = self._inflight
        try:
            await asyncio.shield(inflight)
        finally:
            if self._inflight is inflight and inflight.done():
                self._inflight = None

    async def _ask(self) -> None:
        keys = list(self._watched)
        if not keys:
            return
        self.calls += 1
        try:
            found = await self.check(keys)
        except Exception as e:  # a failing check must never look like "gone"
            log.exception("%s: the check failed", self.name)
            found = None
            why = f"the check failed: {e}"
        else:
            why = "the scheduler did not answer"
        self._asked_at = asyncio.get_running_loop().time()
        for key in keys:
            result = found.get(key) if found is not None else None
            new = result if result is not None else Poll.unknown(why)
            old = self._last.get(key)
            self._last[key] = new
            if old != new:
                for listener in list(self._watched.get(key, [])):
                    try:
                        listener(new)
                    except Exception:
                        log.exception("%s: a listener of %r failed", self.name, key)

    # -- the background loop -----------------------------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            try:
                self._loop_task = asyncio.get_running_loop().create_task(self._run())
            except RuntimeError:
                self._loop_task = None  # no loop (a test outside asyncio): status() still asks

    async def _run(self) -> None:
        while self._watched:
            loop = asyncio.get_running_loop()
            wait = self._asked_at + self.period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.refresh()
            except Exception:
                log.exception("%s: refresh failed", self.name)
                await asyncio.sleep(self.period)

    async def close(self) -> None:
        self._watched.clear()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

"""SharedPoller: one batch check per period whatever the number of servers, three-valued
answers, and a failed check that never reads as "gone". The check is a plain function here;
the Slurm backend's is one real `squeue` (tests/integration)."""

from __future__ import annotations

import asyncio

import pytest

from spawners.backends.base import Poll, PollStatus
from spawners.poller import SharedPoller

pytestmark = pytest.mark.unit


class Scheduler:
    """Jobs by id; `down` makes every query fail, as an unreachable controller does."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.down = False
        self.queries: list[list[str]] = []

    async def check(self, keys: list[str]) -> dict[str, Poll] | None:
        self.queries.append(sorted(keys))
        await asyncio.sleep(0.01)
        if self.down:
            return None
        return {k: Poll.running() if k in self.running else Poll.gone(0, "ended") for k in keys}


async def test_fifty_servers_polled_at_once_cost_one_check() -> None:
    sched = Scheduler()
    sched.running = {str(i) for i in range(50)}
    poller: SharedPoller[str] = SharedPoller(sched.check, period=60)
    for i in range(50):
        poller.watch(str(i))
    results = await asyncio.gather(*(poller.status(str(i)) for i in range(50)))
    assert all(r.status is PollStatus.RUNNING for r in results)
    assert len(sched.queries) == 1, "one batch for all fifty, not one each"
    assert sched.queries[0] == sorted(str(i) for i in range(50))
    await poller.status("7")
    assert len(sched.queries) == 1, "fresh answers are reused within the period"
    await poller.close()


async def test_a_job_ended_from_outside_is_noticed_within_one_period() -> None:
    sched = Scheduler()
    sched.running = {"1", "2"}
    seen: list[Poll] = []
    poller: SharedPoller[str] = SharedPoller(sched.check, period=0.1)
    poller.watch("1", seen.append)
    poller.watch("2")
    assert (await poller.status("1")).status is PollStatus.RUNNING
    sched.running.discard("1")  # scancel from outside
    await asyncio.sleep(0.35)
    assert seen[-1].status is PollStatus.GONE, "the background loop noticed, unasked"
    assert (await poller.status("2")).status is PollStatus.RUNNING
    await poller.close()


async def test_an_unreachable_scheduler_is_unknown_never_gone() -> None:
    sched = Scheduler()
    sched.running = {"1"}
    poller: SharedPoller[str] = SharedPoller(sched.check, period=0.05)
    assert (await poller.status("1")).status is PollStatus.RUNNING
    sched.down = True
    await asyncio.sleep(0.1)
    assert (await poller.status("1")).status is PollStatus.UNKNOWN
    sched.down = False
    await asyncio.sleep(0.1)
    assert (await poller.status("1")).status is PollStatus.RUNNING
    await poller.close()


async def test_a_check_that_raises_is_unknown_too() -> None:
    async def broken(keys: list[str]) -> dict[str, Poll] | None:
        raise OSError("squeue: not found")

    poller: SharedPoller[str] = SharedPoller(broken, period=60)
    result = await poller.status("9")
    assert result.status is PollStatus.UNKNOWN and "squeue: not found" in result.why
    await poller.close()


async def test_unwatched_keys_are_not_asked_about() -> None:
    sched = Scheduler()
    poller: SharedPoller[str] = SharedPoller(sched.check, period=0)
    poller.watch("1")
    poller.watch("2")
    poller.unwatch("1")
    await poller.refresh()
    assert sched.queries[-1] == ["2"]
    await poller.close()

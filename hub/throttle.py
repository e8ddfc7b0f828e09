"""Login throttling: after a few wrong passwords, a name (or an address) must wait before the
next try, doubling each time, so guessing is slow and a person who mistyped is back in seconds.

Kept in the hub's memory: one hub per node, and a restart forgetting the counts costs an
attacker a restart they cannot cause. A wait applies to every try of that name or address,
right or wrong (otherwise the right password would tell itself by being let in), and is checked
before any password work, so a flood of tries costs no scrypt runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0  # monotonic time of the last failure
    until: float = 0.0  # monotonic time before which tries are refused


@dataclass
class Throttle:
    """Failures per key ("name:alice", "address:10.0.0.7") and the wait they earn."""

    free_failures: int  # failures allowed before waits begin
    max_delay: float  # the longest wait, in seconds
    forget_after: float = 3600.0  # failures older than this, with none since, are forgotten
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)

    def wait(self, key: str) -> float:
        """Seconds `key` must still wait before its next try (0: it may try now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        now = self.clock()
        if now - record.last > self.forget_after:
            del self._records[key]
            return 0.0
        return max(0.0, record.until - now)

    def failed(self, key: str) -> float:
        """Count a failure; return the wait it earns (0 while failures are still free)."""
        now = self.clock()
        record = self._records.get(key)
        if record is None or now - record.last > self.forget_after:
            record = self._records[key] = _Record()
        record.failures += 1
        record.last = now
        beyond = record.failures - self.free_failures
        delay = 0.0 if beyond <= 0 else min(self.max_delay, float(2 ** min(beyond - 1, 30)))
        record.until = now + delay
        return delay

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def failures(self, key: str) -> int:
        record = self._records.get(key)
        return record.failures if record else 0


def wait_sentence(seconds: float) -> str:
    """What the person reads while a name or address must wait."""
    whole = max(1, round(seconds))
    if whole == 1:
        unit = "1 second"
    elif whole < 120:
        unit = f"{whole} seconds"
    else:
        unit = f"{round(whole / 60)} minutes"
    return (
        f"Too many failed logins: wait {unit}, then try again. If you forgot your password, ask "
        "your administrator to reset it."
    )

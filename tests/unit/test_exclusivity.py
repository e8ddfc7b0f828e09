"""Exclusive records under a race, on a real SQLite file: two processes (two SQLRecords on one
file, as the hub and a later API service are) claim the same GPU or the same Unix account at the
same moment. The race is staged, not hoped for: the other process acts between our read and our
write, every time, so removing the database constraint that settles it makes these fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, text

from hub.models import Base
from hub.storage import SQLRecords
from spawners.records import AccountClash

pytestmark = pytest.mark.unit

NODE = "node1"
DEVICES = ["0", "1", "2", "3"]


def interleave(mine: SQLRecords, read: str, other: Callable[[], Any]) -> list[Any]:
    """Run `other` once, right after `mine` executes the first statement containing `read`
    (its look at what is taken), before `mine` writes."""
    done: list[Any] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not done and read in " ".join(statement.upper().split()):
            done.append(other())

    event.listen(mine.engine, "after_cursor_execute", hook)
    return done


def all_leases(url: str) -> list[tuple[str, str]]:
    with SQLRecords.from_url(url).engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT device, owner FROM gpu_leases"))]


def test_a_device_is_never_leased_twice_when_two_processes_race(url: str) -> None:
    mine, theirs = SQLRecords.from_url(url), SQLRecords.from_url(url)
    raced = interleave(
        mine, "SELECT GPU_LEASES.DEVICE", lambda: theirs.lease_gpus("bob/", NODE, DEVICES, 1)
    )
    got = mine.lease_gpus("alice/", NODE, DEVICES, 1)
    assert raced == [["0"]], "the other process leased device 0 inside our read-then-write"
    assert got == ["1"], "we retried and took a device that is still free"
    rows = all_leases(url)
    devices = Counter(device for device, _ in rows)
    assert max(devices.values()) == 1, f"a device is leased twice: {rows}"
    assert sorted(rows) == [("0", "bob/"), ("1", "alice/")]


def test_a_unix_account_is_never_claimed_by_two_hub_users_racing(url: str) -> None:
    mine, theirs = SQLRecords.from_url(url), SQLRecords.from_url(url)
    raced = interleave(
        mine,
        "FROM UNIX_ACCOUNTS WHERE UNIX_ACCOUNTS.UNIX_NAME",  # who holds this account?
        lambda: theirs.claim_unix_account("Alice", "mlrp_collided"),
    )
    with pytest.raises(AccountClash, match="already belongs to hub user 'Alice'"):
        mine.claim_unix_account("alice.b", "mlrp_collided")
    assert raced == [None]
    with mine.engine.connect() as conn:
        rows = conn.execute(text("SELECT hub_user, unix_name FROM unix_accounts")).all()
    assert [tuple(r) for r in rows] == [("Alice", "mlrp_collided")]


def test_the_migrations_build_exactly_the_models(url: str) -> None:
    """The constraints above live in the migrations (what a hub's database really gets) and in
    hub/models.py; a change to one without the other must not pass unnoticed."""
    records = SQLRecords.from_url(url)
    with records.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []

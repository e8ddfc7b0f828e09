"""The MLRP database on SQLite: migrations, WAL, spawn events and the Unix-account map."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from hub import storage
from hub.storage import SQLRecords, open_database, sqlite_url
from spawners.records import AccountClash, Event

pytestmark = pytest.mark.unit

TABLES = {
    "gpu_leases",
    "spawn_events",
    "unix_accounts",
    "server_checkpoints",
    "retired_unix_accounts",
    "login_accounts",
    "alembic_version",
}
T0 = datetime(2024, 1, 1, 12, 0, 0)


def event(owner: str, spawn_id: str, progress: int, message: str, **kw: bool) -> Event:
    return Event(owner, spawn_id, T0 + timedelta(seconds=progress), progress, message, **kw)


def test_sqlite_url_points_into_the_data_dir(tmp_path: Path) -> None:
    assert sqlite_url(tmp_path) == f"sqlite:///{tmp_path}/mlrp.sqlite"


def test_migrations_create_the_schema(url: str, tmp_path: Path) -> None:
    engine = open_database(url)
    assert (tmp_path / "mlrp.sqlite").is_file()
    assert TABLES <= set(inspect(engine).get_table_names())
    columns = {c["name"] for c in inspect(engine).get_columns("gpu_leases")}
    assert columns == {"id", "node", "device", "owner", "since"}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0003"


def test_opening_twice_is_idempotent_and_keeps_data(url: str) -> None:
    first = SQLRecords.from_url(url)
    first.claim_unix_account("alice", "mlrp-alice")
    assert first.lease_gpus("alice/", "n1", ["0", "1"], 1) == ["0"]
    second = SQLRecords.from_url(url)
    with second.engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == ["0003"]
    assert second.unix_account("alice") == "mlrp-alice"
    assert [lease.device for lease in second.leases("n1")] == ["0"]


def test_wal_mode_and_busy_timeout(records: SQLRecords, tmp_path: Path) -> None:
    with records.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar_one() == 5000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    records.add_event(event("a/", "s1", 0, "queued"))
    assert (tmp_path / "mlrp.sqlite-wal").exists()


def test_events_of_the_latest_spawn_only(records: SQLRecords) -> None:
    records.add_event(event("alice/", "s1", 0, "queued"))
    records.add_event(event("alice/", "s1", 50, "failed: no GPUs", failed=True))
    records.add_event(event("bob/", "b1", 0, "queued"))
    records.add_event(event("alice/", "s2", 0, "queued again"))
    records.add_event(event("alice/", "s2", 100, "ready", ready=True))
    records.add_event(event("bob/", "b1", 10, "starting"))

    latest = records.events("alice/")
    assert [(e.spawn_id, e.message) for e in latest] == [("s2", "queued again"), ("s2", "ready")]
    assert latest[-1].ready and not latest[-1].failed
    older = records.events("alice/", "s1")
    assert [e.message for e in older] == ["queued", "failed: no GPUs"]
    assert older[-1].failed
    assert older[0] == event("alice/", "s1", 0, "queued")
    assert [e.message for e in records.events("bob/")] == ["queued", "starting"]
    assert records.events("carol/") == []
    assert records.events("alice/", "nope") == []


def test_old_events_are_pruned_when_a_spawn_starts(
    records: SQLRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "EVENTS_KEPT_PER_OWNER", 3)
    for spawn in ("s1", "s2", "s3"):
        records.add_event(event("alice/", spawn, 0, f"{spawn} queued"))
        records.add_event(event("alice/", spawn, 100, f"{spawn} ready"))
    records.add_event(event("bob/", "b1", 0, "bob queued"))
    assert records.events("alice/", "s1") == []
    # Pruned when s3 started: only the 3 newest rows (s2's two and s3's first) were kept.
    assert [e.message for e in records.events("alice/", "s2")] == ["s2 queued", "s2 ready"]
    assert [e.message for e in records.events("alice/")] == ["s3 queued", "s3 ready"]
    assert [e.message for e in records.events("bob/")] == ["bob queued"]


def test_unix_account_claims(records: SQLRecords) -> None:
    assert records.unix_account("alice") is None
    records.claim_unix_account("alice", "mlrp-alice")
    records.claim_unix_account("alice", "mlrp-alice")  # again: fine
    assert records.unix_account("alice") == "mlrp-alice"
    with pytest.raises(AccountClash, match=r"mlrp-alice already belongs to hub user 'alice'"):
        records.claim_unix_account("Alice", "mlrp-alice")
    assert records.unix_account("Alice") is None


def test_account_claims_survive_a_restart(url: str) -> None:
    SQLRecords.from_url(url).claim_unix_account("alice", "mlrp-alice")
    with pytest.raises(AccountClash):
        SQLRecords.from_url(url).claim_unix_account("mallory", "mlrp-alice")


def test_second_unix_name_for_the_same_user_is_a_clash(records: SQLRecords) -> None:
    records.claim_unix_account("alice", "mlrp-alice")
    with pytest.raises(AccountClash):
        records.claim_unix_account("alice", "lab-alice")
    assert records.unix_account("alice") == "mlrp-alice"


def test_a_retired_account_is_never_given_to_the_next_person_of_that_name(
    records: SQLRecords,
) -> None:
    from spawners.accounts import fresh_unix_name

    records.claim_unix_account("frank", "mlrp-frank")
    assert records.retire_unix_account("frank") == "mlrp-frank"
    assert records.unix_account("frank") is None
    assert records.unix_name_retired("mlrp-frank")
    assert records.retire_unix_account("frank") is None, "nothing left to retire"
    second = fresh_unix_name(records, "frank", "mlrp-")
    assert second != "mlrp-frank" and second.startswith("mlrp_")
    records.claim_unix_account("frank", second)
    assert fresh_unix_name(records, "frank", "mlrp-") == second, "stable once recorded"
    records.retire_unix_account("frank")
    third = fresh_unix_name(records, "frank", "mlrp-")
    assert third not in ("mlrp-frank", second)
    # Nobody else can be given a retired name either.
    with pytest.raises(AccountClash):
        records.claim_unix_account("frank", "mlrp-frank")
    # Restore hands the most recent one back, only to its person.
    assert [r.unix_name for r in records.retired_unix_accounts("frank")] == [second, "mlrp-frank"]
    with pytest.raises(AccountClash):
        records.restore_unix_account("gina", second)
    records.restore_unix_account("frank", second)
    assert records.unix_account("frank") == second and not records.unix_name_retired(second)

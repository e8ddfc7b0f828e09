"""Hub start-up reconciliation frees exactly the GPU leases that no server holds, judged from a
real JupyterHub database (made with JupyterHub's own ORM, as the hub writes it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import MemoryRecords
from jupyterhub import orm

from hub.reconcile import release_orphan_leases
from spawners.gpus import GPU, GPUAllocator, Inventory

pytestmark = pytest.mark.unit

NODE = "node1"
EIGHT = Inventory(tuple(GPU(str(i)) for i in range(8)), "config")


def jupyterhub_db(path: Path, servers: dict[str, list[str]], idle: dict[str, list[str]]) -> Path:
    """users → server names with a running server (`servers`) or a spawner row but no server
    (`idle`: stopped, or never started)."""
    db = orm.new_session_factory(f"sqlite:///{path}")()
    for name in {*servers, *idle}:
        user = orm.User(name=name)
        db.add(user)
        for server_name in servers.get(name, []):
            spawner = orm.Spawner(user=user, name=server_name)
            spawner.server = orm.Server()
            db.add(spawner)
        for server_name in idle.get(name, []):
            db.add(orm.Spawner(user=user, name=server_name))
    db.commit()
    db.close()
    return path


def lease(records: MemoryRecords, allocator: GPUAllocator, owner: str, count: int) -> None:
    assert len(allocator.lease(owner, count)) == count


def test_frees_only_leases_that_no_server_holds(tmp_path: Path) -> None:
    records = MemoryRecords()
    allocator = GPUAllocator(records, EIGHT, node=NODE)
    for owner, count in (
        ("alice/", 2),  # default server running
        ("carol/lab", 1),  # named server running
        ("carol/", 1),  # carol's default server is stopped: its lease is stale
        ("bob/", 1),  # bob exists but has no server
        ("ghost/", 1),  # no such hub user at all (killed between lease and start)
    ):
        lease(records, allocator, owner, count)
    db = jupyterhub_db(
        tmp_path / "jupyterhub.sqlite",
        servers={"alice": [""], "carol": ["lab"]},
        idle={"bob": [""], "carol": [""]},
    )
    freed = release_orphan_leases(allocator, db)
    assert len(freed) == 3
    assert sorted({lease.owner for lease in records.leased.values()}) == ["alice/", "carol/lab"]
    assert records.held_by("alice/") == ["0", "1"]


def test_a_first_start_has_no_database_and_frees_everything(tmp_path: Path) -> None:
    records = MemoryRecords()
    allocator = GPUAllocator(records, EIGHT, node=NODE)
    lease(records, allocator, "alice/", 1)
    assert release_orphan_leases(allocator, tmp_path / "jupyterhub.sqlite") == ["0"]
    assert records.leased == {}


def test_an_unreadable_database_frees_nothing(tmp_path: Path) -> None:
    """Not knowing which servers run is no reason to take GPUs from them."""
    records = MemoryRecords()
    allocator = GPUAllocator(records, EIGHT, node=NODE)
    lease(records, allocator, "alice/", 1)
    broken = tmp_path / "jupyterhub.sqlite"
    broken.write_bytes(b"this is not an SQLite database" * 100)
    assert release_orphan_leases(allocator, broken) == []
    assert records.held_by("alice/") == ["0"]

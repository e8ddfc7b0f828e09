"""Reconciliation (spawners/reconcile.py, run inside the hub by hub/reconcile.py): a checkpoint
of a server JupyterHub no longer runs is cleaned and forgotten, GPU leases nobody holds are
freed, and everything JupyterHub runs or starts is left alone. The servers JupyterHub runs are
read from a real JupyterHub database made with its own ORM, as the hub's session sees it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fakes import MemoryRecords, ScriptedBackend, make_spawner, scripted_backend
from jupyterhub import orm

from hub.reconcile import hub_live_owners
from spawners.reconcile import reconcile_once
from spawners.spawner import MLRPSpawner

pytestmark = pytest.mark.unit


def jupyterhub_session(
    path: Path, servers: dict[str, list[str]], idle: dict[str, list[str]]
) -> Any:
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
    return db


def test_live_owners_are_the_servers_jupyterhub_runs(tmp_path: Path) -> None:
    db = jupyterhub_session(
        tmp_path / "jupyterhub.sqlite",
        servers={"alice": ["", "big"], "carol": [""]},
        idle={"bob": [""], "alice": ["old"]},
    )
    app = SimpleNamespace(db=db, users={})
    assert hub_live_owners(app) == {"alice/", "alice/big", "carol/"}


def test_a_pending_start_counts_as_live(tmp_path: Path) -> None:
    """A start under way has no server row yet in our view of it only if JupyterHub has not
    written one: the in-memory spawner's `pending` says it is starting."""
    db = jupyterhub_session(tmp_path / "jupyterhub.sqlite", servers={}, idle={"dora": [""]})
    dora = db.query(orm.User).filter_by(name="dora").one()
    pending = SimpleNamespace(pending="spawn")
    app = SimpleNamespace(db=db, users={dora.id: SimpleNamespace(spawners={"": pending})})
    assert hub_live_owners(app) == {"dora/"}
    pending.pending = None
    assert hub_live_owners(app) == set()


def spawner(
    records: MemoryRecords, tmp_path: Path, backend: type[ScriptedBackend], user: str
) -> MLRPSpawner:
    profiles = [{"slug": "gpu1", "name": "1 GPU", "backend": backend.name, "image_env": "/x",
                 "gpu_choices": [1]}]  # fmt: skip
    sp = make_spawner(
        records, profiles, tmp_path, user=user, backend_classes={backend.name: backend}
    )
    sp.user_options = {"profile": "gpu1", "gpus": 1}
    return sp


async def test_a_checkpoint_nobody_runs_is_cleaned_and_live_ones_are_kept(tmp_path: Path) -> None:
    records = MemoryRecords()
    backend = scripted_backend("ok")
    alice, bob = (spawner(records, tmp_path, backend, u) for u in ("alice", "bob"))
    await alice.start()
    await bob.start()
    assert set(records.saved) == {"alice/", "bob/"}, "each start left a checkpoint"
    platform = alice.platform
    # The hub was killed while bob's server started: JupyterHub runs only alice's.
    decisions = await reconcile_once(platform, {"alice/"}, [backend.name])
    assert set(records.saved) == {"alice/"}, "bob's checkpoint is cleaned, alice's kept"
    assert records.held_by("bob/") == [], "bob's GPU is freed"
    assert records.held_by("alice/") != [], "alice's GPU is untouched"
    assert any("bob/ has no running server" in d for d in decisions), decisions
    assert not any("alice/" in d for d in decisions), "nothing is said or done about alice"


async def test_leases_no_server_holds_are_freed(tmp_path: Path) -> None:
    records = MemoryRecords()
    backend = scripted_backend("ok")
    alice = spawner(records, tmp_path, backend, "alice")
    await alice.start()
    allocator = alice.backend_for(alice.all_profiles()[0]).allocator  # type: ignore[attr-defined]
    assert allocator.lease("ghost/", 1), "a lease with no server behind it"
    await bob_starts(records, tmp_path, backend)
    decisions = await reconcile_once(alice.platform, {"bob/"}, [backend.name])
    assert records.held_by("ghost/") == []
    assert records.held_by("bob/") != []
    assert any("ghost/" in d for d in decisions)


async def bob_starts(
    records: MemoryRecords, tmp_path: Path, backend: type[ScriptedBackend]
) -> None:
    await spawner(records, tmp_path, backend, "bob").start()


async def test_an_unreadable_checkpoint_is_kept_with_its_gpus(tmp_path: Path) -> None:
    """Written by a newer MLRP (or damaged): never guessed at, never freed."""
    records = MemoryRecords()
    backend = scripted_backend("ok")
    carol = spawner(records, tmp_path, backend, "carol")
    await carol.start()
    cp = records.saved["carol/"]
    records.save_checkpoint("carol/", cp.backend, {**cp.state, "v": 99})
    decisions = await reconcile_once(carol.platform, set(), [backend.name])
    assert "carol/" in records.saved
    assert records.held_by("carol/") != [], "its GPU stays leased"
    assert any("unreadable" in d for d in decisions), decisions


async def test_a_failing_clean_keeps_the_checkpoint_and_its_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = MemoryRecords()
    backend = scripted_backend("ok")
    dan = spawner(records, tmp_path, backend, "dan")
    await dan.start()

    async def broken(self: ScriptedBackend, placement: Any) -> str:
        raise OSError("scheduler unreachable")

    monkeypatch.setattr(backend, "clean", broken)
    decisions = await reconcile_once(dan.platform, set(), [backend.name])
    assert "dan/" in records.saved and records.held_by("dan/") != []
    assert any("could not clean" in d for d in decisions), decisions


async def test_a_new_start_cleans_a_stale_checkpoint_of_its_owner_first(tmp_path: Path) -> None:
    """Reconciliation has not run yet when erin starts again: her earlier, orphaned placement
    is cleaned before the new one, so it is never overwritten and lost."""
    records = MemoryRecords()
    backend = scripted_backend("ok")
    await spawner(records, tmp_path, backend, "erin").start()
    before = len(records.calls)
    await spawner(records, tmp_path, backend, "erin").start()
    later = records.calls[before:]
    assert ("drop_checkpoint", "erin/") in later, "the stale checkpoint was cleaned"
    assert later.index(("drop_checkpoint", "erin/")) < later.index(("lease_gpus", "erin/"))
    assert any(s.teardowns for s in backend.instances[1:]), "its server was torn down"
    assert len(records.held_by("erin/")) == 1, "only the new server's GPU is held"

"""A GPU lease lives exactly as long as its server: MLRPSpawner against a scripted backend and an
in-memory records store (tests/fakes.py), so each way a server ends is checked on its own.

Each test looks at the leases right after the one call under test returns, and never calls
another lifecycle method in between: a release done later by someone else (a poll, a stop, the
next start) must not hide a missing one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import MemoryRecords, ScriptedBackend, make_spawner, scripted_backend

from spawners.errors import PlacementError
from spawners.spawner import MLRPSpawner

pytestmark = pytest.mark.unit

OWNER = "alice/"


def profiles(backend: str) -> list[dict[str, Any]]:
    return [
        {"slug": "gpu2", "name": "Two GPUs", "backend": backend, "image_env": "/nonexistent",
         "gpu_choices": [2]},
    ]  # fmt: skip


@pytest.fixture
def records() -> MemoryRecords:
    return MemoryRecords()


def spawner_with(
    outcome: str, records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MLRPSpawner, type[ScriptedBackend]]:
    backend = scripted_backend(outcome)
    sp = make_spawner(
        records, profiles(backend.name), tmp_path, backend_classes={backend.name: backend}
    )
    sp.user_options = {"profile": "gpu2", "gpus": 2}
    return sp, backend


@pytest.mark.parametrize("outcome", ["refused", "crash"])
async def test_a_failed_start_releases_its_lease_before_it_returns(
    outcome: str, records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, backend = spawner_with(outcome, records, tmp_path, monkeypatch)
    with pytest.raises(PlacementError) as info:
        await sp.start()
    assert records.held_by(OWNER) == [], "the failed start still holds its GPUs"
    assert ("lease_gpus", OWNER) in records.calls, "the scripted start did lease"
    assert backend.instances[0].stops == 1, "what was started is stopped"
    assert info.value.status_code == (400 if outcome == "refused" else 500)
    assert sp.last_failure() is not None, "the failure is recorded for the spawn form"


async def test_a_cancelled_start_releases_its_lease(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JupyterHub cancels a start that exceeds start_timeout."""
    sp, _ = spawner_with("hang", records, tmp_path, monkeypatch)
    task = asyncio.create_task(sp.start())
    while records.held_by(OWNER) == []:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert records.held_by(OWNER) == []


async def test_a_started_server_holds_its_lease_while_it_runs(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, _ = spawner_with("ok", records, tmp_path, monkeypatch)
    await sp.start()
    assert records.held_by(OWNER) == ["0", "1"]
    assert await sp.poll() is None
    assert records.held_by(OWNER) == ["0", "1"], "a poll of a running server keeps the lease"


async def test_stop_releases(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, backend = spawner_with("ok", records, tmp_path, monkeypatch)
    await sp.start()
    await sp.stop()
    assert records.held_by(OWNER) == []
    assert backend.instances[0].stops == 1


async def test_a_poll_that_finds_the_server_dead_releases(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, backend = spawner_with("ok", records, tmp_path, monkeypatch)
    await sp.start()
    backend.instances[0].die()
    assert await sp.poll() == 0
    assert records.held_by(OWNER) == [], "freed at once, not at the next stop"


async def test_after_a_hub_restart_the_reloaded_server_keeps_then_frees_its_lease(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """State saved by one hub process is loaded by the next: the lease stays with the running
    server, and goes when the reloaded server is found dead."""
    sp, backend = spawner_with("ok", records, tmp_path, monkeypatch)
    await sp.start()
    state = sp.get_state()
    after = make_spawner(
        records, profiles(backend.name), tmp_path, backend_classes={backend.name: backend}
    )
    after.load_state(state)
    assert await after.poll() is None
    assert records.held_by(OWNER) == ["0", "1"]
    backend.instances[-1].die()
    assert await after.poll() == 0
    assert records.held_by(OWNER) == []


async def test_no_free_gpu_takes_nothing_and_starts_nothing(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sp, backend = spawner_with("ok", records, tmp_path, monkeypatch)
    node = sp.backend_for(sp.all_profiles()[0]).allocator.node  # type: ignore[attr-defined]
    assert records.lease_gpus("bob/", node, ["0", "1", "2"], 3) == ["0", "1", "2"]
    with pytest.raises(PlacementError) as info:
        await sp.start()
    assert info.value.failure_reason == "no-gpus" and info.value.status_code == 400
    assert records.held_by(OWNER) == []
    assert records.held_by("bob/") == ["0", "1", "2"], "someone else's lease is untouched"
    assert backend.instances == [], "the precheck refused before any backend was made"


async def test_a_poll_that_cannot_tell_keeps_the_server_and_its_lease(
    records: MemoryRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler did not answer: "unknown" is never "gone"; the next poll asks again."""
    sp, backend = spawner_with("ok", records, tmp_path, monkeypatch)
    await sp.start()
    server = backend.instances[0]
    server.unknown("squeue timed out")
    for _ in range(3):
        assert await sp.poll() is None
    assert records.held_by(OWNER) == ["0", "1"]
    assert server.teardowns == 0 and server.stops == 0
    server.doubt = ""
    server.die()
    assert await sp.poll() == 0, "once it can tell, a dead server is gone"
    assert records.held_by(OWNER) == []

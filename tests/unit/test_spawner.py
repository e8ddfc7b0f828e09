"""MLRPSpawner without a hub: progress only shows the current spawn, state round-trips with its
version key, and form/API validation turns into 400 PlacementErrors."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from hub.storage import SQLRecords
from spawners.errors import PlacementError
from spawners.records import Event
from spawners.spawner import STATE_VERSION, MLRPSpawner

pytestmark = pytest.mark.unit

PROFILES = [
    {"slug": "cpu", "name": "CPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [0]},
    {"slug": "gpu", "name": "GPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [1, 2]},
]


@pytest.fixture()
def spawner(tmp_path: Path) -> MLRPSpawner:
    records = SQLRecords.from_url(f"sqlite:///{tmp_path / 'mlrp.sqlite'}")
    user = SimpleNamespace(name="alice", groups=[], admin=False, url="/user/alice/")
    return MLRPSpawner(
        user=user,
        records=records,
        profiles=PROFILES,
        gpu_source="config",
        gpu_devices=["0", "1"],
        log_dir=str(tmp_path / "logs"),
        enforce_limits=False,
    )


async def _collect(spawner: MLRPSpawner, seconds: float) -> list[str]:
    got: list[str] = []

    async def run() -> None:
        async for ev in spawner.progress():
            got.append(ev["message"])

    task = asyncio.create_task(run())
    await asyncio.sleep(seconds)
    task.cancel()
    return got


async def test_progress_never_replays_an_earlier_spawn(spawner: MLRPSpawner) -> None:
    old = Event("alice/", "old-spawn", datetime.now(), 100, "Earlier start failed", failed=True)
    spawner.platform.records.add_event(old)
    spawner.clear_state()  # what JupyterHub does before a new start
    assert await _collect(spawner, 0.3) == []
    spawner.spawn_id = "new-spawn"
    await spawner.emit(20, "Leased GPU 1 on this server.")
    assert await _collect(spawner, 0.3) == ["Leased GPU 1 on this server."]


def test_form_errors_are_400_sentences(spawner: MLRPSpawner) -> None:
    for form, text in (
        ({"profile": ["gpu"], "gpus-gpu": ["3"]}, "offers 1, 2 GPU(s)"),
        ({"profile": ["$(id)"]}, "There is no profile"),
        ({"profile": ["cpu"], "evil": ["1"]}, "Unexpected field"),
    ):
        with pytest.raises(PlacementError) as e:
            spawner.options_from_form(form)
        assert e.value.status_code == 400 and text in str(e.value)
    assert spawner.options_from_form({"profile": ["gpu"], "gpus-gpu": ["2"]}) == {
        "profile": "gpu",
        "gpus": 2,
    }


def test_state_without_our_version_key_is_ignored(spawner: MLRPSpawner) -> None:
    spawner.load_state({"mlrp": {"v": STATE_VERSION + 1, "profile": "cpu"}})
    assert spawner.backend is None
    spawner.load_state(
        {
            "mlrp": {
                "v": STATE_VERSION,
                "profile": "gpu",
                "gpus": 1,
                "backend": "local",
                "spawn_id": "s1",
                "placement": {"pid": 4242, "port": 5000, "unix_name": "", "gpus": ["1"]},
            }
        }
    )
    assert spawner.backend is not None and spawner.backend.gpus == ["1"]
    saved = spawner.get_state()["mlrp"]
    assert saved["profile"] == "gpu" and saved["placement"]["pid"] == 4242
    assert saved["placement"]["gpus"] == ["1"]

"""MLRPSpawner without a hub: progress only shows the current spawn, state round-trips with its
version key, and form/API validation turns into 400 PlacementErrors."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from hub.storage import SQLRecords
from spawners.errors import PlacementError
from spawners.records import Event
from spawners.spawner import STATE_VERSION, MLRPSpawner

pytestmark = pytest.mark.unit

PROFILES = [
    {"slug": "cpu", "name": "CPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [0]},
    {"slug": "gpu", "name": "GPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [1, 2]},
]


def _spawner(tmp_path: Path, profiles: list[dict[str, object]], **local: object) -> MLRPSpawner:
    records = SQLRecords.from_url(f"sqlite:///{tmp_path / 'mlrp.sqlite'}")
    user = SimpleNamespace(name="alice", groups=[], admin=False, url="/user/alice/")
    backend = {"gpu_source": "config", "gpu_devices": ["0", "1"], "enforce_limits": False}
    return MLRPSpawner(
        user=user,
        records=records,
        profiles=profiles,
        log_dir=str(tmp_path / "logs"),
        config=Config({"LocalBackend": {**backend, **local}}),
    )


@pytest.fixture()
def spawner(tmp_path: Path) -> MLRPSpawner:
    return _spawner(tmp_path, PROFILES)


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


V1_STATE = {
    "v": 1,
    "profile": "gpu",
    "gpus": 1,
    "backend": "local",
    "spawn_id": "s1",
    "placement": {"pid": 4242, "port": 5000, "unix_name": "", "gpus": ["1"]},
}


def test_state_of_the_previous_version_is_migrated_not_dropped(spawner: MLRPSpawner) -> None:
    """A hub upgraded while servers run: their version-1 state still finds each server."""
    spawner.load_state({"mlrp": V1_STATE})
    assert spawner.placed is not None and spawner.placed.gpus == ["1"]
    assert spawner.request is not None and spawner.request.gpus == 1
    saved = spawner.get_state()["mlrp"]
    assert saved["v"] == STATE_VERSION == 2
    assert saved["request"] == {"profile": "gpu", "gpus": 1}
    assert saved["placement"]["pid"] == 4242 and saved["placement"]["gpus"] == ["1"]


async def test_state_of_a_newer_version_is_kept_and_never_called_gone(
    spawner: MLRPSpawner,
) -> None:
    newer = {**V1_STATE, "v": STATE_VERSION + 1}
    spawner.load_state({"mlrp": newer})
    assert spawner.placed is None
    assert await spawner.poll() is None, "unreadable is not dead: the server is not stopped"
    assert spawner.get_state()["mlrp"] == newer, "handed back unchanged for a newer MLRP"


def test_state_without_our_key_places_nothing(spawner: MLRPSpawner) -> None:
    spawner.load_state({})
    assert spawner.placed is None and "mlrp" not in spawner.get_state()


# -- the curated image is checked against the node before anything starts --------------------
IMAGE_PROFILES = [
    {"slug": "jax", "name": "JAX", "image_env": "/opt/mlrp/venv", "gpu_choices": [1]}
    | {"catalog": "cuda-jax"},
    {"slug": "course", "name": "Course", "image_env": "/opt/mlrp/venv", "gpu_choices": [0]}
    | {"catalog": "course-cpu"},
]


def _image_spawner(tmp_path: Path, driver: str) -> MLRPSpawner:
    return _spawner(tmp_path, IMAGE_PROFILES, nvidia_driver=driver)


async def test_an_image_the_nodes_driver_cannot_run_is_refused_before_start(
    tmp_path: Path,
) -> None:
    spawner = _image_spawner(tmp_path, "535.104.05")
    with pytest.raises(PlacementError) as form:
        spawner.options_from_form({"profile": ["jax"]})
    assert form.value.status_code == 400 and form.value.failure_reason == "image"
    assert str(form.value).startswith("The image cuda-jax cannot run on this node: it ships")
    spawner.user_options = {"profile": "jax"}
    with pytest.raises(PlacementError, match="needs NVIDIA driver 575.51.03 or newer"):
        await spawner.start()
    assert spawner.placed is None  # refused before anything was placed
    assert spawner.image_refusal(spawner.visible_profiles()[1], 0) is None  # a CPU image runs


def test_a_new_enough_driver_passes_the_image_check(tmp_path: Path) -> None:
    spawner = _image_spawner(tmp_path, "580.65.06")
    assert spawner.options_from_form({"profile": ["jax"]})["profile"] == "jax"

"""Curated images built for real: the light course image as an environment (`mlrp images build
course-cpu --as env`), its promises checked inside, and the real hub starting a server from it
through the proxy; the MLX lock downloaded for macOS arm64.

Needs PyPI (the builds install the image's lock, hash-checked, as a site would).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Hub, running_hub, shared_dir
from image_probe import PROBE, build_env, expected_versions
from kernel import Kernel

from images.catalog import load
from images.lock import lock_path

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.images,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the hub creates Unix accounts"),
]

CATALOG = load()
COURSE = "course-cpu"
NODE_DRIVER = "535.104.05"  # supports CUDA up to 12.2: cuda-jax (CUDA 12.9) cannot run


@pytest.fixture(scope="module")
def course_env() -> Iterator[Path]:
    """course-cpu built as an environment by the mlrp command, where every account can read."""
    root = shared_dir("mlrp-image-")
    prefix = root / COURSE
    done = build_env(COURSE, prefix)
    try:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{COURSE}: environment at {prefix}"
        yield prefix
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _expected() -> dict[str, str]:
    return expected_versions(CATALOG, COURSE)


def test_the_environment_keeps_the_images_promises(course_env: Path) -> None:
    done = subprocess.run(
        [str(course_env / "bin" / "python"), "-c", PROBE], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["versions"] == _expected()
    assert got["prefix"] == str(course_env)
    marker = json.loads((course_env / "mlrp-image.json").read_text())
    assert marker == {"image": COURSE, "inputs": CATALOG.inputs_digest(COURSE)}
    singleuser = subprocess.run(
        [str(course_env / "bin" / "jupyterhub-singleuser"), "--version"],
        capture_output=True,
        text=True,
    )
    assert singleuser.stdout.strip() == CATALOG.stack["jupyterhub"]
    # Everyone can read and run it; only root can change it.
    assert (course_env / "bin" / "python").stat().st_mode & 0o005 == 0o005
    assert course_env.stat().st_uid == 0 and course_env.stat().st_mode & 0o022 == 0


@pytest.fixture(scope="module")
def hub(course_env: Path) -> Iterator[Hub]:
    def configure(h: Hub) -> None:
        h.config["images"]["course"] = {"env": str(course_env), "catalog": COURSE}
        # An environment said to be the JAX image (never started: refused before that).
        h.config["images"]["jax"] = {"env": str(course_env), "catalog": "cuda-jax"}
        h.config["gpus"]["driver"] = NODE_DRIVER  # the fake GPUs' driver, as NVML would say
        h.config["profiles"] += [
            {"slug": "course", "name": "Course", "image": "course", "gpus": 1, "cpus": 1},
            {"slug": "jax", "name": "JAX", "image": "jax", "gpus": 1, "cpus": 1},
        ]

    with running_hub(configure=configure) as h:
        yield h


def test_the_hub_starts_a_server_from_the_environment(hub: Hub, course_env: Path) -> None:
    r = hub.start_server("alice", profile="course")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    with Kernel(hub, "alice", hub.user_token("alice")) as k:  # through the proxy
        got = k.run_json(PROBE, timeout=120)
    assert got["versions"] == _expected()
    assert got["prefix"] == str(course_env)  # the kernel runs from the image, not the platform
    assert got["uid"] == pwd.getpwnam(hub.unix_accounts()["alice"]).pw_uid
    leased = [device for device, owner in hub.leases().items() if owner.startswith("alice/")]
    assert got["cuda"] == ",".join(leased) and len(leased) == 1
    hub.stop_server("alice")


def test_an_image_the_driver_cannot_run_is_refused_before_anything_starts(hub: Hub) -> None:
    r = hub.start_server("bob", profile="jax")
    assert r.status_code == 400, r.text
    assert r.json()["message"] == (
        "The image cuda-jax cannot run on this node: it ships CUDA 12.9, which needs NVIDIA "
        "driver 575.51.03 or newer, and the driver there is 535.104.05 (which supports CUDA up "
        "to 12.2). Images that can: course-cpu."
    )
    assert not [o for o in hub.leases().values() if o.startswith("bob/")]
    assert "" not in hub.api("GET", "/users/bob").json().get("servers", {})
    assert "bob" not in hub.unix_accounts()  # nothing was made for a refused start


def test_the_form_shows_each_image_and_disables_the_one_the_driver_cannot_run(hub: Hub) -> None:
    page = hub.login_session("bob", hub.passwords["bob"]).get(f"{hub.url}/hub/spawn", timeout=30)
    assert page.status_code == 200
    html = " ".join(page.content.decode("utf-8").split())  # one space for each run of blanks
    course = html[html.index('data-profile="course"') :]
    course = course[: course.index("</div> </div>")]
    assert 'data-image="course-cpu"' in course
    assert "Image: <strong>Course (CPU)</strong>" in course
    assert "· CPU · numpy 2.4.6, pandas 3.1.1, matplotlib 3.11.2, scikit-learn 1.9.1 ·" in course
    assert "starts in about 3 s" in course
    jax = html[html.index('data-profile="jax"') :]
    jax = jax[: jax.index("</div> </div>")]
    assert "NVIDIA GPU, CUDA 12.9 · jax 0.5.3" in jax
    assert 'id="profile-jax"' in jax and "disabled" in jax.split('id="profile-jax"')[1][:200]
    assert (
        "The image cuda-jax cannot run on this node: it ships CUDA 12.9, which needs NVIDIA "
        "driver 575.51.03 or newer" in jax
    )
    assert "Pick another profile." in jax


@pytest.mark.parametrize(
    "body",
    [
        {"profile": "course", "image": "cuda-jax"},
        {"profile": "course", "image_env": "/opt/mlrp/venv"},
        {"profile": "course", "catalog": "cuda-full"},
    ],
)
def test_a_post_naming_another_image_is_refused(hub: Hub, body: dict[str, str]) -> None:
    r = hub.api("POST", "/users/bob/server", json=body)
    assert r.status_code == 400, r.text
    key = next(k for k in body if k != "profile")
    assert r.json()["message"].startswith(f"Unknown option(s) ['{key}']; allowed are"), r.text
    assert "" not in hub.api("GET", "/users/bob").json().get("servers", {})


def test_the_mlx_lock_resolves_for_macos_arm64(tmp_path: Path) -> None:
    lock = lock_path("mlx")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes"]
        + ["--only-binary=:all:", "--platform", "macosx_14_0_arm64", "--python-version", "3.11"]
        + ["--implementation", "cp", "-d", str(tmp_path), "-r", str(lock)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = sorted(p.name for p in tmp_path.iterdir())
    pinned = [line for line in lock.read_text().splitlines() if "==" in line]
    assert len(wheels) == len(pinned)
    assert any(w.startswith("mlx-0.29.3-") and "macosx" in w and "arm64" in w for w in wheels)

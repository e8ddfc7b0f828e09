"""Environment-image spawn against the default environment's spawn, on our hub, in one run.

The curated course image is built as an environment (`mlrp images build course-cpu --as env`),
and one profile starts JupyterLab from it, another from the default environment (the venv MLRP
runs from), with the same resources (1 CPU, 2G, no GPU), for the same person. Interleaved rounds
(the order alternating) of POST /hub/api/users/solo/server until ready
(vanilla_hub.spawn_until_ready), each stopped before the next. The target: the image's spawn
within 5 % of the default's. Printed, never asserted; asserted: each server ran from the
environment its profile names, and nothing of the account is left after the stops.

Run: pytest tests/benchmarks/test_bench_images.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import os
import pwd
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import VENV, Hub, pids_of_uid, running_hub, shared_dir
from image_probe import build_env
from vanilla_hub import spawn_until_ready

pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.images,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the hub creates Unix accounts"),
]

ROUNDS = int(os.environ.get("MLRP_BENCH_IMAGES_ROUNDS", "5"))
TARGET = 0.05  # the image's spawn within 5 % of the default environment's
PROFILES = {"default": "cpu-default", "course-cpu": "cpu-course"}


@pytest.fixture(scope="module")
def course_env() -> Iterator[Path]:
    root = shared_dir("mlrp-bench-image-")
    prefix = root / "course-cpu"
    done = build_env("course-cpu", prefix)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        yield prefix
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(course_env: Path) -> Iterator[Hub]:
    def configure(h: Hub) -> None:
        h.config["images"]["course"] = {"env": str(course_env), "catalog": "course-cpu"}
        same = {"gpus": 0, "cpus": 1, "memory": "2G"}
        h.config["profiles"] += [
            {"slug": "cpu-default", "name": "Default environment", **same},
            {"slug": "cpu-course", "name": "Course image", "image": "course", **same},
        ]
        h.config["hub"]["start_timeout"] = 120

    with running_hub(users=("solo",), configure=configure) as h:
        h.login_session("solo", h.passwords["solo"])
        h.admin_token()
        yield h


def _server_script(uid: int) -> str:
    """The jupyterhub-singleuser script the account's server runs (its argv[1])."""
    for pid in pids_of_uid(uid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1].endswith(b"/jupyterhub-singleuser"):
            return argv[1].decode()
    return ""


def _stop(hub: Hub, uid: int) -> None:
    hub.stop_server("solo")
    deadline = time.monotonic() + 30
    while list(pids_of_uid(uid)):
        assert time.monotonic() < deadline, "the account still has processes after the stop"
        time.sleep(0.1)


def test_image_spawn_vs_default_environment(hub: Hub, course_env: Path) -> None:
    envs = {"default": VENV, "course-cpu": course_env}
    times: dict[str, list[float]] = {k: [] for k in PROFILES}
    uid = -1
    for rnd in range(ROUNDS + 1):  # round 0 warms both up (and creates the account)
        order = list(PROFILES) if rnd % 2 == 0 else list(reversed(PROFILES))
        for image in order:
            took = spawn_until_ready(
                hub.url, hub.admin_token(), "solo", {"profile": PROFILES[image]}, 180
            )
            uid = pwd.getpwnam(hub.unix_accounts()["solo"]).pw_uid
            script = _server_script(uid)
            assert script == f"{envs[image]}/bin/jupyterhub-singleuser", (image, script)
            if rnd > 0:
                times[image].append(took)
            _stop(hub, uid)
    default, course = times["default"], times["course-cpu"]
    ratio = statistics.median(course) / statistics.median(default)
    print(f"\n== spawn from an image environment vs the default environment, {ROUNDS} rounds ==")
    print(f"{'seconds':32} {'median':>8} {'mean':>8} {'min':>8} {'max':>8}")
    for label, xs in (("default environment (/opt venv)", default), ("course-cpu image", course)):
        print(
            f"{label:32} {statistics.median(xs):8.3f} {statistics.mean(xs):8.3f} "
            f"{min(xs):8.3f} {max(xs):8.3f}"
        )
    verdict = "within" if abs(ratio - 1) <= TARGET else "OUTSIDE"
    print(f"course-cpu/default (medians): {ratio:.3f} (target within {TARGET:.0%}: {verdict})")
    print("both: POST -> ready on our hub, profile 1 CPU / 2G, no GPU, the same account")
    assert not list(pids_of_uid(uid))

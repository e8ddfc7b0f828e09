"""The light course image built for real as a container image (`mlrp images build course-cpu
--as container`) with Podman, FROM the local base (no registry is reachable here), and its
promises checked in a container: imports and versions, a non-root user, jupyterhub-singleuser,
the labels that tie it to the catalog.

Needs PyPI (the build installs the image's lock, hash-checked) and Podman (tests/containers.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from containers import BASE_IMAGE, Podman
from harness import REPO, code_env
from image_probe import PROBE, expected_versions

from images.build import container_tag
from images.catalog import load
from images.render import ENV_PREFIX, USER_UID

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.images,
    pytest.mark.containers,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: Podman runs rootful here"),
]

CATALOG = load()
COURSE = "course-cpu"


def build(podman: Podman, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**code_env(), **{k: v for k, v in podman.env.items() if k.startswith("CONTAINERS_")}}
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "images", "build", COURSE, "--as", "container", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def course_image(podman: Podman) -> str:
    done = build(podman, "--base", BASE_IMAGE)
    assert done.returncode == 0, done.stderr[-3000:]
    tag = container_tag(CATALOG, COURSE)
    assert done.stdout.strip() == f"{COURSE}: container image {tag}"
    return tag


def test_the_container_image_is_the_catalogs_and_runs_as_non_root(
    podman: Podman, course_image: str
) -> None:
    inspected = podman.run("image", "inspect", course_image)
    assert inspected.returncode == 0, inspected.stderr
    config = json.loads(inspected.stdout)[0]["Config"]
    assert config["User"] == str(USER_UID)
    assert config["Cmd"] == ["jupyterhub-singleuser"]
    labels = config["Labels"]
    assert labels["org.mlrp.image"] == COURSE
    assert labels["org.mlrp.inputs"] == CATALOG.inputs_digest(COURSE)
    assert labels["org.opencontainers.image.title"] == CATALOG.images[COURSE].title


def test_the_container_keeps_the_images_promises(podman: Podman, course_image: str) -> None:
    ran = podman.run("run", "--rm", "--network", "none", course_image, "python", "-c", PROBE)
    assert ran.returncode == 0, ran.stderr[-3000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["versions"] == expected_versions(CATALOG, COURSE)
    assert got["prefix"] == ENV_PREFIX
    assert got["uid"] == USER_UID
    version = podman.run(
        "run", "--rm", "--network", "none", course_image, "jupyterhub-singleuser", "--version"
    )
    assert version.stdout.strip() == CATALOG.stack["jupyterhub"], version.stderr
    # The build's CA bundle and pip.conf were mounted for the build only: nothing of them (at
    # most the empty mount point) and no pip setting is left in the image.
    script = "ls -A /run/mlrp-build 2>/dev/null; echo pip:$PIP_CONFIG_FILE; ls /etc/pip.conf"
    leftovers = podman.run("run", "--rm", "--network", "none", course_image, "sh", "-c", script)
    assert leftovers.stdout.split() == ["pip:"], leftovers.stdout


def test_a_base_that_does_not_exist_is_a_sentence(podman: Podman) -> None:
    done = build(podman, "--base", "localhost/mlrp-no-such-base:1")
    assert done.returncode == 2
    assert done.stderr.startswith("mlrp: Building the container image of course-cpu failed:")
    assert "Traceback" not in done.stderr

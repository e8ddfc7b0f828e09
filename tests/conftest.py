"""Shared fixtures. Integration tests start a real hub (tests/harness.py) and need root."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Hub, running_hub  # noqa: E402

if TYPE_CHECKING:
    from containers import Podman
    from playwright.sync_api import Browser
    from slurm import SlurmCluster

    from hub.storage import SQLRecords

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the hub creates Unix accounts and setuid()s to them"
)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A fresh MLRP SQLite database URL."""
    from hub.storage import sqlite_url

    return sqlite_url(tmp_path)


@pytest.fixture
def records(url: str) -> SQLRecords:
    """SQLRecords on a fresh database (migrations applied)."""
    from hub.storage import SQLRecords

    return SQLRecords.from_url(url)


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """A running hub with a 4-GPU configured inventory and users alice, bob (students)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts and setuid()s to them")
    with running_hub() as h:
        yield h


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (tests/browser.py), one per test module."""
    from browser import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real private Slurm cluster (tests/slurm.py), started when a test first asks for it and
    stopped, by PID, at the end of the run. Mark tests that use it `pytest.mark.slurm`."""
    from slurm import missing_packages, start_cluster

    if os.geteuid() != 0:
        pytest.skip("needs root: the Slurm daemons run as root and jobs run as test accounts")
    missing = missing_packages()
    if missing:
        pytest.skip(
            f"real Slurm needs the Debian package(s) {', '.join(missing)};"
            " `bash hub/bootstrap.sh test` installs them"
        )
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """A private Podman (tests/containers.py) with the local base image, for the run; its
    containers, images and storage are removed at the end."""
    from containers import podman_missing, private_podman
    from harness import TEST_ROOT

    if os.geteuid() != 0:
        pytest.skip("needs root: Podman runs rootful here (no user namespaces for others)")
    if podman_missing():
        pytest.fail("podman or debootstrap is missing: `bash hub/bootstrap.sh test` installs them")
    TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    with private_podman(TEST_ROOT) as p:
        yield p


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Benchmarks print their tables straight to the terminal, so CI logs carry the numbers.

    trylast makes this the innermost wrapper, inside the one that captures output."""
    if item.get_closest_marker("benchmark"):
        capman = item.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            yield
    else:
        yield

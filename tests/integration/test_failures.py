"""Failures free what they took: a server that dies during start-up fails fast with its log's
last lines and releases its GPU; a server that dies while running is noticed by polling and its
GPU is freed without anyone pressing Stop."""

from __future__ import annotations

import os
import signal
import time

import pytest
from harness import Hub

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]


def test_failed_start_fails_fast_releases_the_gpu_and_stays_visible(hub: Hub) -> None:
    t0 = time.monotonic()
    r = hub.api("POST", "/users/admin/server", json={"profile": "broken"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert "JupyterLab exited during start-up (exit status 3)" in message
    assert "ImportError: no module named jupyterlab" in message, "the log's tail is shown"
    assert elapsed < 20, "a dead process fails the spawn at once, not at start_timeout"
    assert "admin/" not in hub.leases().values(), "the GPU leased for it is free again"
    assert hub.api("GET", "/users/admin").json()["servers"] == {}
    session = hub.login_session("admin", hub.admin_password)
    form = session.get(f"{hub.url}/hub/spawn").text
    assert 'id="mlrp-last-failure"' in form and "exit status 3" in form


def test_server_dying_while_running_frees_its_gpu(hub: Hub) -> None:
    r = hub.start_server("alice", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    assert "alice/" in hub.leases().values()
    os.kill(hub.server_pid("alice"), signal.SIGKILL)
    deadline = time.monotonic() + 30  # poll_interval is 2 s in tests
    while "alice/" in hub.leases().values() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "alice/" not in hub.leases().values()
    assert hub.api("GET", "/users/alice").json()["servers"] == {}

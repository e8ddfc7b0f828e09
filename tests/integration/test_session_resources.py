"""Inside a session, a person sees and gets their limits: a real hub, real JupyterLab servers of
the 1-CPU, 2 GiB "CPU only" profile, code run as the user in a real kernel, and JupyterLab's own
resource display (jupyter-resource-usage, from the default image) read over its API and in
Chromium."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator

import pytest
import requests
from harness import Hub
from kernel import Kernel
from playwright.sync_api import Browser

pytestmark = [pytest.mark.e2e]

CPUS, MEMORY = 1, 2 * 2**30  # the "cpu" profile of harness.base_config
NODE = sorted(os.sched_getaffinity(0))  # the CPUs the hub (started from here) may use

PROBE = """
import json, os, subprocess
import numpy  # loads its BLAS, so threadpoolctl finds it
from threadpoolctl import threadpool_info
print(json.dumps({
    "omp": os.environ.get("OMP_NUM_THREADS"),
    "affinity": sorted(os.sched_getaffinity(0)),
    "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
    "blas": [(i["internal_api"], i["num_threads"]) for i in threadpool_info()
             if i["user_api"] == "blas"],
}))
"""
LAB_TIMEOUT_MS = 90_000  # generous: the CI machine has 2 cores
# jupyter-resource-usage's status bar item: "CPU: 3.00 % | Mem: 115.92 / 2048.00 MB" (MB of
# 2**20 bytes), CPU shown because the server was told to track it.
STATUS_TEXT = re.compile(r"CPU: [\d.]+ %.*Mem: [\d.]+ / 2048(\.00)? MB")


@pytest.fixture(scope="module")
def running(hub: Hub) -> Iterator[Hub]:
    """alice's and bob's "CPU only" servers, started one after the other."""
    try:
        for name in ("alice", "bob"):
            r = hub.start_server(name, profile="cpu")
            assert r.status_code in (201, 202), r.text
        yield hub
    finally:
        for name in ("alice", "bob"):
            if hub.api("GET", f"/users/{name}").json().get("servers"):
                hub.stop_server(name)


def test_a_one_cpu_session_sees_one_cpu_and_its_blas_starts_one_thread(running: Hub) -> None:
    seen = {}
    for name in ("alice", "bob"):
        with Kernel(running, name, running.user_token(name)) as k:
            seen[name] = k.run_json(PROBE)
    for name, got in seen.items():
        assert got["omp"] == "1", (name, got)
        assert got["nproc"] == "1", (name, got)
        assert got["blas"], f"numpy in {name}'s kernel has no BLAS threadpoolctl can see: {got}"
        assert all(threads == 1 for _, threads in got["blas"]), (name, got["blas"])
        if len(NODE) > 1:
            assert len(got["affinity"]) == 1, f"{name} is not pinned: {got['affinity']}"
        else:
            assert got["affinity"] == NODE
    if len(NODE) > 1:
        assert seen["alice"]["affinity"] != seen["bob"]["affinity"], "both on one CPU"


def test_the_resource_display_reports_the_profiles_limits(running: Hub) -> None:
    token = running.user_token("alice")
    r = requests.get(
        f"{running.url}/user/alice/api/metrics/v1",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    metrics = r.json()
    assert metrics["limits"]["memory"]["rss"] == MEMORY, metrics
    assert math.isclose(metrics["limits"]["cpu"]["cpu"], CPUS), metrics
    assert "cpu_percent" in metrics, "CPU use is tracked"
    assert "warn" not in metrics["limits"]["cpu"], "no false CPU warning (see DISPLAY_ARGS)"
    assert 0 < metrics["rss"] < MEMORY


@pytest.mark.browser
def test_jupyterlab_shows_the_memory_limit_in_its_status_bar(
    running: Hub, browser: Browser
) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{running.url}/hub/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", running.passwords["alice"])
    page.click("#login_submit")
    page.wait_for_load_state()
    page.goto(f"{running.url}/user/alice/lab")
    bar = page.locator("#jp-main-statusbar")
    bar.wait_for(timeout=LAB_TIMEOUT_MS)
    deadline = time.monotonic() + 30  # the display refreshes every 5 s
    text = ""
    while time.monotonic() < deadline:
        text = bar.inner_text()
        if STATUS_TEXT.search(text):
            break
        time.sleep(0.5)
    assert STATUS_TEXT.search(text), f"status bar: {text!r}"
    page.context.close()

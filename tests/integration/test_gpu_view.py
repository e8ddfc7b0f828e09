"""Who holds which GPU (issue 14): `mlrp gpus`, the admin page /hub/mlrp/gpus and the "GPUs held"
table on JupyterHub's own admin page list the holder, profile and start of each leased
(configured) GPU, with its utilisation, memory and processes where NVML is present; anyone else
gets 403.

This machine has no GPU driver: the module hub shows the real "no NVML" case. A second hub gets
tests/fake_nvml.py as its `pynvml` (the boundary: NVML's C library; everything above it is real)
to show usage and processes, with the Unix accounts of real user servers.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from fake_nvml import FakeGPU, FakeProcess, hang_path, install_for_hub, write_gpus
from harness import Hub, new_hub, readable_copy
from playwright.sync_api import Browser, Page

# `hub`: conftest.py's module hub (4 GPUs, alice and bob)
pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]

HOSTILE = '<img src=x onerror="window.mlrpPwned=1">'  # a lease owner is data, never markup


def table_rows(stdout: str, count: int) -> dict[str, list[str]]:
    """`mlrp gpus` rows by GPU id (the table's first `count` rows after the header)."""
    lines = [line for line in stdout.splitlines()[1:] if not line.startswith(" ")]
    return {line.split()[0]: line.split() for line in lines[:count]}


def lease_for(hub: Hub, owner: str) -> str:
    (gpu,) = [d for d, o in hub.leases().items() if o == owner]
    return gpu


def test_mlrp_gpus_and_the_admin_page_show_the_holders(hub: Hub) -> None:
    r = hub.start_server("alice", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    gpu = lease_for(hub, "alice/")
    try:
        out = hub.mlrp("gpus", "--config", str(hub.config_path))
        assert out.returncode == 0, out.stderr
        rows = table_rows(out.stdout, 4)
        assert rows[gpu][1:3] == ["alice", "gpu1"], out.stdout
        assert all(rows[d][1] == "free" for d in rows if d != gpu), out.stdout
        assert all(" ".join(row[-3:]) == "n/a (no NVML)" for row in rows.values()), out.stdout
        assert out.stdout.splitlines()[-1] == "1 of 4 GPU(s) leased"

        as_json = hub.mlrp("gpus", "--json", "--config", str(hub.config_path))
        view = json.loads(as_json.stdout)
        assert view["nvml"]["state"] == "absent"
        assert [(s["user"], s["gpus"], s["profile"]) for s in view["servers"]] == [
            ("alice", [gpu], "gpu1")
        ]

        admin = hub.login_session("admin", hub.admin_password)
        page = admin.get(f"{hub.url}/hub/mlrp/gpus", timeout=30)
        assert page.status_code == 200
        assert f"<td>{gpu}</td><td>alice</td><td>gpu1</td>" in page.text
        assert "<td>n/a (no NVML)</td><td>n/a (no NVML)</td><td>n/a (no NVML)</td>" in page.text
        page_json = admin.get(f"{hub.url}/hub/mlrp/gpus?format=json", timeout=30)
        assert page_json.headers["Content-Type"].startswith("application/json")
        assert page_json.json()["servers"] == view["servers"]
        bad = admin.get(f"{hub.url}/hub/mlrp/gpus?format=xml", timeout=30)
        assert (
            bad.status_code == 400 and "format must be &#39;html&#39; or &#39;json&#39;" in bad.text
        )

        bob = hub.login_session("bob", hub.passwords["bob"])
        for path in ("/hub/mlrp/gpus", "/hub/mlrp/gpus?format=json"):
            refused = bob.get(f"{hub.url}{path}", timeout=30)
            assert refused.status_code == 403 and "alice" not in refused.text
        anonymous = requests.get(f"{hub.url}/hub/mlrp/gpus", allow_redirects=False, timeout=30)
        assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]
    finally:
        hub.stop_server("alice")
    out = hub.mlrp("gpus", "--config", str(hub.config_path))
    assert out.stdout.splitlines()[-1] == "0 of 4 GPU(s) leased"


# -- JupyterHub's admin page -------------------------------------------------------------------
def admin_page(hub: Hub, browser: Browser) -> Page:
    page = browser.new_context().new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", hub.admin_password)
    page.click("form [type=submit]")
    page.wait_for_load_state()
    page.goto(f"{hub.url}/hub/admin")
    return page


@pytest.fixture
def hostile_lease(hub: Hub) -> Iterator[str]:
    """A lease whose owner is markup, on a free GPU, as if a hostile name got into the records."""
    gpu = sorted(set(hub.config["gpus"]["devices"]) - set(hub.leases()))[-1]
    with hub.db() as c:
        c.execute(
            "INSERT INTO gpu_leases (node, device, owner, since) VALUES (?, ?, ?, ?)",
            (socket.gethostname(), gpu, f"{HOSTILE}/", datetime.now(UTC).replace(tzinfo=None)),
        )
    try:
        yield gpu
    finally:
        with hub.db() as c:
            c.execute("DELETE FROM gpu_leases WHERE owner = ?", (f"{HOSTILE}/",))


@pytest.mark.browser
def test_the_admin_page_lists_the_gpus_each_server_holds(
    hub: Hub, browser: Browser, hostile_lease: str
) -> None:
    r = hub.start_server("alice", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    gpu = lease_for(hub, "alice/")
    try:
        page = admin_page(hub, browser)
        held = page.locator("#mlrp-gpus-held tbody tr")
        held.first.wait_for(timeout=30_000)
        cells = [row.locator("td").all_inner_texts() for row in held.all()]
        # Holder, server, GPUs, since, profile
        assert [c[:3] + c[4:] for c in cells if c[0] == "alice"] == [
            ["alice", "(default)", gpu, "gpu1"]
        ], cells
        assert page.locator("#mlrp-gpus-held-status").inner_text() == "2 of 4 GPU(s) leased."
        # The hostile owner is shown as text, and nothing of it ran.
        assert [c[2] for c in cells if c[0] == HOSTILE] == [hostile_lease], cells
        assert page.locator("#mlrp-gpus-held img").count() == 0
        assert page.evaluate("window.mlrpPwned") is None
        assert page.locator("#mlrp-gpus-held a").get_attribute("href") == "/hub/mlrp/gpus"
        admin = hub.login_session("admin", hub.admin_password)
        listed = admin.get(f"{hub.url}/hub/mlrp/gpus", timeout=30).text
        assert "<td>&lt;img src=x onerror=" in listed and "<img src=x" not in listed
        # JupyterHub's own React app still renders below, with its user list.
        page.locator("#react-admin-hook").get_by_text("alice").first.wait_for(timeout=30_000)
        bob = hub.login_session("bob", hub.passwords["bob"])
        refused = bob.get(f"{hub.url}/hub/admin", timeout=30)
        assert refused.status_code == 403 and "mlrp-gpus-held" not in refused.text
    finally:
        hub.stop_server("alice")


# -- with NVML (the fake, in a real hub) -------------------------------------------------------
IDLE_IDS = [f"GPU-{i}0000000-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]
IDLE = [FakeGPU(uuid, minor=i) for i, uuid in enumerate(IDLE_IDS)]


@pytest.fixture(scope="module")
def nvml_hub() -> Iterator[tuple[Hub, Path]]:
    h = new_hub()
    try:
        code = readable_copy(h.workdir / "code")
        gpus_file = h.workdir / "nvml.json"
        install_for_hub(code, gpus_file, IDLE)
        h.code = code
        h.start()
        h.add_user("alice")
        h.add_user("bob")
        yield h, gpus_file
    finally:
        h.cleanup()
        shutil.rmtree(h.workdir, ignore_errors=True)


def test_usage_and_processes_show_who_really_uses_a_gpu(nvml_hub: tuple[Hub, Path]) -> None:
    hub, gpus_file = nvml_hub
    assert hub.start_server("alice", profile="gpu1").status_code in (201, 202)
    assert hub.start_server("bob", profile="cpu").status_code in (201, 202)
    try:
        held = lease_for(hub, "alice/")
        unleased = next(d for d in hub.config["gpus"]["devices"] if d != held)
        accounts = hub.unix_accounts()
        gpus = list(IDLE)
        gpus[int(held)] = replace(
            IDLE[int(held)],
            utilization=87,
            memory_used_mib=30720,
            processes=(FakeProcess(hub.server_pid("alice"), 30000),),
        )
        gpus[int(unleased)] = replace(
            IDLE[int(unleased)],
            utilization=55,
            processes=(FakeProcess(hub.server_pid("bob"), 900),),
        )
        write_gpus(gpus_file, gpus)

        out = hub.mlrp("gpus", "--config", str(hub.config_path))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        rows = table_rows(out.stdout, 4)
        assert rows[held][1:3] == ["alice", "gpu1"] and rows[held][-5:] == [
            "87%,",
            "30.0",
            "/",
            "79.6",
            "GiB",
        ], out.stdout
        mine = lines.index(next(line for line in lines if line.startswith(held + " ")))
        assert lines[mine + 1].split() == [
            "processes:",
            accounts["alice"],
            "(pid",
            f"{hub.server_pid('alice')},",
            "29.3",
            "GiB)",
        ], out.stdout
        assert (
            f"GPU {unleased} is free but in use without a lease: {accounts['bob']} "
            f"(pid {hub.server_pid('bob')}, 900 MiB)." in out.stdout
        ), out.stdout
        assert max(map(len, lines)) <= 100

        admin = hub.login_session("admin", hub.admin_password)
        view = admin.get(f"{hub.url}/hub/mlrp/gpus?format=json", timeout=30).json()
        by_gpu = {g["gpu"]: g for g in view["gpus"]}
        assert view["nvml"] == {"state": "ok", "error": ""}
        assert by_gpu[unleased]["used_without_lease"] is True
        assert by_gpu[held]["processes"] == [
            {"pid": hub.server_pid("alice"), "account": accounts["alice"], "used_mib": 30000}
        ]
        page = admin.get(f"{hub.url}/hub/mlrp/gpus", timeout=30).text
        assert f"<td>{held}</td><td>alice</td><td>gpu1</td>" in page
        assert "<td>87%</td><td>30.0 / 79.6 GiB</td>" in page
        assert f"{accounts['bob']} (pid {hub.server_pid('bob')}, 900 MiB) <strong" in page
    finally:
        hub.stop_server("alice")
        hub.stop_server("bob")


def test_a_hung_nvml_leaves_the_hub_answering(nvml_hub: tuple[Hub, Path]) -> None:
    """NVML is synchronous: the page waits for it a few seconds at most, off the event loop, so
    every other request is answered meanwhile; once NVML answers again, so does the page."""
    hub, gpus_file = nvml_hub
    admin = hub.login_session("admin", hub.admin_password)
    hang = hang_path(gpus_file)
    hang.touch()
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            page = pool.submit(admin.get, f"{hub.url}/hub/mlrp/gpus", timeout=60)
            waits = []
            while not page.done():
                t0 = time.monotonic()
                assert requests.get(f"{hub.url}/hub/api", timeout=10).status_code == 200
                waits.append(time.monotonic() - t0)
                time.sleep(0.1)
            answered = page.result()
        assert answered.status_code == 200 and time.monotonic() - started < 15
        assert "<td>n/a (NVML did not answer)</td>" in answered.text
        assert f"<td>{IDLE_IDS[0]}</td>" not in answered.text  # configured ids, as the hub has
        assert waits and max(waits) < 1.0, waits  # the event loop never stalled on NVML
    finally:
        hang.unlink()
    deadline = time.monotonic() + 30
    while "<td>0%</td>" not in admin.get(f"{hub.url}/hub/mlrp/gpus", timeout=30).text:
        assert time.monotonic() < deadline, "the page did not recover after NVML answered"
        time.sleep(0.5)

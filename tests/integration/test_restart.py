"""Hub restart with running servers: the survivors are re-adopted with their GPU leases; a server
killed while the hub was down is cleaned up and its lease freed; a lease no server holds (the hub
died between lease and start) is freed at start-up. A hub killed (SIGKILL) in the middle of a
start finds the server again from its checkpoint: re-adopted if it comes up, else cleaned."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests
from harness import Hub, gate_path, running_hub

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]


@pytest.fixture()
def restart_hub() -> Iterator[Hub]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts and setuid()s to them")
    with running_hub() as h:
        yield h


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reachable(hub: Hub, name: str, token: str) -> int:
    r = requests.get(
        f"{hub.url}/user/{name}/api/status",
        headers={"Authorization": f"token {token}"},
        timeout=10,
    )
    return r.status_code


def test_restart_readopts_survivors_and_cleans_up_the_dead(restart_hub: Hub) -> None:
    hub = restart_hub
    for name in ("alice", "bob"):
        r = hub.start_server(name, profile="gpu1")
        assert r.status_code in (201, 202), r.text
    leases_before = hub.leases()
    assert sorted(leases_before.values()) == ["alice/", "bob/"]
    alice_pid, bob_pid = hub.server_pid("alice"), hub.server_pid("bob")
    assert alice_pid and bob_pid and _alive(alice_pid) and _alive(bob_pid)
    alice_token = hub.user_token("alice")
    assert _reachable(hub, "alice", alice_token) == 200

    # A lease with no server behind it, as if the hub died between leasing and starting.
    with hub.db() as c:
        c.execute(
            "INSERT INTO gpu_leases (node, device, owner, since) "
            "SELECT node, '3', 'ghost/', ? FROM gpu_leases LIMIT 1",
            (datetime.now(),),
        )
    assert hub.leases()["3"] == "ghost/"

    hub.stop()
    assert _alive(alice_pid), "stopping the hub must not stop user servers"
    os.kill(bob_pid, signal.SIGKILL)  # bob's server dies while the hub is down
    deadline = time.monotonic() + 10
    while _alive(bob_pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    hub.start()
    # The second `mlrp up` keeps the data: the admin's password is not generated again.
    assert hub.log().count("password:  ") == 1
    assert "password set earlier" in hub.log()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bob = hub.api("GET", "/users/bob").json()
        if not bob.get("servers"):
            break
        time.sleep(0.2)
    leases_after = hub.leases()

    # alice: same process, same GPU, reachable through the new proxy.
    alice = hub.api("GET", "/users/alice").json()
    assert alice["servers"][""]["ready"] is True
    assert hub.server_pid("alice") == alice_pid
    device = next(d for d, o in leases_before.items() if o == "alice/")
    assert leases_after.get(device) == "alice/"
    assert _reachable(hub, "alice", alice_token) == 200

    # bob: noticed dead, stopped, GPU freed. The ghost lease is gone too.
    assert bob.get("servers") == {}, bob
    assert "bob/" not in leases_after.values()
    assert "ghost/" not in leases_after.values()
    assert leases_after == {device: "alice/"}

    # The freed GPU can be leased again, and not the one alice holds.
    r = hub.start_server("bob", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    bob_device = next(d for d, o in hub.leases().items() if o == "bob/")
    assert bob_device != device


def _kill_hub(hub: Hub) -> None:
    """SIGKILL the hub; Hub.kill stops by PID the proxy and services it left."""
    hub.kill()


def _start_gated(hub: Hub) -> int:
    """admin starts the gated profile; returns the server's pid once its process runs (the
    checkpoint is written) while it still waits at the closed gate."""
    gate = gate_path(hub.data_dir)
    gate.unlink(missing_ok=True)
    r = hub.api("POST", "/users/admin/server", json={"profile": "gated"})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with hub.db() as c:
            row = c.execute("SELECT state FROM server_checkpoints WHERE owner='admin/'").fetchone()
        if row and json.loads(row[0])["placement"].get("pid"):
            return int(json.loads(row[0])["placement"]["pid"])
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint with a pid:\n{hub.log()[-2000:]}")


def test_a_hub_killed_mid_start_re_adopts_a_server_that_comes_up(restart_hub: Hub) -> None:
    hub = restart_hub
    pid = _start_gated(hub)
    device = next(d for d, o in hub.leases().items() if o == "admin/")
    _kill_hub(hub)
    gate_path(hub.data_dir).touch()  # the server comes up while no hub runs
    hub.start()
    server = hub.wait_ready("admin", timeout=60)
    assert server["url"] == "/user/admin/"
    assert hub.server_pid("admin") == pid or _alive(pid), "the same process, re-adopted"
    assert hub.leases().get(device) == "admin/", "it keeps its GPU"
    assert _reachable(hub, "admin", hub.user_token("admin")) == 200
    hub.stop_server("admin")
    assert "admin/" not in hub.leases().values()


def test_a_hub_killed_mid_start_cleans_a_server_that_never_came_up(restart_hub: Hub) -> None:
    hub = restart_hub
    pid = _start_gated(hub)
    _kill_hub(hub)
    hub.start()  # the gate stays closed: the server never answers
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        servers = hub.api("GET", "/users/admin").json().get("servers", {})
        if not servers and "admin/" not in hub.leases().values() and not _alive(pid):
            break
        time.sleep(0.5)
    assert hub.api("GET", "/users/admin").json().get("servers") == {}
    assert "admin/" not in hub.leases().values(), "its GPU is freed"
    assert not _alive(pid), "its process is ended, never orphaned"
    with hub.db() as c:
        assert c.execute("SELECT count(*) FROM server_checkpoints").fetchone()[0] == 0


def test_an_admin_clears_a_stuck_server(restart_hub: Hub) -> None:
    """A start that never ends (the gate stays closed): `mlrp server clear` cancels it, ends
    its process, frees its GPU and forgets it; bad names are refused with a sentence."""
    hub = restart_hub
    pid = _start_gated(hub)
    assert "admin/" in hub.leases().values()
    config = str(hub.config_path)
    done = hub.mlrp("server", "clear", "admin", "--config", config)
    assert done.returncode == 0, done.stderr
    assert "Cleared the server of admin" in done.stdout and "GPUs are free" in done.stdout
    assert hub.api("GET", "/users/admin").json().get("servers") == {}
    assert "admin/" not in hub.leases().values()
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the stuck server's process is ended"
    with hub.db() as c:
        assert c.execute("SELECT count(*) FROM server_checkpoints").fetchone()[0] == 0
    for args, says in (
        (("nobody",), "no hub user 'nobody'"),
        (("admin", "--server", "x y"), "a server name is"),
        (("Evil;rm",), "Evil;rm"),
    ):
        bad = hub.mlrp("server", "clear", *args, "--config", config)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr

"""Hub restart with running servers: the survivors are re-adopted with their GPU leases; a server
killed while the hub was down is cleaned up and its lease freed; a lease no server holds (the hub
died between lease and start) is freed at start-up."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests
from harness import Hub, running_hub

pytestmark = [pytest.mark.e2e]


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

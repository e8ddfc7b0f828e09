"""Login throttling on a real hub, through its real login page (issue 14): wrong passwords
make a name (and an address) wait, with a sentence; the right password works after the wait;
the hub's login cookie is SameSite=Lax.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from harness import Hub, running_hub
from requests.adapters import HTTPAdapter

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]

FREE = 3  # failures_before_delay: an address gets 4 x FREE
MAX_DELAY = 3  # seconds


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts")

    def configure(h: Hub) -> None:
        h.config["login"].update(failures_before_delay=FREE, max_login_delay=MAX_DELAY)

    with running_hub(users=("alice", "bob", "carol"), configure=configure) as h:
        yield h


class FromAddress(HTTPAdapter):
    """Connect from another loopback address, as another machine would (127.0.0.0/8)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", FromAddress(address))
    return s


def try_login(hub: Hub, name: str, password: str, address: str) -> requests.Response:
    s = session_from(address)
    s.get(f"{hub.url}/hub/login", timeout=30)
    return s.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf", "")},
        allow_redirects=False,
        timeout=30,
    )


def wait_out(seconds: float = MAX_DELAY + 0.5) -> None:
    time.sleep(seconds)


def test_thirty_wrong_passwords_make_the_name_wait_then_the_right_one_works(hub: Hub) -> None:
    at = "127.0.0.11"
    codes = [try_login(hub, "alice", f"wrong-{i}", at).status_code for i in range(30)]
    assert codes[:FREE] == [403] * FREE, "the first few are plain wrong passwords"
    assert codes[-1] == 429 and codes.count(429) >= 20, codes

    refused = try_login(hub, "alice", hub.passwords["alice"], at)
    assert refused.status_code == 429, "while waiting, even the right password is refused"
    assert "Too many failed logins: wait" in refused.text
    # The address is the person's (through the proxy's X-Forwarded-For), not the proxy's.
    assert f"Wrong password for 'alice' from {at}" in hub.log()
    assert f"Login try for 'alice' from {at} refused" in hub.log()
    # The name waits wherever it is tried from.
    assert try_login(hub, "alice", hub.passwords["alice"], "127.0.0.21").status_code == 429

    wait_out()
    ok = try_login(hub, "alice", hub.passwords["alice"], "127.0.0.21")
    assert ok.status_code == 302, ok.text[:300]
    assert "samesite=lax" in ok.headers["Set-Cookie"].lower()


def test_an_address_trying_many_names_waits_too(hub: Hub) -> None:
    """Guessing one password across many names: each name stays under its own limit, the
    address does not (4 x FREE failures)."""
    at = "127.0.0.12"
    names = [f"nobody{i}" for i in range(4 * FREE + 2)]
    codes = [try_login(hub, name, "guess", at).status_code for name in names]
    assert codes[: 4 * FREE] == [403] * (4 * FREE) and codes[-1] == 429, codes
    # bob never failed: from that address he waits too, from another he does not.
    assert try_login(hub, "bob", hub.passwords["bob"], at).status_code == 429
    assert try_login(hub, "bob", hub.passwords["bob"], "127.0.0.22").status_code == 302
    wait_out()
    assert try_login(hub, "bob", hub.passwords["bob"], at).status_code == 302


def test_the_change_password_page_is_throttled_by_the_same_count(hub: Hub) -> None:
    s = hub.login_session("carol", hub.passwords["carol"])  # from 127.0.0.1
    xsrf = s.cookies.get("_xsrf", "")
    codes = []
    for i in range(FREE + 2):
        r = s.post(
            f"{hub.url}/hub/change-password",
            data={"current": f"wrong-{i}", "new": "n" * 12, "confirm": "n" * 12, "_xsrf": xsrf},
            timeout=30,
        )
        codes.append(r.status_code)
    assert codes[:FREE] == [400] * FREE and codes[-1] == 429, codes
    assert "Too many failed logins" in r.text

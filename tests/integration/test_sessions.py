"""Sessions end when they should (issue 14), on a real hub through its real pages: a password
change ends the person's other sessions and revokes their tokens, but not the browser that
changed it nor their running server; logout ends a session for good (a cookie saved before it
no longer opens the hub).
"""

from __future__ import annotations

import copy

import pytest
import requests
from harness import Hub

# `hub`: conftest.py's module hub, with alice and bob
pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]


def logged_in(hub: Hub, s: requests.Session) -> bool:
    """Does this browser's cookie open the hub's home page (not a redirect to login)?"""
    r = s.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
    assert r.status_code in (200, 302), r.status_code
    return r.status_code == 200


def token_works(hub: Hub, token: str) -> bool:
    r = requests.get(
        f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code in (200, 403), r.status_code
    return r.status_code == 200


def server_env(pid: int) -> dict[str, str]:
    """A server process's environment, read as root from /proc."""
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_password_change_ends_the_other_sessions_and_tokens(hub: Hub) -> None:
    old = hub.passwords["alice"]
    here = hub.login_session("alice", old)
    elsewhere = hub.login_session("alice", old)
    token = hub.user_token("alice")
    assert logged_in(hub, here) and logged_in(hub, elsewhere) and token_works(hub, token)
    r = hub.start_server("alice", profile="cpu")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    server_pid = hub.server_pid("alice")
    server_token = server_env(server_pid)["JUPYTERHUB_API_TOKEN"]
    assert token_works(hub, server_token)

    new = "a brand new password"
    r = here.post(
        f"{hub.url}/hub/change-password",
        data={"current": old, "new": new, "confirm": new, "_xsrf": here.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 200 and "changed" in r.text.lower(), r.text[:300]
    hub.passwords["alice"] = new

    assert logged_in(hub, here), "the browser that changed it stays logged in"
    assert not logged_in(hub, elsewhere), "the other browser's session ended"
    assert not token_works(hub, token), "the old API token is revoked"
    # Her running server carries on and still lets her in: its own token was kept.
    assert hub.server_pid("alice") == server_pid
    assert token_works(hub, server_token), "the server's own token was revoked"
    r = here.get(f"{hub.url}/user/alice/lab", timeout=60)  # through the server's OAuth login
    assert r.status_code == 200 and r.url.endswith("/user/alice/lab"), (r.status_code, r.url)
    assert "revoked" in hub.log() and "alice changed their password" in hub.log()
    # bob was not touched.
    bob = hub.login_session("bob", hub.passwords["bob"])
    assert logged_in(hub, bob)
    hub.stop_server("alice")


def test_logout_ends_the_session_for_good(hub: Hub) -> None:
    s = hub.login_session("bob", hub.passwords["bob"])
    token = hub.user_token("bob")  # a script's token: not a session, it stays
    saved = copy.deepcopy(s.cookies)
    assert logged_in(hub, s)

    r = s.get(f"{hub.url}/hub/logout", timeout=30)
    assert r.status_code == 200

    replay = requests.Session()
    replay.cookies = saved
    assert not logged_in(hub, replay), "a cookie saved before logout no longer opens the hub"
    assert token_works(hub, token)
    again = hub.login_session("bob", hub.passwords["bob"])
    assert logged_in(hub, again), "logging in again works"

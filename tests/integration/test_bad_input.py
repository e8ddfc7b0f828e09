"""Bad spawn input through the real hub: the form, hand-crafted POSTs and API bodies each get a
400 with a sentence saying what was wrong, and nothing is started, leased or created."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from harness import Hub, gate_path

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]

HOSTILE = ["$(id)", "`id`", "{{7*7}}", "<script>alert(1)</script>", "cpu; rm -rf /", "../../etc"]


def _spawn_form_post(
    hub: Hub, session: requests.Session, data: dict[str, str]
) -> requests.Response:
    xsrf = session.cookies.get("_xsrf", "")
    return session.post(
        f"{hub.url}/hub/spawn", params={"_xsrf": xsrf}, data=data, allow_redirects=False
    )


def _nothing_happened(hub: Hub, name: str) -> None:
    assert name + "/" not in hub.leases().values()
    assert name not in hub.unix_accounts(), "no Unix account may be created for a refused spawn"
    assert hub.api("GET", f"/users/{name}").json().get("servers") == {}


@pytest.fixture(scope="module")
def mallory(hub: Hub) -> requests.Session:
    """A student who never started a server."""
    hub.add_user("mallory")
    session = hub.login_session("mallory", hub.passwords["mallory"])  # creates the hub user
    r = hub.api("POST", "/groups/students/users", json={"users": ["mallory"]})
    assert r.status_code == 200, r.text
    return session


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"profile": "nope"}, "There is no profile 'nope' for you"),
        ({"profile": "multi"}, "There is no profile 'multi' for you"),  # staff only
        ({}, "Pick a profile"),
        ({"profile": "gpu1", "gpus-gpu1": "-1"}, "offers 1 GPU(s); you asked for -1"),
        ({"profile": "gpu1", "gpus-gpu1": "1000"}, "you asked for 1000"),
        ({"profile": "gpu1", "gpus-gpu1": "two"}, "gpus must be a whole number"),
        ({"profile": "cpu", "cmd": "/bin/sh"}, "Unexpected field(s) in the form"),
        ({"profile": "cpu", "gpus-": "1"}, "Unexpected field(s) in the form"),
    ],
)
def test_form_rejects_bad_values(
    hub: Hub, mallory: requests.Session, data: dict[str, str], expected: str
) -> None:
    r = _spawn_form_post(hub, mallory, data)
    assert r.status_code == 400, r.text[:500]
    assert expected.replace("'", "&#39;") in r.text or expected in r.text
    assert 'name="profile"' in r.text, "the form is shown again so the user can fix it"
    assert "Traceback" not in r.text
    _nothing_happened(hub, "mallory")


@pytest.mark.parametrize("value", HOSTILE)
def test_form_hostile_strings_are_refused_and_escaped(
    hub: Hub, mallory: requests.Session, value: str
) -> None:
    r = _spawn_form_post(hub, mallory, {"profile": value})
    assert r.status_code == 400
    assert "There is no profile" in r.text
    assert "<script>alert(1)</script>" not in r.text
    assert "49" not in r.text.split("There is no profile", 1)[1][:80], "no template evaluation"
    _nothing_happened(hub, "mallory")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"profile": "nope"}, "There is no profile"),
        ({"profile": "gpu1", "gpus": -1}, "you asked for -1"),
        ({"profile": "gpu1", "gpus": 1000}, "you asked for 1000"),
        ({"profile": "gpu1", "gpus": True}, "gpus must be a whole number"),
        ({"profile": "gpu1", "gpus": [1, 1]}, "gpus must be a whole number such as 1, not [1, 1]"),
        ({"profile": "gpu1", "gpus": [1]}, "gpus must be a whole number such as 1, not [1]"),
        ({"profile": "gpu1", "gpus": "1"}, "gpus must be a whole number such as 1, not '1'"),
        ({"profile": ["cpu"]}, "profile must be a string naming one of: cpu, gpu1; not ['cpu']"),
        ({"profile": None}, "profile must be a string naming one of: cpu, gpu1; not None"),
        ({"profile": "cpu", "cmd": ["/bin/sh"]}, "Unknown option(s)"),
        ({"profile": "cpu", "exec_prefix": "sh -c"}, "Unknown option(s)"),
        ({"profile": {"$ne": 1}}, "profile must be a string"),
        # JupyterHub 6 refuses this itself; 5.x passes the body on and we refuse the key.
        ({"user_options": "cpu"}, ("user_options must be an object", "Unknown option(s)")),
    ]
    + [({"profile": v}, "There is no profile") for v in HOSTILE],
)
def test_api_rejects_bad_bodies(
    hub: Hub, mallory: requests.Session, body: dict[str, object], expected: str | tuple[str, ...]
) -> None:
    token = hub.user_token("mallory")
    r = hub.api("POST", "/users/mallory/server", token=token, json=body)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    expected_any = (expected,) if isinstance(expected, str) else expected
    assert any(e in message for e in expected_any), message
    assert len(message) < 300
    _nothing_happened(hub, "mallory")


def test_api_rejects_non_json(hub: Hub, mallory: requests.Session) -> None:
    token = hub.user_token("mallory")
    r = hub.api("POST", "/users/mallory/server", token=token, data="profile=cpu;id")
    assert r.status_code == 400
    _nothing_happened(hub, "mallory")


def test_gpu_choice_outside_allowed_list(hub: Hub) -> None:
    """admin is staff and sees `multi` (2 or 4 GPUs): 3 is refused, nothing leased."""
    r = hub.api("POST", "/users/admin/server", json={"profile": "multi", "gpus": 3})
    assert r.status_code == 400
    assert "offers 2, 4 GPU(s); you asked for 3" in r.json()["message"]
    assert "admin/" not in hub.leases().values()


def test_batchspawner_api_takes_only_a_port(hub: Hub) -> None:
    """ENVIRONMENT.md's hazard: batchspawner's /hub/api/batchspawner sets any spawner attribute.
    Ours answers there instead (hub/callback_api.py) and refuses anything but a port."""
    token = hub.user_token("alice")
    r = hub.api("POST", "/batchspawner", token=token, json={"port": 1, "exec_prefix": "sh"})
    assert r.status_code == 400 and "exec_prefix" in r.text, r.text


def test_failure_stays_visible_on_the_form_after_reload(
    hub: Hub, mallory: requests.Session
) -> None:
    """A failed start is recorded; the spawn form shows it on the next visit (and after a hub
    restart, since it lives in the MLRP database, see test_restart)."""
    token = hub.user_token("mallory")
    r = hub.api("POST", "/users/mallory/server", token=token, json={"profile": "gpu1", "gpus": 7})
    assert r.status_code == 400
    page = mallory.get(f"{hub.url}/hub/spawn")
    assert page.status_code == 200
    assert 'id="mlrp-last-failure"' in page.text
    assert "you asked for 7" in page.text


def _progress_stream(hub: Hub, name: str) -> Iterator[dict[str, Any]]:
    """The spawn's progress events, as the spawn page's EventSource reads them."""
    with requests.get(
        f"{hub.url}/hub/api/users/{name}/server/progress",
        headers={"Authorization": f"token {hub.admin_token()}"},
        stream=True,
        timeout=60,
    ) as stream:
        assert stream.status_code == 200, stream.text
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                yield json.loads(line[5:])


def test_progress_events_reach_the_client_while_the_server_starts(hub: Hub) -> None:
    """The profile's server waits at a gate the test holds closed, so every event read before
    the gate opens was delivered live, during the spawn, not replayed after it."""
    gate = gate_path(hub.data_dir)
    gate.unlink(missing_ok=True)
    posted: list[requests.Response] = []
    poster = threading.Thread(
        target=lambda: posted.append(
            hub.api("POST", "/users/admin/server", json={"profile": "gated"})
        )
    )
    poster.start()
    # Should the live events never come, open the gate anyway so the test fails in seconds
    # (the assertions below) instead of waiting out the spawn's start_timeout.
    watchdog = threading.Timer(20, gate.touch)
    watchdog.start()
    try:
        deadline = time.monotonic() + 30
        while not hub.api("GET", "/users/admin").json().get("pending"):
            assert time.monotonic() < deadline, "the spawn never became pending"
            time.sleep(0.05)
        live: list[str] = []
        after_gate: list[dict[str, Any]] = []
        for event in _progress_stream(hub, "admin"):
            if gate.exists():
                after_gate.append(event)
                if event.get("ready") or event.get("failed"):
                    break
                continue
            live.append(event.get("message", ""))
            assert not event.get("ready"), "ready while the server is held at the gate"
            if "waiting for it to listen" in event.get("message", ""):
                gate.touch()  # every step up to the server's own start-up has been seen
        text = "\n".join(live)
        assert "Starting Waits for the test (staff) with 1 GPU(s)." in text, text
        assert "Leased GPU" in text and "Unix account" in text, text
        assert re.search(r"JupyterLab started \(pid \d+\)", text), text
        assert after_gate and after_gate[-1].get("ready"), after_gate
    finally:
        watchdog.cancel()
        gate.touch()
        poster.join(timeout=60)
    assert posted and posted[0].status_code in (201, 202), posted
    hub.wait_ready("admin")
    hub.stop_server("admin")
    deadline = time.monotonic() + 10
    while "admin/" in hub.leases().values() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "admin/" not in hub.leases().values()


def test_change_password_page(hub: Hub) -> None:
    hub.add_user("pat")
    old = hub.passwords["pat"]
    s = hub.login_session("pat", old)
    url = f"{hub.url}/hub/change-password"
    page = s.get(url)
    assert page.status_code == 200 and 'name="current"' in page.text
    assert "change-password" in s.get(f"{hub.url}/hub/home").text, "linked from the nav bar"
    xsrf = s.cookies.get("_xsrf", "")
    cases = [
        ({"current": "wrong-password", "new": "n" * 12, "confirm": "n" * 12}, "not correct"),
        ({"current": old, "new": "n" * 12, "confirm": "m" * 12}, "differ"),
        ({"current": old, "new": "short", "confirm": "short"}, "at least 10 characters"),
    ]
    for data, expected in cases:
        r = s.post(url, data={**data, "_xsrf": xsrf})
        assert r.status_code == 400 and expected in r.text, (data, r.text[:300])
    hub.login_session("pat", old)  # nothing changed by the refused attempts
    new = "a-new-password-123"
    r = s.post(url, data={"current": old, "new": new, "confirm": new, "_xsrf": xsrf})
    assert r.status_code == 200 and "was changed" in r.text
    hub.login_session("pat", new)
    fail = requests.Session()
    fail.get(f"{hub.url}/hub/login")
    r = fail.post(
        f"{hub.url}/hub/login",
        data={"username": "pat", "password": old, "_xsrf": fail.cookies.get("_xsrf", "")},
        allow_redirects=False,
    )
    assert r.status_code == 403, "the old password no longer works"

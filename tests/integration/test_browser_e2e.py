"""The issue's acceptance test, end to end in a real browser.

Students log in through the real login page in headless Chromium, see only their profiles and the
live number of free GPUs, start "1 GPU, PyTorch" and land in JupyterLab. Inside, a real kernel
(reached over the Jupyter REST + WebSocket API through the hub's proxy) shows one GPU each, on
different devices, under different non-root Unix accounts. One student cannot reach another's
server, kernel or files. When every GPU is leased, the next GPU request is refused with a sentence
saying what to do and nothing is taken; stopping a server frees its GPU for the next person.
"""

from __future__ import annotations

import pwd
import time

import pytest
import requests
import websocket
from browser import Person, browser_login, form_profiles
from harness import Hub
from kernel import Kernel
from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions, pytest.mark.browser]

DEVICES = {"0", "1", "2", "3"}
LAB_TIMEOUT_MS = 90_000  # generous: the CI machine has 2 cores
LAB_SHELL = "#jp-main-dock-panel"
ALL_IN_USE = "All 4 GPUs on this server are in use"
GPU_PROFILE = "1 GPU, PyTorch"

PROBE = """
import json, os, pwd
print(json.dumps({
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "nvidia": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
    "uid": os.getuid(),
    "user": pwd.getpwuid(os.getuid()).pw_name,
    "home": os.path.expanduser("~"),
}))
"""


def form_text(page: Page) -> str:
    return page.inner_text("[data-mlrp-form]")


def choose_and_start(page: Page, profile_name: str) -> None:
    page.get_by_label(profile_name).check()
    page.get_by_role("button", name="Start").click()


def wait_for_lab(person: Person) -> None:
    page = person.page
    page.wait_for_url(f"**/user/{person.name}/lab**", timeout=LAB_TIMEOUT_MS)
    page.wait_for_selector(LAB_SHELL, timeout=LAB_TIMEOUT_MS)


def has_server(hub: Hub, name: str) -> bool:
    return bool(hub.api("GET", f"/users/{name}").json().get("servers"))


def join_students(hub: Hub, *names: str) -> None:
    r = hub.api("POST", "/groups/students/users", json={"users": list(names)})
    assert r.status_code == 200, r.text


def wait_lease_gone(hub: Hub, owner: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while owner in hub.leases().values() and time.monotonic() < deadline:
        time.sleep(0.1)


# -- the story -------------------------------------------------------------------------------
def test_students_get_their_own_gpu_and_cannot_reach_each_other(hub: Hub, browser: Browser) -> None:
    alice = browser_login(hub, browser, "alice")
    bob = browser_login(hub, browser, "bob")

    # The form: only the students' profiles, and the live GPU count.
    for person in (alice, bob):
        assert form_profiles(person.page) == ["cpu", "gpu1"], "students never see 'multi'"
        assert person.page.locator("#profile-multi").count() == 0
        assert "4 free of 4" in form_text(person.page)

    choose_and_start(alice.page, GPU_PROFILE)
    wait_for_lab(alice)
    assert len(hub.leases()) == 1

    bob.page.reload()
    assert "3 free of 4" in form_text(bob.page), "the form shows capacity at the time it loads"
    choose_and_start(bob.page, GPU_PROFILE)
    wait_for_lab(bob)

    # Inside each server: one GPU each, different devices, different non-root accounts.
    tokens = {name: hub.user_token(name) for name in ("alice", "bob")}
    kernels = {name: Kernel(hub, name, tokens[name]) for name in ("alice", "bob")}
    try:
        seen = {name: k.run_json(PROBE) for name, k in kernels.items()}
        accounts = hub.unix_accounts()
        for name, env in seen.items():
            assert env["cuda"] in DEVICES, f"{name} must have exactly one GPU: {env}"
            assert env["nvidia"] == env["cuda"], env
            assert env["uid"] != 0, f"{name}'s kernel runs as root"
            assert env["user"] == accounts[name]
            assert env["uid"] == pwd.getpwnam(accounts[name]).pw_uid
        assert seen["alice"]["cuda"] != seen["bob"]["cuda"], "two people got the same GPU"
        assert seen["alice"]["uid"] != seen["bob"]["uid"]
        assert hub.leases() == {
            seen["alice"]["cuda"]: "alice/",
            seen["bob"]["cuda"]: "bob/",
        }

        # Isolation, over HTTP: alice's token opens nothing of bob's server.
        alice_auth = {"Authorization": f"token {tokens['alice']}"}
        for path in ("contents", "kernels"):
            r = requests.get(
                f"{hub.url}/user/bob/api/{path}",
                headers=alice_auth,
                allow_redirects=False,
                timeout=30,
            )
            assert r.status_code == 403 or (
                300 <= r.status_code < 400 and "/hub/" in r.headers.get("Location", "")
            ), f"alice's token on bob's /api/{path}: {r.status_code} {r.text[:200]}"
        # ...the control: the same request with bob's own token works.
        r = requests.get(
            f"{hub.url}/user/bob/api/kernels",
            headers={"Authorization": f"token {tokens['bob']}"},
            timeout=30,
        )
        assert r.status_code == 200 and kernels["bob"].id in r.text

        # ...over the kernel WebSocket.
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                Kernel.channels_url(hub, "bob", kernels["bob"].id),
                header=[f"Authorization: token {tokens['alice']}"],
                timeout=30,
            )
        assert refused.value.status_code in (302, 401, 403), refused.value

        # ...in the browser: alice's session does not get bob's Lab.
        response = alice.page.goto(f"{hub.url}/user/bob/lab")
        alice.page.wait_for_load_state("networkidle")
        assert alice.page.locator(LAB_SHELL).count() == 0, "alice sees bob's JupyterLab"
        assert "/user/bob/lab" not in alice.page.url, alice.page.url
        refused_page = response is not None and response.status == 403
        assert refused_page or "/hub/login" in alice.page.url, alice.page.url

        # ...through the hub API: alice cannot start (or otherwise act on) bob's server.
        r = hub.api("POST", "/users/bob/server", token=tokens["alice"], json={"profile": "cpu"})
        assert r.status_code in (403, 404), r.text
        r = hub.api("DELETE", "/users/bob/server", token=tokens["alice"])
        assert r.status_code in (403, 404), r.text
        assert has_server(hub, "bob")

        # ...on disk: bob's home is closed to alice's kernel.
        bob_home = seen["bob"]["home"]
        kernels["bob"].run("open(__import__('os').path.expanduser('~/secret.txt'), 'w').write('x')")
        assert kernels["bob"].run("print(open('secret.txt').read())").strip() == "x"
        attempts = kernels["alice"].run_json(
            f"""
import json, os
result = {{}}
for what, act in (("read", lambda: open({bob_home!r} + "/secret.txt").read()),
                  ("list", lambda: os.listdir({bob_home!r}))):
    try:
        act()
        result[what] = "allowed"
    except PermissionError:
        result[what] = "PermissionError"
print(json.dumps(result))
"""
        )
        assert attempts == {"read": "PermissionError", "list": "PermissionError"}

        # ...and bypassing the proxy: bob's server port, straight from alice's kernel.
        bob_port = hub.server_port("bob")
        status = kernels["alice"].run_json(
            f"""
import json, urllib.request, urllib.error
try:
    urllib.request.urlopen("http://127.0.0.1:{bob_port}/user/bob/api/contents", timeout=10)
    code = 200
except urllib.error.HTTPError as e:
    code = e.code
print(json.dumps(code))
"""
        )
        assert status in (302, 401, 403), f"alice reached bob's server directly: {status}"
    finally:
        for k in kernels.values():
            k.close()
        alice.context.close()
        bob.context.close()


def test_gpus_run_out_and_a_stopped_server_frees_its_gpu(hub: Hub, browser: Browser) -> None:
    for name in ("alice", "bob"):  # normally still running from the test above
        if not has_server(hub, name):
            r = hub.start_server(name, profile="gpu1")
            assert r.status_code in (201, 202), r.text

    for name in ("carol", "dave", "erin"):
        hub.add_user(name)
    for name in ("carol", "dave"):
        hub.login_session(name, hub.passwords[name])  # creates the hub user
    erin = browser_login(hub, browser, "erin")
    assert form_profiles(erin.page) == ["cpu"], "not yet a student: no GPU profile"
    join_students(hub, "carol", "dave", "erin")

    for name in ("carol", "dave"):
        r = hub.start_server(name, profile="gpu1")
        assert r.status_code in (201, 202), r.text
    leases = hub.leases()
    assert sorted(leases) == sorted(DEVICES)
    assert sorted(leases.values()) == ["alice/", "bob/", "carol/", "dave/"]

    try:
        # A fifth GPU request from the browser: a clear sentence, a 400, nothing taken.
        erin.page.reload()
        assert form_profiles(erin.page) == ["cpu", "gpu1"]
        assert "0 free of 4" in form_text(erin.page)
        assert erin.page.locator("#profile-gpu1").get_attribute("data-unavailable") == "1"
        assert erin.page.is_disabled("#profile-gpu1"), "no free GPU: the profile cannot be picked"
        # As from a form loaded before the GPUs ran out: the hub refuses the start all the same.
        erin.page.evaluate("document.getElementById('profile-gpu1').disabled = false")
        erin.page.get_by_label(GPU_PROFILE).check()
        with erin.page.expect_response(
            lambda r: r.request.method == "POST" and "/hub/spawn" in r.url
        ) as posted:
            erin.page.get_by_role("button", name="Start").click()
        assert posted.value.status == 400
        erin.page.wait_for_load_state()
        assert ALL_IN_USE in erin.page.inner_text("body")
        assert "Pick a CPU profile" in erin.page.inner_text("body")
        assert "erin/" not in hub.leases().values()
        assert not has_server(hub, "erin")

        # The same through the REST API.
        r = hub.api("POST", "/users/erin/server", json={"profile": "gpu1"})
        assert r.status_code == 400, r.text
        assert ALL_IN_USE in r.json()["message"]
        assert "erin/" not in hub.leases().values()
        assert not has_server(hub, "erin")

        # Stopping alice's server frees exactly her GPU, and erin gets it.
        alice_gpu = next(d for d, owner in hub.leases().items() if owner == "alice/")
        hub.stop_server("alice")
        wait_lease_gone(hub, "alice/")
        assert alice_gpu not in hub.leases()
        erin.page.goto(f"{hub.url}/hub/spawn")
        assert "1 free of 4" in form_text(erin.page)
        assert erin.page.locator("#profile-gpu1").get_attribute("data-unavailable") is None
        assert erin.page.is_enabled("#profile-gpu1")
        choose_and_start(erin.page, GPU_PROFILE)
        wait_for_lab(erin)
        assert hub.leases()[alice_gpu] == "erin/"
        kernel = Kernel(hub, "erin", hub.user_token("erin"))
        try:
            env = kernel.run_json(PROBE)
        finally:
            kernel.close()
        assert env["cuda"] == env["nvidia"] == alice_gpu
        assert env["user"] == hub.unix_accounts()["erin"]
    finally:
        erin.context.close()
        for name in ("carol", "dave", "erin"):
            if has_server(hub, name):
                hub.stop_server(name)

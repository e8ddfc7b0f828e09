"""People and access (issue 14) on a real hub, through its real pages and `mlrp user`:

- removing a person (CLI, or the admin page's API call) ends their open browser session and
  their tokens at once, stops their server and frees its GPU, keeps their files under a locked
  account, and a later person of the same name gets a fresh account unless the admin restores
  the old one;
- a bulk import puts people into a group before their first login, and each logs in with the
  printed password and sees that group's GPU profile;
- an admin password reset ends the person's other sessions and tokens;
- the admin page's "Add Users" cannot make people who could never log in;
- with the hub down, removal is written to its database, or refused while a server runs.
"""

from __future__ import annotations

import pwd
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
from browser import browser_login, form_profiles
from harness import Hub
from playwright.sync_api import Browser

# `hub`: conftest.py's module hub, with alice and bob
pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]


def add_person(hub: Hub, name: str, *groups: str, restore: bool = False) -> None:
    password = f"pw-{name}-0123456789"
    args = ["user", "add", name, "--config", str(hub.config_path), "--password-stdin"]
    for g in groups:
        args += ["--group", g]
    if restore:
        args.append("--restore")
    r = hub.mlrp(*args, stdin=password + "\n")
    assert r.returncode == 0, r.stderr
    hub.passwords[name] = password


def mlrp(hub: Hub, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return hub.mlrp(*args, "--config", str(hub.config_path), stdin=stdin)


def token_works(hub: Hub, token: str) -> bool:
    r = requests.get(
        f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert r.status_code in (200, 403), r.status_code
    return r.status_code == 200


def password_works(hub: Hub, name: str, password: str) -> bool:
    s = requests.Session()
    s.get(f"{hub.url}/hub/login", timeout=30)
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": name, "password": password, "_xsrf": s.cookies.get("_xsrf", "")},
        allow_redirects=False,
        timeout=30,
    )
    return r.status_code == 302


def start(hub: Hub, name: str, profile: str) -> None:
    r = hub.start_server(name, profile=profile)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready(name)


def put_file(hub: Hub, name: str, token: str, path: str, text: str) -> None:
    r = requests.put(
        f"{hub.url}/user/{name}/api/contents/{path}",
        json={"type": "file", "format": "text", "content": text},
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text


def read_file(hub: Hub, name: str, token: str, path: str) -> str | None:
    r = requests.get(
        f"{hub.url}/user/{name}/api/contents/{path}",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    return str(r.json()["content"]) if r.status_code == 200 else None


def locked(account: str) -> bool:
    """Expired (so no login, cron or at job of it runs) and without a usable password."""
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == account:
            return fields[1].startswith("!") and fields[7] == "1"
    raise AssertionError(f"no shadow entry for {account}")


def wait_no_lease(hub: Hub, name: str, timeout: float = 10) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while any(o.startswith(f"{name}/") for o in hub.leases().values()):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return hub.leases()


# -- offboarding -------------------------------------------------------------------------------
def test_a_removed_person_loses_access_at_once_and_keeps_their_files(
    hub: Hub, browser: Browser
) -> None:
    add_person(hub, "frank", "students")
    frank = browser_login(hub, browser, "frank")
    assert "gpu1" in form_profiles(frank.page), "--group students gave frank the GPU profile"
    token = hub.user_token("frank")
    start(hub, "frank", "gpu1")
    assert "frank/" in hub.leases().values()
    put_file(hub, "frank", token, "keep.txt", "frank's results")
    old = hub.unix_accounts()["frank"]
    old_home = Path(pwd.getpwnam(old).pw_dir)

    r = mlrp(hub, "user", "remove", "frank")
    assert r.returncode == 0, r.stderr
    assert "Removed frank" in r.stdout and f"{old} is locked" in r.stdout, r.stdout

    # His open browser session is refused on its next request, and cannot start a server.
    frank.page.goto(f"{hub.url}/hub/home")
    assert "/hub/login" in frank.page.url, frank.page.url
    frank.page.goto(f"{hub.url}/hub/spawn")
    assert "/hub/login" in frank.page.url, frank.page.url
    xsrf = next((c["value"] for c in frank.context.cookies() if c["name"] == "_xsrf"), "")
    started = frank.context.request.post(
        f"{hub.url}/hub/api/users/frank/server", headers={"X-XSRFToken": xsrf}
    )
    assert started.status in (403, 404), started.status
    # His API token is refused, and cannot mint another.
    assert not token_works(hub, token)
    minted = requests.post(
        f"{hub.url}/hub/api/users/frank/tokens",
        headers={"Authorization": f"token {token}"},
        json={},
        timeout=30,
    )
    assert minted.status_code == 403, minted.text
    assert not password_works(hub, "frank", hub.passwords["frank"])
    assert hub.api("GET", "/users/frank").status_code == 404, "the hub user is gone"
    # His server stopped, his GPU is free, his files are on disk under a locked account.
    assert not any(o.startswith("frank/") for o in wait_no_lease(hub, "frank").values())
    assert (old_home / "keep.txt").read_text() == "frank's results"
    assert locked(old)
    frank.context.close()

    # Someone new called frank gets a fresh account, without the earlier frank's files.
    add_person(hub, "frank")
    start(hub, "frank", "cpu")
    new = hub.unix_accounts()["frank"]
    assert new != old
    assert hub_server_uid(hub, "frank") == pwd.getpwnam(new).pw_uid
    assert read_file(hub, "frank", hub.user_token("frank"), "keep.txt") is None
    assert (old_home / "keep.txt").exists()
    hub.stop_server("frank")


def hub_server_uid(hub: Hub, name: str) -> int:
    return Path(f"/proc/{hub.server_pid(name)}").stat().st_uid


def test_the_admin_page_removes_the_same_way_and_a_restore_gives_the_files_back(hub: Hub) -> None:
    add_person(hub, "gina")
    start(hub, "gina", "cpu")
    put_file(hub, "gina", hub.user_token("gina"), "thesis.txt", "chapter 1")
    old = hub.unix_accounts()["gina"]

    r = hub.api("DELETE", "/users/gina")  # what the admin page's "Delete user" sends
    assert r.status_code == 204, r.text
    assert "gina" not in mlrp(hub, "user", "list").stdout.split(), "her login is gone"
    assert not password_works(hub, "gina", hub.passwords["gina"]), "not undone by a login"
    assert "Removed gina" in hub.log() and locked(old)

    add_person(hub, "gina", restore=True)
    assert not locked(old)
    start(hub, "gina", "cpu")
    assert hub.unix_accounts()["gina"] == old
    assert read_file(hub, "gina", hub.user_token("gina"), "thesis.txt") == "chapter 1"
    hub.stop_server("gina")


def test_the_admin_page_cannot_make_people_who_could_never_log_in(hub: Hub) -> None:
    r = hub.api("POST", "/users", json={"usernames": ["nologin"]})
    assert r.status_code == 400 and "mlrp user add" in r.json()["message"], r.text
    assert hub.api("GET", "/users/nologin").status_code == 404, "nothing half-made"
    for bad in ("evil name", "x" * 300, "../admin"):
        r = hub.api("POST", "/users", json={"usernames": [bad]})
        assert r.status_code == 400, (bad, r.text)
    # The page itself says how people are added.
    admin = hub.login_session("admin", hub.admin_password)
    page = admin.get(f"{hub.url}/hub/admin", timeout=30)
    assert page.status_code == 200 and "mlrp user add NAME --group GROUP" in page.text
    # A non-admin learns nothing about which logins exist.
    r = hub.api("POST", "/users", hub.user_token("alice"), json={"usernames": ["bob"]})
    assert r.status_code == 403, r.text


# -- onboarding --------------------------------------------------------------------------------
def test_a_bulk_import_puts_people_into_a_group_before_they_first_log_in(
    hub: Hub, browser: Browser
) -> None:
    csv_file = hub.workdir / "people.csv"
    csv_file.write_text(
        "name,groups,email\nivy,students,ivy@example.org\njon,students,\nkim,students\n"
    )
    r = mlrp(hub, "user", "import", str(csv_file))
    assert r.returncode == 0, r.stderr
    printed = dict(re.findall(r"^\s+(ivy|jon|kim)\s+(\S+)$", r.stdout, re.M))
    assert sorted(printed) == ["ivy", "jon", "kim"], r.stdout
    members = hub.api("GET", "/groups/students").json()["users"]
    assert {"ivy", "jon", "kim"} <= set(members), "in the group before any first login"
    for name, password in printed.items():
        person = browser_login(hub, browser, name, password)
        assert form_profiles(person.page) == ["cpu", "gpu1"], name
        assert "1 GPU, PyTorch" in person.page.inner_text("[data-mlrp-form]")
        person.context.close()

    # --archive: the home is packed into the data directory, then the account is deleted.
    start(hub, "kim", "cpu")
    put_file(hub, "kim", hub.user_token("kim"), "notes.txt", "kim's notes")
    account = hub.unix_accounts()["kim"]
    hub.stop_server("kim")
    r = mlrp(hub, "user", "remove", "kim", "--archive")
    assert r.returncode == 0, r.stderr
    archives = list((hub.data_dir / "archive").glob(f"{account}-*.tar.gz"))
    assert len(archives) == 1 and archives[0].stat().st_mode & 0o077 == 0, archives
    with tarfile.open(archives[0]) as tar:
        member = tar.extractfile(f"{account}/notes.txt")
        assert member is not None and member.read() == b"kim's notes"
    with pytest.raises(KeyError):
        pwd.getpwnam(account)
    r = mlrp(hub, "user", "add", "kim", "--restore")
    assert r.returncode == 2 and "archived to" in r.stderr, r.stderr


def test_bad_imports_and_adds_are_refused_whole_with_every_problem(hub: Hub) -> None:
    csv_file = hub.workdir / "bad.csv"
    csv_file.write_text(
        "lena,students\nEvil Name,students\nmax,studnets\nnia,students,not-an-email\nlena,\n"
    )
    r = mlrp(hub, "user", "import", str(csv_file))
    assert r.returncode == 2, r.stdout
    for expected in (
        "bad.csv:2",
        "not a valid user name",
        "bad.csv:3",
        "Did you mean 'students'?",
        "bad.csv:4",
        "not an e-mail address",
        "bad.csv:5",
        "listed twice",
    ):
        assert expected in r.stderr, (expected, r.stderr)
    assert "Traceback" not in r.stderr
    assert "lena" not in mlrp(hub, "user", "list").stdout.split(), "nobody was created"

    for args, expected in (
        (("user", "add", "olga", "--group", "studnets"), "Did you mean 'students'?"),
        (("user", "add", "alice"), "already has a login"),
        (("user", "add", "a", "b", "--restore"), "name only one"),
        (("user", "add", "petra", "--restore"), "no earlier Unix account"),
        (("user", "remove", "nobody"), "There is no user 'nobody'"),
        (("user", "remove", "Bad Name"), "not a valid user name"),
        (("user", "import", "/nonexistent.csv"), "Cannot read /nonexistent.csv"),
    ):
        r = mlrp(hub, *args)
        assert r.returncode == 2 and expected in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    names = mlrp(hub, "user", "list").stdout.split()
    assert "olga" not in names and "petra" not in names


# -- sessions ----------------------------------------------------------------------------------
def test_an_admin_password_reset_ends_the_persons_sessions_and_tokens(hub: Hub) -> None:
    session = hub.login_session("bob", hub.passwords["bob"])
    token = hub.user_token("bob")
    assert token_works(hub, token)
    new = "a reset password for bob"
    r = mlrp(hub, "user", "passwd", "bob", "--password-stdin", stdin=new + "\n")
    assert r.returncode == 0 and "sessions ended" in r.stdout, r.stderr
    hub.passwords["bob"] = new
    home = session.get(f"{hub.url}/hub/home", allow_redirects=False, timeout=30)
    assert home.status_code == 302 and "/hub/login" in home.headers["Location"]
    assert not token_works(hub, token)
    assert password_works(hub, "bob", new)


# -- with the hub down (last: it restarts the module's hub) -----------------------------------
def test_with_the_hub_down_removal_is_written_to_its_database(hub: Hub) -> None:
    add_person(hub, "quinn")
    token = hub.user_token("quinn")
    start(hub, "alice", "cpu")
    hub.stop()  # servers keep running (cleanup_servers is off)
    try:
        r = mlrp(hub, "user", "remove", "quinn")
        assert r.returncode == 0, r.stderr
        r = mlrp(hub, "user", "remove", "alice")
        assert r.returncode == 2 and "recorded as running" in r.stderr, r.stderr
        r = mlrp(hub, "user", "add", "rita", "--group", "students")
        assert r.returncode == 2 and "not running" in r.stderr, r.stderr
        assert "rita" not in mlrp(hub, "user", "list").stdout.split()
    finally:
        hub.start()
    assert hub.api("GET", "/users/quinn").status_code == 404
    assert not token_works(hub, token)
    assert not password_works(hub, "quinn", hub.passwords["quinn"])
    assert hub.api("GET", "/users/alice").json()["servers"], "alice's server was left alone"
    assert password_works(hub, "alice", hub.passwords["alice"])
    hub.stop_server("alice")

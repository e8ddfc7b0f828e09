"""accounts.mode existing through the real hub and proxy: people run as Unix accounts that
exist already (made here with the real useradd, as the cluster's directory would have them),
a person without one is told so and nothing is created, and removing a person leaves their
account as it was.

The accounts are local (/etc/passwd), not LDAP: NSS answers for both the same way, and that
lookup (pwd.getpwnam) is all MLRP does with them. Named with the run's prefix, removed after.
"""

from __future__ import annotations

import pwd
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Hub, running_hub

pytestmark = [pytest.mark.e2e]

NO_ACCOUNT = (
    "There is no Unix account for you (carol) on this cluster; ask your administrator to "
    "create one or map you to yours in accounts.map."
)


def make_account(name: str) -> pwd.struct_passwd:
    """An account as a directory has it: a home, and a password (so a lock would show)."""
    subprocess.run(["useradd", "--create-home", name], check=True, capture_output=True)
    subprocess.run(["chpasswd"], input=f"{name}:not-a-real-pw-1\n", text=True, check=True)
    return pwd.getpwnam(name)


def shadow_line(name: str) -> str:
    with open("/etc/shadow") as f:
        return next(line for line in f if line.startswith(name + ":"))


OTHER_RUNS = re.compile(r"^t[a-z]{4}[-_]")  # harness.run_prefix of tests running beside us


def everyone(prefix: str) -> list[str]:
    """Every Unix account (getent passwd) but those of other test runs on this machine."""
    stem = prefix.rstrip("-")
    return sorted(
        pw.pw_name
        for pw in pwd.getpwall()
        if pw.pw_name.startswith(stem) or not OTHER_RUNS.match(pw.pw_name)
    )


def uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """A hub in existing mode: alice is mapped to <prefix>asmith, the hub user <prefix>bob has
    the account of his own name, carol has none."""

    def configure(h: Hub) -> None:
        prefix = h.config["accounts"]["prefix"]  # kept: the harness removes these accounts
        make_account(f"{prefix}asmith")
        make_account(f"{prefix}bob")
        h.config["accounts"] = {
            "mode": "existing",
            "prefix": prefix,
            "map": {"alice": f"{prefix}asmith"},
        }

    with running_hub(users=(), configure=configure) as h:
        h.add_user("alice")
        h.add_user(f"{h.config['accounts']['prefix']}bob")
        yield h


@pytest.fixture(scope="module")
def prefix(hub: Hub) -> str:
    return str(hub.config["accounts"]["prefix"])


def test_people_run_as_their_existing_accounts(hub: Hub, prefix: str) -> None:
    asmith = pwd.getpwnam(f"{prefix}asmith")
    bob = pwd.getpwnam(f"{prefix}bob")
    shadows = {name: shadow_line(name) for name in (asmith.pw_name, bob.pw_name)}
    homes = {name: Path(pwd.getpwnam(name).pw_dir).stat() for name in shadows}
    before = everyone(prefix)
    for name in ("alice", bob.pw_name):
        r = hub.start_server(name, profile="cpu")
        assert r.status_code in (201, 202), r.text
    try:
        assert uids(hub.server_pid("alice")) == [asmith.pw_uid] * 4, "alice runs as asmith"
        assert uids(hub.server_pid(bob.pw_name)) == [bob.pw_uid] * 4
        assert hub.unix_accounts() == {"alice": asmith.pw_name, bob.pw_name: bob.pw_name}
        assert everyone(prefix) == before, "no account was created"
        for name, line in shadows.items():
            assert shadow_line(name) == line
            home = Path(pwd.getpwnam(name).pw_dir).stat()
            assert (home.st_uid, home.st_gid, home.st_mode) == (
                homes[name].st_uid,
                homes[name].st_gid,
                homes[name].st_mode,
            ), "the home is left as it was"
    finally:
        hub.stop_server("alice")
        hub.stop_server(bob.pw_name)


def test_a_person_without_an_account_is_told_and_nothing_is_made(hub: Hub, prefix: str) -> None:
    before = everyone(prefix)
    added = hub.mlrp(
        "user",
        "add",
        "carol",
        "--config",
        str(hub.config_path),
        "--password-stdin",
        stdin="carol-password-1\n",
    )
    assert added.returncode == 0, added.stderr
    assert added.stderr.strip() == (
        "warning: carol can log in but cannot start a server yet: no Unix account carol for hub "
        "user 'carol' (accounts.mode: existing never creates one): create it in the directory "
        "(LDAP/SSSD) or map the person to theirs under accounts.map."
    )
    session = hub.login_session("carol", "carol-password-1")

    # Through the API…
    r = hub.api("POST", "/users/carol/server", json={"profile": "cpu"})
    assert r.status_code == 403, r.text
    assert r.json()["message"] == NO_ACCOUNT

    # …and through the spawn form, which shows the sentence (escaped) and the form again.
    xsrf = session.cookies.get("_xsrf", "")
    page = session.post(
        f"{hub.url}/hub/spawn",
        params={"_xsrf": xsrf},
        data={"profile": "cpu"},
        allow_redirects=False,
    )
    assert page.status_code == 403, page.text[:500]
    assert NO_ACCOUNT in page.text
    assert "Traceback" not in page.text
    assert everyone(prefix) == before, "getent passwd is unchanged"
    assert not Path("/home/carol").exists(), "no home was made"
    assert "carol" not in hub.unix_accounts()
    assert hub.api("GET", "/users/carol").json()["servers"] == {}
    assert "Refused to start server carol" in hub.log()
    assert "no Unix account carol for hub user 'carol'" in hub.log(), "the admin detail"


def test_removing_a_person_leaves_their_account_as_it_was(hub: Hub, prefix: str) -> None:
    asmith = pwd.getpwnam(f"{prefix}asmith")
    line = shadow_line(asmith.pw_name)
    assert hub.unix_accounts().get("alice") == asmith.pw_name  # she has run as it
    refused = hub.mlrp("user", "remove", "alice", "--archive", "--config", str(hub.config_path))
    assert refused.returncode != 0
    assert "with accounts.mode: existing the accounts belong to the cluster's directory" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert hub.api("GET", "/users/alice").status_code == 200, "nothing was removed"

    removed = hub.mlrp("user", "remove", "alice", "--config", str(hub.config_path))
    assert removed.returncode == 0, removed.stderr
    assert hub.api("GET", "/users/alice").status_code == 404, "the hub user is gone"
    with pytest.raises(AssertionError):
        hub.login_session("alice", hub.passwords["alice"])  # and the login
    assert pwd.getpwnam(asmith.pw_name) == asmith, "the account is still there"
    assert shadow_line(asmith.pw_name) == line, "neither locked nor expired"
    fields = line.split(":")
    assert not fields[1].startswith("!") and fields[7] == "", "usable: no lock, no expiry"
    assert Path(asmith.pw_dir).is_dir()
    assert not (hub.data_dir / "archive").exists()

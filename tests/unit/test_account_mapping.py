"""accounts.mode existing: hub users run as Unix accounts that exist already (a cluster's
LDAP/SSSD), looked up through NSS and never created, changed or handed to two people.

The accounts here are real: made by the test with the real useradd under a per-run prefix (so
NSS answers for them exactly as for a directory account) and removed afterwards. A `useradd`
that records its calls and fails stands first on PATH wherever the code must not create one.
"""

from __future__ import annotations

import io
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import MemoryRecords, make_spawner
from harness import remove_accounts, run_prefix

from config.schema import ConfigError, parse
from hub import doctor, people
from hub.doctor import check_accounts
from hub.people import Context, PeopleError, Person
from hub.storage import SQLRecords
from spawners.accounts import (
    Account,
    AccountError,
    AccountPolicy,
    existing_problem,
    resolve_account,
)
from spawners.errors import PlacementError
from spawners.records import AccountClash

pytestmark = pytest.mark.unit

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes real Unix accounts")

RECORDING_USERADD = """#!/bin/sh
echo "$@" >> "{log}"
exit 1
"""
NO_ACCOUNT = (
    "There is no Unix account for you ({who}) on this cluster; ask your administrator to "
    "create one or map you to yours in accounts.map."
)
SYSTEM_ACCOUNT = (
    "The Unix account for you ({who}) is a system account, which servers never run as; ask "
    "your administrator to map you to your own account in accounts.map."
)


def cpu() -> dict[str, Any]:
    return {"slug": "cpu", "name": "CPU only"}


def problems_of(accounts: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse({"profiles": [cpu()], "accounts": accounts}, "test.yaml")
    return info.value.problems


# --- the YAML -----------------------------------------------------------------------------------

HUB_NAME_RULE = (
    "is not a hub user name (1-64 lowercase letters, digits, '.', '_' or '-', starting with a "
    "letter or digit)"
)
UNIX_NAME_RULE = (
    "is not a Unix account name MLRP can use (1-32 of a-z, 0-9, '_' and '-', starting with a "
    "letter or '_')"
)


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        (
            {"mode": "existing", "map": {"alice": "root"}},
            "accounts.map: alice: root is root (uid 0); a hub user never runs as root",
        ),
        (
            {"mode": "existing", "map": {"alice": "daemon"}},
            "accounts.map: alice: daemon is a system account (uid 1; people's accounts have "
            "uids from 1000); a hub user never runs as one",
        ),
        (
            {"mode": "existing", "map": {"alice": "nobody"}},
            "accounts.map: alice: nobody is a system account (uid 65534; people's accounts have "
            "uids from 1000); a hub user never runs as one",
        ),
        (
            {"mode": "existing", "map": {"alice": "x1", "bob": "x1", "carol": "x2"}},
            "accounts.map: alice, bob map to the same Unix account x1; an account belongs to "
            "one person",
        ),
        (
            {"mode": "existing", "map": {"Alice": "asmith"}},
            f"accounts.map: 'Alice' {HUB_NAME_RULE}",
        ),
        ({"mode": "existing", "map": {"a b": "asmith"}}, f"accounts.map: 'a b' {HUB_NAME_RULE}"),
        ({"mode": "existing", "map": {7: "asmith"}}, f"accounts.map: 7 {HUB_NAME_RULE}"),
        (
            {"mode": "existing", "map": {"alice": "A.Smith"}},
            f"accounts.map: alice: 'A.Smith' {UNIX_NAME_RULE}",
        ),
        (
            {"mode": "existing", "map": {"alice": "asmith@example.org"}},
            f"accounts.map: alice: 'asmith@example.org' {UNIX_NAME_RULE}",
        ),
        (
            {"mode": "existing", "map": {"alice": "$(id)"}},
            f"accounts.map: alice: '$(id)' {UNIX_NAME_RULE}",
        ),
        (
            {"mode": "existing", "map": {"alice": "a" * 33}},
            f"accounts.map: alice: '{'a' * 33}' {UNIX_NAME_RULE}",
        ),
        (
            {"mode": "existing", "map": {"alice": "-rf"}},
            f"accounts.map: alice: '-rf' {UNIX_NAME_RULE}",
        ),
        (
            {"mode": "existing", "map": {"alice": 1001}},
            "accounts.map: alice: the Unix account must be a name, such as asmith; got 1001",
        ),
        (
            {"mode": "existing", "map": {"alice": None}},
            "accounts.map: alice: the Unix account must be a name, such as asmith; got None",
        ),
        (
            {"mode": "existing", "map": ["alice", "asmith"]},
            "accounts.map: must be a mapping of hub user to Unix account, such as {alice: "
            "asmith}; got ['alice', 'asmith']",
        ),
        (
            {"mode": "existing", "map": "alice=asmith"},
            "accounts.map: must be a mapping of hub user to Unix account, such as {alice: "
            "asmith}; got 'alice=asmith'",
        ),
        (
            {"mode": "existing", "map": True},
            "accounts.map: must be a mapping of hub user to Unix account, such as {alice: "
            "asmith}; got True",
        ),
        (
            {"map": {"alice": "asmith"}},
            "accounts: map: only used with mode: existing (accounts that exist already); with "
            "mode: system accounts are created by MLRP as <prefix><hub name>. Set mode: "
            "existing or remove map.",
        ),
        (
            {"mode": "single-user", "map": {"alice": "asmith"}},
            "accounts: map: only used with mode: existing (accounts that exist already); with "
            "mode: single-user accounts are not used (every server runs as the hub's own "
            "account). Set mode: existing or remove map.",
        ),
        (
            {"mode": "exisiting"},
            "accounts.mode: Input should be 'system', 'existing' or 'single-user'; did you mean "
            "'existing'?",
        ),
        ({"mode": "ldap"}, "accounts.mode: Input should be 'system', 'existing' or 'single-user'"),
        ({"mode": "existing", "mapping": {}}, "accounts.mapping: unknown key; did you mean 'map'?"),
    ],
)
def test_a_bad_accounts_section_is_refused_with_a_sentence(accounts: Any, expected: str) -> None:
    assert expected in problems_of(accounts)


def test_every_problem_of_the_map_is_reported_at_once() -> None:
    found = problems_of({"mode": "existing", "map": {"alice": "root", "Bob": "x", "eve": "A.B"}})
    assert found == [
        "accounts.map: alice: root is root (uid 0); a hub user never runs as root; 'Bob' "
        f"{HUB_NAME_RULE}; eve: 'A.B' {UNIX_NAME_RULE}"
    ]


@pytest.mark.parametrize(
    ("accounts", "mode", "mapping"),
    [
        ({"mode": "existing"}, "existing", {}),
        ({"mode": "existing", "map": None}, "existing", {}),
        ({"mode": "existing", "map": {"alice": "asmith", "j.doe": "jdoe"}}, "existing", None),
        ({"mode": "existing", "map": {"alice": "bob", "bob": "alice"}}, "existing", None),
        ({"mode": "system", "map": {}}, "system", {}),
        ({}, "system", {}),
    ],
)
def test_a_good_accounts_section_becomes_the_policy(
    accounts: dict[str, Any], mode: str, mapping: dict[str, str] | None
) -> None:
    policy = parse({"profiles": [cpu()], "accounts": accounts}).accounts.policy()
    assert policy.mode == mode
    assert dict(policy.mapping) == (accounts.get("map") if mapping is None else mapping)


def test_the_map_reaches_the_spawner(tmp_path: Path) -> None:
    from traitlets.config import Config

    from config.render import configure

    c = Config()
    cfg = parse(
        {
            "hub": {"data_dir": str(tmp_path)},
            "profiles": [cpu()],
            "accounts": {"mode": "existing", "map": {"a": "asmith"}},
        }
    )
    configure(c, cfg, records=None)
    assert c.MLRPSpawner.accounts_mode == "existing"
    assert c.MLRPSpawner.account_map == {"a": "asmith"}
    assert c.NativeAuthenticator.system_accounts is False  # removal never locks them


# --- resolve_account with real accounts -----------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    p = run_prefix()
    yield p
    remove_accounts(p)


@pytest.fixture
def useradd_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A useradd (and usermod, userdel) first on PATH that records its calls and fails."""
    where = tmp_path / "bin"
    where.mkdir()
    log = tmp_path / "useradd.log"
    for tool in ("useradd", "usermod", "userdel", "chown"):
        (where / tool).write_text(RECORDING_USERADD.format(log=log))
        (where / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{where}:{os.environ['PATH']}")
    return log


def make_account(name: str, home_root: Path) -> Account:
    """A real Unix account, as the directory would have it (home made by the admin)."""
    home_root.mkdir(exist_ok=True)
    subprocess.run(
        ["/usr/sbin/useradd", "--create-home", "--home-dir", str(home_root / name), name],
        check=True,
        capture_output=True,
    )
    pw = pwd.getpwnam(name)
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def snapshot(account: Account) -> tuple[Any, ...]:
    """Everything of an account that MLRP must leave alone."""
    info = account.home.stat()
    with open("/etc/shadow") as f:
        shadow = next(line for line in f if line.startswith(account.name + ":"))
    return (pwd.getpwnam(account.name), info.st_uid, info.st_gid, info.st_mode, shadow)


def getent() -> list[str]:
    return sorted(pw.pw_name for pw in pwd.getpwall())


Policy = Callable[..., AccountPolicy]


@pytest.fixture
def existing(prefix: str, tmp_path: Path) -> Policy:
    """existing mode with this run's prefix and homes in tmp_path: were the code ever to create
    accounts after all (a mutant that does), it could make only ones the prefix fixture removes."""

    def make(**mapping: str) -> AccountPolicy:
        return AccountPolicy("existing", prefix, tmp_path / "made-homes", mapping)

    return make


@needs_root
async def test_an_existing_account_is_used_as_it_is(
    records: SQLRecords, prefix: str, tmp_path: Path, useradd_log: Path, existing: Policy
) -> None:
    made = make_account(f"{prefix}alice", tmp_path / "home")
    before = snapshot(made)
    policy = existing(alice=made.name)
    account, created = await resolve_account(records, "alice", policy)
    assert (account, created) == (made, False)
    assert records.unix_account("alice") == made.name, "recorded, so nobody else gets it"
    again, created = await resolve_account(records, "alice", policy)
    assert (again, created) == (made, False)
    assert snapshot(made) == before, "never changed, chowned, locked"
    assert not useradd_log.exists()


@needs_root
async def test_an_unmapped_hub_user_runs_as_the_account_of_their_name(
    records: SQLRecords, prefix: str, tmp_path: Path, existing: Policy
) -> None:
    hub_name = f"{prefix}bob"  # a hub name that is also a Unix name
    made = make_account(hub_name, tmp_path / "home")
    account, created = await resolve_account(records, hub_name, existing())
    assert (account, created) == (made, False)


@needs_root
async def test_a_person_without_an_account_gets_a_sentence_and_nothing_is_made(
    records: SQLRecords, prefix: str, useradd_log: Path, existing: Policy
) -> None:
    before = getent()
    hub_name = f"{prefix}carol"
    with pytest.raises(AccountError) as info:
        await resolve_account(records, hub_name, existing())
    assert info.value.for_user == NO_ACCOUNT.format(who=hub_name)
    assert f"no Unix account {hub_name} for hub user '{hub_name}'" in str(info.value)
    with pytest.raises(AccountError) as info:
        await resolve_account(records, "dave", existing(dave=f"{prefix}dsmith"))
    assert info.value.for_user == NO_ACCOUNT.format(who=f"dave, mapped to {prefix}dsmith")
    assert getent() == before
    assert not Path(f"/home/{hub_name}").exists()
    assert not useradd_log.exists()
    assert records.unix_account(hub_name) is None, "nothing recorded for a refused spawn"


@pytest.mark.parametrize(
    ("hub_user", "mapping", "who"),
    [
        ("root", {}, "root"),  # a hub user named root
        ("alice", {"alice": "root"}, "alice, mapped to root"),  # a map the YAML check missed
        ("alice", {"alice": "daemon"}, "alice, mapped to daemon"),
        ("alice", {"alice": "nobody"}, "alice, mapped to nobody"),
    ],
)
async def test_root_and_system_accounts_are_refused(
    records: SQLRecords,
    hub_user: str,
    mapping: dict[str, str],
    who: str,
    useradd_log: Path,
    existing: Policy,
) -> None:
    with pytest.raises(AccountError) as info:
        await resolve_account(records, hub_user, existing(**mapping))
    assert info.value.for_user == SYSTEM_ACCOUNT.format(who=who)
    assert "people's accounts have uids from 1000" in str(info.value)
    assert records.unix_account(hub_user) is None
    assert not useradd_log.exists()


@pytest.mark.parametrize("hub_user", ["john.smith", "x" * 40])
async def test_a_hub_name_that_is_no_unix_name_must_be_mapped(
    records: SQLRecords, hub_user: str, existing: Policy
) -> None:
    with pytest.raises(AccountError) as info:
        await resolve_account(records, hub_user, existing())
    assert info.value.for_user == (
        f"Your hub name ({hub_user}) cannot be used as a Unix account name; ask your "
        "administrator to map you to your own account in accounts.map."
    )


@needs_root
async def test_two_hub_users_never_share_an_account(
    records: SQLRecords, prefix: str, tmp_path: Path, existing: Policy
) -> None:
    shared = make_account(f"{prefix}asmith", tmp_path / "home")
    await resolve_account(records, "alice", existing(alice=shared.name))
    # The map changed (or a second entry slipped past the YAML check): bob is refused.
    with pytest.raises(AccountClash, match=f"Unix account {shared.name} already belongs to"):
        await resolve_account(records, "bob", existing(bob=shared.name))
    # An unmapped hub user whose name is that account: refused as well.
    with pytest.raises(AccountClash):
        await resolve_account(records, shared.name, existing())
    assert records.unix_account("alice") == shared.name
    assert records.unix_account("bob") is None


@needs_root
async def test_a_person_is_never_moved_to_another_account_by_a_changed_map(
    records: SQLRecords, prefix: str, tmp_path: Path, existing: Policy
) -> None:
    first = make_account(f"{prefix}first", tmp_path / "home")
    second = make_account(f"{prefix}second", tmp_path / "home")
    await resolve_account(records, "alice", existing(alice=first.name))
    with pytest.raises(AccountError, match=f"has run as Unix account {first.name}, but now"):
        await resolve_account(records, "alice", existing(alice=second.name))
    assert records.unix_account("alice") == first.name


@needs_root
async def test_a_removed_persons_account_is_not_handed_to_a_new_one(
    records: SQLRecords, prefix: str, tmp_path: Path, existing: Policy
) -> None:
    made = make_account(f"{prefix}alice", tmp_path / "home")
    await resolve_account(records, "alice", existing(alice=made.name))
    records.retire_unix_account("alice")  # what removing alice does
    with pytest.raises(AccountClash, match="who was removed"):
        await resolve_account(records, "alice", existing(alice=made.name))


async def test_system_and_single_user_modes_are_as_before(
    records: SQLRecords, tmp_path: Path, useradd_log: Path
) -> None:
    me = pwd.getpwuid(os.getuid())
    account, created = await resolve_account(
        records, "alice", AccountPolicy("single-user", "mlrp-", tmp_path)
    )
    assert (account.name, account.uid, created) == (me.pw_name, me.pw_uid, False)
    # system: ensure_account, which creates mlrp-<name> with useradd (here: a failing one)
    with pytest.raises(AccountError, match="useradd tq-alice failed"):
        await resolve_account(records, "alice", AccountPolicy("system", "tq-", tmp_path))
    assert "tq-alice" in useradd_log.read_text()
    with pytest.raises(AccountError, match="unknown accounts mode 'ldap'"):
        await resolve_account(records, "alice", AccountPolicy("ldap", "tq-", tmp_path))


# --- the spawner: the person sees the sentence --------------------------------------------------


async def test_the_spawn_is_refused_with_the_persons_sentence(
    tmp_path: Path, prefix: str, useradd_log: Path
) -> None:
    hub_name = f"{prefix}eve"
    records = MemoryRecords()
    sp = make_spawner(
        records,
        [{"slug": "cpu", "name": "CPU", "backend": "local", "image_env": "/nonexistent"}],
        tmp_path,
        user=hub_name,
        accounts_mode="existing",
        account_map={"other": "x"},
        account_prefix=prefix,  # were it to create one after all: one the fixture removes
        home_root=str(tmp_path / "made-homes"),
    )
    assert sp.platform.multi_user, "existing accounts are people's own, never the hub's"
    assert dict(sp.platform.accounts.mapping) == {"other": "x"}
    sp.user_options = {"profile": "cpu"}
    with pytest.raises(PlacementError) as info:
        await sp.start()
    assert str(info.value) == NO_ACCOUNT.format(who=hub_name)
    assert info.value.status_code == 403
    assert info.value.failure_reason == "account"
    assert records.accounts == {}
    assert not useradd_log.exists()


# --- mlrp user add / remove, and the doctor -------------------------------------------------


def context(records: SQLRecords, tmp_path: Path, accounts: dict[str, Any]) -> Context:
    cfg = parse(
        {
            "hub": {"data_dir": str(tmp_path / "data")},
            "accounts": accounts,
            "profiles": [cpu()],
        }
    )
    return Context(cfg, records, hub=None, warn=warnings.append)


warnings: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    warnings.clear()


@needs_root
def test_adding_a_person_without_an_account_warns_the_admin(
    records: SQLRecords, prefix: str, tmp_path: Path, useradd_log: Path
) -> None:
    made = make_account(f"{prefix}asmith", tmp_path / "home")
    ctx = context(records, tmp_path, {"mode": "existing", "map": {"alice": made.name}})
    added = people.add(ctx, [Person("alice", password="x" * 12), Person("nobodyhere")])
    assert sorted(added) == ["alice", "nobodyhere"], "the logins are made all the same"
    assert warnings == [
        "nobodyhere can log in but cannot start a server yet: no Unix account nobodyhere for "
        "hub user 'nobodyhere' (accounts.mode: existing never creates one): create it in the "
        "directory (LDAP/SSSD) or map the person to theirs under accounts.map."
    ]
    assert not useradd_log.exists()


def test_adding_in_system_mode_warns_about_nothing(records: SQLRecords, tmp_path: Path) -> None:
    ctx = context(records, tmp_path, {"mode": "system"})
    people.add(ctx, [Person("nobodyhere")])
    assert warnings == []


def test_adding_root_warns_that_it_is_a_system_account(records: SQLRecords, tmp_path: Path) -> None:
    ctx = context(records, tmp_path, {"mode": "existing"})
    people.add(ctx, [Person("root")])
    assert len(warnings) == 1
    assert (
        "root can log in but cannot start a server yet: Unix account root has uid 0"
        in (warnings[0])
    )


@needs_root
def test_removing_leaves_the_account_alone_and_archive_is_refused(
    records: SQLRecords, prefix: str, tmp_path: Path, useradd_log: Path
) -> None:
    made = make_account(f"{prefix}asmith", tmp_path / "home")
    before = snapshot(made)
    ctx = context(records, tmp_path, {"mode": "existing", "map": {"alice": made.name}})
    people.add(ctx, [Person("alice")])
    records.claim_unix_account("alice", made.name)  # as her first spawn did
    with pytest.raises(PeopleError) as info:
        people.remove(ctx, "alice", archive_to=tmp_path / "archive")
    assert str(info.value) == (
        "--archive packs a Unix account MLRP created into an archive and deletes it; with "
        "accounts.mode: existing the accounts belong to the cluster's directory and MLRP never "
        "deletes them. Run `mlrp user remove alice` without --archive (their account and files "
        "stay as they are)."
    )
    assert records.unix_account("alice") == made.name, "nothing was done"
    done = people.remove(ctx, "alice")  # the hub is down: no hub user to delete here
    assert (done.unix_account, done.home, done.archive) == (made.name, None, None)
    assert records.unix_account("alice") is None, "no longer hers on the hub"
    assert snapshot(made) == before, "not locked, not archived, not deleted"
    assert not useradd_log.exists()
    assert not (tmp_path / "archive").exists()


@needs_root
def test_the_doctor_counts_people_without_an_account(
    records: SQLRecords, url: str, prefix: str, tmp_path: Path, existing: Policy
) -> None:
    made = make_account(f"{prefix}asmith", tmp_path / "home")
    policy = existing(alice=made.name, dave=f"{prefix}dsmith")
    for name in ("alice", "carol", "dave", "root"):
        people.accounts.set_password(records, name, "x" * 12)
    row = check_accounts(policy, ["alice", "carol", "dave", "root"])
    assert not row.ok and not row.required
    assert row.detail == (
        f"existing: 3 of 4 logins without a usable Unix account, so no server: carol, dave "
        f"({prefix}dsmith), root"
    )
    assert row.fix == doctor.EXISTING_ACCOUNTS_FIX
    assert check_accounts(policy, ["alice"]).detail == (
        "existing: looked up, never created; 1 login, each with one"
    )
    out = io.StringIO()
    code = doctor.main(
        data_dir=tmp_path,
        proxy_command=["/bin/true"],
        gpu_source="auto",
        slurm_configured=False,
        out=out,
        db_url=url,
        accounts=policy,
    )
    table = out.getvalue()
    assert "Unix accounts" in table and "3 of 4 logins without a usable Unix account" in table
    assert "fix: Create the missing accounts" in table
    assert "useradd" not in table.split("\n\n")[0], "existing mode never needs useradd"
    assert code in (0, 1)  # other rows judge this machine; the accounts row is not required


def test_the_doctor_names_the_other_modes(tmp_path: Path, existing: Policy) -> None:
    assert check_accounts(AccountPolicy("system", "mlrp-"), None).detail == (
        "system: created on first start (mlrp-<name>)"
    )
    assert check_accounts(AccountPolicy("single-user"), None).ok
    assert existing_problem("root", existing()) is not None

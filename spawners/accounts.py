"""Hub user → Unix account: an injective, safe mapping, and account creation.

Mapping rule (prefix defaults to ``mlrp-``):

- a hub name of 1-20 lowercase ASCII letters/digits starting with a letter maps to
  ``<prefix><name>``: ``alice`` → ``mlrp-alice``;
- any other name (capitals, dots, unicode, long, hostile) maps to
  ``<prefix without '-'>_<16 base32 chars of sha256(name)>``.

The two branches cannot meet (the character after the prefix stem is ``-`` in one and ``_`` in the
other), the first is the identity on its names, and the second is recorded in the database, which
refuses a second hub user claiming an account (so even a hash collision cannot merge two people).
Account names are always 3-32 characters of [a-z0-9_-]: safe for useradd and for paths.

That is `accounts.mode: system`. On a cluster the accounts exist already (LDAP/SSSD):
`accounts.mode: existing` maps each hub user to the account of the same name, or to the one
`accounts.map` names, and only looks it up (through NSS, so directory accounts count): it never
creates, changes or chowns an account, refuses a system account (uid below 1000, or nobody), and
records the mapping like the created ones, so two hub users can never share an account.
`resolve_account` is the one entry point backends call, whatever the mode.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from spawners.records import Records

SIMPLE_NAME = re.compile(r"^[a-z][a-z0-9]{0,19}$")
# JupyterHub 6 allows only such server names (its "safe slug", at most 30 characters); 5.x
# allows anything, including "my server" and "../x".
SIMPLE_SERVER = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
UID_MIN = 1000
NOBODY_UID = 65534  # the overflow account daemons and NFS root squashing share
# Unix names `accounts.mode: existing` accepts: what useradd accepts by default, without '.', so
# that server_tag stays injective, and at most 32 characters, so that it stays one short path
# component. Directory names outside it ("John.Smith", "alice@example.org") need accounts.map.
UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MODES = ("system", "existing", "single-user")
_useradd_lock = asyncio.Lock()  # useradd locks /etc/passwd; concurrent calls fail, so queue them


def _hashed(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:16]


def unix_name_for(hub_user: str, prefix: str = "mlrp-", generation: int = 0) -> str:
    """The Unix account of `hub_user`. Generation n > 0 is the account of the (n+1)-th person
    given this hub name, after the earlier ones were removed: a hashed name (NUL cannot be in a
    hub name, so this never equals another name's account), never the removed person's."""
    if generation:
        return f"{prefix.rstrip('-')}_{_hashed(hub_user + chr(0) + str(generation))}"
    if SIMPLE_NAME.fullmatch(hub_user):
        return prefix + hub_user
    return f"{prefix.rstrip('-')}_{_hashed(hub_user)}"


def fresh_unix_name(records: Records, hub_user: str, prefix: str) -> str:
    """`hub_user`'s account: the one recorded, else the first of their names that no removed
    person held (a re-added name must not inherit the earlier person's files)."""
    recorded = records.unix_account(hub_user)
    generation = 0
    while True:
        name = unix_name_for(hub_user, prefix, generation)
        if name == recorded or not records.unix_name_retired(name):
            return name
        generation += 1


def server_tag(account: str, server_name: str) -> str:
    """The name of one server's cgroup and log file: ``mlrp-alice`` for the default server,
    ``mlrp-alice.lab2`` for a named server with a simple name, ``mlrp-alice._<16 base32>`` for
    any other name ("my server", "../x", "Ünï").

    Injective: account names never contain '.', and a simple server name never starts with
    '_'. At most 32 + 1 + 30 = 63 characters of [a-z0-9_.-]: one safe path component, valid as
    a cgroup name, never a way out of the directory it is joined to.
    """
    if not server_name:
        return account
    if SIMPLE_SERVER.fullmatch(server_name):
        return f"{account}.{server_name}"
    return f"{account}._{_hashed(server_name)}"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: Path


class AccountError(Exception):
    """The Unix account cannot be used. `str()` is for the admin log; `for_user`, when set, is
    the sentence the person sees (None: the platform's generic one, the details are the admin's).
    """

    def __init__(self, detail: str, for_user: str | None = None) -> None:
        super().__init__(detail)
        self.for_user = for_user


def find_account(name: str) -> Account | None:
    """The Unix account `name`, or None if there is none."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def current_account() -> Account:
    pw = pwd.getpwuid(os.getuid())
    return Account(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


async def ensure_account(
    records: Records, hub_user: str, prefix: str, home_root: Path
) -> tuple[Account, bool]:
    """Find or create the Unix account of `hub_user`; returns (account, created)."""
    name = fresh_unix_name(records, hub_user, prefix)
    records.claim_unix_account(hub_user, name)  # raises AccountClash if someone else has it
    existing = find_account(name)
    if existing is not None:
        if existing.uid < UID_MIN:
            raise AccountError(
                f"Unix account {name} exists with uid {existing.uid} (a system account); "
                "refusing to run a user server as it. Remove it or change accounts.prefix."
            )
        return existing, False
    async with _useradd_lock:
        home = home_root / name
        proc = await asyncio.create_subprocess_exec(
            "useradd",
            # Private from the first instant (shadow >= 4.8); chmod below for older ones.
            "--key",
            "HOME_MODE=0700",
            "--create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/bash",
            "--user-group",
            "--comment",
            "MLRP user",
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise AccountError(f"useradd {name} failed: {err.decode(errors='replace').strip()}")
    account = find_account(name)
    if account is None:
        raise AccountError(f"useradd {name} succeeded but the account cannot be found")
    # People must not read each other's files, whatever login.defs says (HOME_MODE 0755 or a
    # UMASK of 022 on some distributions, a useradd that ignores --key HOME_MODE on old ones).
    os.chmod(account.home, 0o700)
    return account, True


# -- existing accounts (a cluster's directory) and the one entry point -----------------------
@dataclass(frozen=True)
class AccountPolicy:
    """How hub users get Unix accounts (the `accounts` section of the YAML).

    mode: ``system`` (created as ``<prefix><name>`` on first start), ``existing`` (looked up,
    never created: ``mapping`` names the account of a hub user whose Unix name differs, everyone
    else has the account of their own name) or ``single-user`` (the hub's own account).
    """

    mode: str = "system"
    prefix: str = "mlrp-"
    home_root: Path = Path("/home")
    mapping: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: the policy is shared by every spawner of a hub.
        object.__setattr__(self, "mapping", MappingProxyType(dict(self.mapping)))

    def existing_name(self, hub_user: str) -> str:
        """The Unix account `hub_user` runs as in existing mode (not checked)."""
        return self.mapping.get(hub_user, hub_user)

    def you(self, hub_user: str) -> str:
        """How a sentence names the person: ``you (alice)``, ``you (alice, mapped to asmith)``."""
        name = self.existing_name(hub_user)
        return f"you ({hub_user})" if name == hub_user else f"you ({hub_user}, mapped to {name})"


def existing_account(hub_user: str, policy: AccountPolicy) -> Account:
    """`hub_user`'s account in existing mode, looked up and checked; never created or changed.

    AccountError (with a sentence for the person) when the name cannot be a Unix account, there
    is no such account, or it is a system account."""
    name = policy.existing_name(hub_user)
    ask = "ask your administrator to map you to your own account in accounts.map."
    if not UNIX_NAME.fullmatch(name):
        raise AccountError(
            f"{name!r} (hub user {hub_user!r}) is not a Unix name MLRP uses (1-32 of a-z, 0-9, "
            f"'_' and '-', starting with a letter or '_'); map {hub_user!r} to their account "
            "under accounts.map",
            for_user=f"Your hub name ({hub_user}) cannot be used as a Unix account name; {ask}",
        )
    account = find_account(name)
    if account is None:
        raise AccountError(
            f"no Unix account {name} for hub user {hub_user!r} (accounts.mode: existing never "
            "creates one): create it in the directory (LDAP/SSSD) or map the person to theirs "
            "under accounts.map",
            for_user=f"There is no Unix account for {policy.you(hub_user)} on this cluster; ask "
            "your administrator to create one or map you to yours in accounts.map.",
        )
    if account.name != name:
        # An alias the directory resolves (SSSD, case folding): the name servers would run as,
        # and the one recorded, must be the account's own.
        raise AccountError(
            f"the directory answers for {name!r} (hub user {hub_user!r}) with Unix account "
            f"{account.name!r}; map {hub_user!r} to {account.name!r} under accounts.map",
            for_user=f"The Unix account for {policy.you(hub_user)} goes by another name; {ask}",
        )
    if account.uid < UID_MIN or account.uid == NOBODY_UID:
        kind = "root" if account.uid == 0 else "a system account"
        raise AccountError(
            f"Unix account {name} has uid {account.uid} ({kind}; people's accounts have uids "
            f"from {UID_MIN}); refusing to run {hub_user!r}'s server as it. Map {hub_user!r} to "
            "their own account under accounts.map",
            for_user=f"The Unix account for {policy.you(hub_user)} is a system account, which "
            f"servers never run as; {ask}",
        )
    return account


def existing_problem(hub_user: str, policy: AccountPolicy) -> str | None:
    """Why `hub_user` cannot start a server in existing mode (for the admin), or None."""
    try:
        existing_account(hub_user, policy)
    except AccountError as e:
        return str(e)
    return None


async def resolve_account(
    records: Records, hub_user: str, policy: AccountPolicy
) -> tuple[Account, bool]:
    """The Unix account `hub_user`'s servers run as, and whether it was created just now.

    system: found or created (`ensure_account`). existing: looked up, never created, and
    recorded as theirs (AccountClash if another hub user has it). single-user: the hub's own."""
    if policy.mode == "system":
        return await ensure_account(records, hub_user, policy.prefix, policy.home_root)
    if policy.mode == "single-user":
        return current_account(), False
    if policy.mode != "existing":
        raise AccountError(f"unknown accounts mode {policy.mode!r}; one of {', '.join(MODES)}")
    # A directory lookup (LDAP through SSSD) may wait on the network: not on the event loop.
    account = await asyncio.to_thread(existing_account, hub_user, policy)
    recorded = records.unix_account(hub_user)
    if recorded is not None and recorded != account.name:
        raise AccountError(
            f"hub user {hub_user!r} has run as Unix account {recorded}, but now maps to "
            f"{account.name}; MLRP never moves a person to another account by itself. Put "
            f"accounts.map back, or, if {account.name} is really theirs, delete the row for "
            f"{hub_user!r} from unix_accounts in the MLRP database."
        )
    records.claim_unix_account(hub_user, account.name)  # AccountClash if someone else has it
    return account, False

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
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from spawners.records import Records

SIMPLE_NAME = re.compile(r"^[a-z][a-z0-9]{0,19}$")
# JupyterHub 6 allows only such server names (its "safe slug", at most 30 characters); 5.x
# allows anything, including "my server" and "../x".
SIMPLE_SERVER = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
UID_MIN = 1000
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
    """The Unix account cannot be used; message is for the admin log, not for end users."""


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

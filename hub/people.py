"""What `mlrp user` does to people: add (with groups), import a CSV, passwd, logout, remove.

With the hub running, everything the hub keeps (hub users, groups, sessions, tokens, servers)
is changed through its API (hub/hub_client.py), so its in-memory state is right and removal runs
JupyterHub's own deletion, the same path as the admin page's "Delete user". With the hub down,
the same is written to its database (hub/jhdb.py); group memberships then need the hub.

Every input is checked before anything is changed: one bad row of an import creates nobody.
"""

from __future__ import annotations

import csv
import io
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from config.schema import MLRPConfig
from config.suggest import nearest
from hub import accounts, jhdb, offboard
from hub.hub_client import HubClient, HubError, check
from hub.storage import SQLRecords, now
from spawners.accounts import AccountPolicy, existing_problem

EMAIL_RE = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
MAX_IMPORT_ROWS = 5000


class PeopleError(Exception):
    """Input that cannot be used, or a step that cannot be done now; `str()` says what to do."""


def print_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


@dataclass
class Context:
    cfg: MLRPConfig
    records: SQLRecords
    hub: HubClient | None  # None: the hub is not running
    warn: Callable[[str], None] = print_warning  # what the admin should know; nothing failed

    @property
    def jh_db(self) -> Path:
        return self.cfg.hub.data_dir / "jupyterhub.sqlite"

    @property
    def system_accounts(self) -> bool:
        return self.cfg.accounts.mode == "system"

    @property
    def policy(self) -> AccountPolicy:
        return self.cfg.accounts.policy()


@dataclass
class Person:
    name: str
    groups: list[str] = field(default_factory=list)
    email: str | None = None
    password: str | None = None  # given (--password-stdin); None: generate one


# -- checks --------------------------------------------------------------------------------
def group_problem(cfg: MLRPConfig, group: str) -> str | None:
    if group in cfg.groups:
        return None
    known = sorted(cfg.groups)
    near = nearest(group, known)
    hint = f" Did you mean {near!r}?" if near else ""
    listed = ", ".join(known) if known else "none (add a groups: section to the YAML)"
    return f"there is no group {group!r} in the configuration.{hint} Groups: {listed}."


def check_people(ctx: Context, people: list[Person], where: list[str] | None = None) -> None:
    """Raise PeopleError listing every problem (name, group, e-mail, duplicate, existing)."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, p in enumerate(people):
        at = f"{where[i]}: " if where else ""
        try:
            accounts.check_username(p.name)
        except accounts.AccountInputError as e:
            problems.append(f"{at}{e}")
            continue
        if p.name in seen:
            problems.append(f"{at}{p.name} is listed twice.")
        seen.add(p.name)
        if accounts.exists(ctx.records, p.name):
            problems.append(
                f"{at}{p.name} already has a login; use `mlrp user passwd {p.name}` for a new "
                "password."
            )
        for g in p.groups:
            problem = group_problem(ctx.cfg, g)
            if problem:
                problems.append(f"{at}{p.name}: {problem}")
        if p.email is not None and not EMAIL_RE.fullmatch(p.email):
            problems.append(f"{at}{p.name}: {p.email!r} is not an e-mail address.")
    if any(p.groups for p in people) and ctx.hub is None:
        problems.append(
            "group memberships are kept by the hub, which is not running: start it (mlrp up) and "
            "run this again, or list the people under groups: in the YAML."
        )
    if problems:
        raise PeopleError("\n".join(problems))


# -- add and import ---------------------------------------------------------------------------
def add(ctx: Context, people: list[Person], min_length: int = 10) -> dict[str, str]:
    """Create logins, hub users and group memberships; returns name → password (generated or
    given). Checked first; if the hub then refuses a step, the logins made are deleted again."""
    check_people(ctx, people)
    for p in people:
        if p.password is not None and len(p.password) < min_length:
            raise PeopleError(f"The password must have at least {min_length} characters.")
    made: dict[str, str] = {}
    try:
        for p in people:
            made[p.name] = accounts.set_password(
                ctx.records, p.name, p.password, min_length=min_length, email=p.email
            )
        if ctx.hub is not None:
            _hub_users(ctx.hub, [p.name for p in people])
            by_group: dict[str, list[str]] = {}
            for p in people:
                for g in p.groups:
                    by_group.setdefault(g, []).append(p.name)
            for g, members in by_group.items():
                _join(ctx.hub, g, members)
    except BaseException:
        for name in made:
            accounts.delete(ctx.records, name)
        raise
    for p in people:
        problem = account_problem(ctx, p.name)
        if problem:
            ctx.warn(f"{p.name} can log in but cannot start a server yet: {problem}.")
    return made


def account_problem(ctx: Context, name: str) -> str | None:
    """Why `name` could not start a server for want of a Unix account (existing mode: the
    accounts are the directory's, and MLRP makes none), or None."""
    policy = ctx.policy
    if policy.mode != "existing":
        return None
    problem = existing_problem(name, policy)
    if problem:
        return problem
    unix = policy.existing_name(name)
    if ctx.records.unix_account(name) is None and ctx.records.unix_name_retired(unix):
        return (
            f"Unix account {unix} belonged to a person who was removed, and is not handed to "
            f"a new one; if it is theirs, run `mlrp user remove {name}` and then `mlrp user add "
            f"{name} --restore`"
        )
    return None


def _hub_users(hub: HubClient, names: list[str]) -> None:
    r = hub("POST", "/users", json={"usernames": names})
    check(r, f"create hub users {', '.join(names)}", ok=(201, 409))


def _join(hub: HubClient, group: str, names: list[str]) -> None:
    r = hub("POST", f"/groups/{group}/users", json={"users": names})
    if r.status_code == 404:  # in the YAML but not made yet (no member listed there)
        check(hub("POST", f"/groups/{group}"), f"create group {group}", ok=(201, 409))
        r = hub("POST", f"/groups/{group}/users", json={"users": names})
    check(r, f"add {', '.join(names)} to group {group}")


def parse_csv(text: str, source: str) -> tuple[list[Person], list[str]]:
    """Rows of `name,groups,email` (groups separated by ';' or spaces; e-mail optional; a header
    row naming the columns is skipped). Returns people and each one's "FILE:LINE"."""
    people: list[Person] = []
    where: list[str] = []
    problems: list[str] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if line_no == 1 and cells[0].lower() in ("name", "username", "user"):
            continue
        if len(cells) > 3:
            problems.append(
                f"{source}:{line_no}: {len(cells)} columns; expected name, groups, e-mail "
                "(separate several groups with ';')."
            )
            continue
        name = cells[0]
        groups = re.split(r"[;\s]+", cells[1]) if len(cells) > 1 and cells[1] else []
        email = cells[2] if len(cells) > 2 and cells[2] else None
        people.append(Person(name, [g for g in groups if g], email))
        where.append(f"{source}:{line_no}")
        if len(people) > MAX_IMPORT_ROWS:
            raise PeopleError(f"{source}: more than {MAX_IMPORT_ROWS} people; split the file.")
    if problems:
        raise PeopleError("\n".join(problems))
    if not people:
        raise PeopleError(f"{source}: no people in it (one per line: name,groups,email).")
    return people, where


def import_csv(ctx: Context, text: str, source: str, min_length: int = 10) -> dict[str, str]:
    people, where = parse_csv(text, source)
    check_people(ctx, people, where)
    return add(ctx, people, min_length)


# -- restore ------------------------------------------------------------------------------
def restore(ctx: Context, name: str) -> tuple[str, Path | None]:
    try:
        return offboard.restore(ctx.records, name, system_accounts=ctx.system_accounts)
    except offboard.OffboardError as e:
        raise PeopleError(str(e)) from None


# -- sessions -------------------------------------------------------------------------------
def end_sessions(ctx: Context, name: str) -> int:
    """End every session of `name` and revoke their tokens (not their running servers')."""
    if ctx.hub is None:
        return jhdb.end_sessions(ctx.jh_db, name)
    r = ctx.hub("POST", f"/mlrp/users/{name}/end-sessions")
    if r.status_code == 404:  # never logged in: no hub user, so no session
        return 0
    check(r, f"end the sessions of {name}")
    return int(r.json().get("revoked", 0))


# -- remove ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Removed:
    hub_user: bool
    unix_account: str | None
    home: Path | None
    archive: Path | None = None


STOP_WAIT = 120.0  # s: how long offboarding waits for a server that is slow to stop


def _stopping(hub: HubClient, name: str) -> bool:
    r = hub("GET", f"/users/{name}")
    servers = r.json().get("servers", {}) if r.status_code == 200 else {}
    return any(s.get("pending") == "stop" for s in servers.values())


def delete_hub_user(
    hub: HubClient, name: str, wait: float = STOP_WAIT, pause: float = 1.0
) -> requests.Response:
    """DELETE the hub user. JupyterHub refuses (400) while one of their servers is still
    stopping (past its 10 s slow_stop_timeout, e.g. a server that ignores SIGINT and is killed
    later): offboarding then waits for the stop to end, up to `wait` seconds, and asks again."""
    deadline = time.monotonic() + wait
    while True:
        r = hub("DELETE", f"/users/{name}")
        if r.status_code != 400 or time.monotonic() > deadline or not _stopping(hub, name):
            return r
        time.sleep(pause)


def remove(ctx: Context, name: str, archive_to: Path | None = None) -> Removed:
    """Offboard `name`: servers stopped (GPUs freed), sessions and tokens gone, hub user and
    memberships deleted, login deleted, Unix account retired and locked (or archived).

    In accounts.mode existing the Unix account is the directory's, not MLRP's: it is only no
    longer theirs on the hub (retired), never locked, archived or deleted."""
    if archive_to is not None and ctx.policy.mode == "existing":
        raise PeopleError(
            f"--archive packs a Unix account MLRP created into an archive and deletes it; with "
            f"accounts.mode: existing the accounts belong to the cluster's directory and MLRP "
            f"never deletes them. Run `mlrp user remove {name}` without --archive (their account "
            "and files stay as they are)."
        )
    known = accounts.exists(ctx.records, name) or ctx.records.unix_account(name) is not None
    started = now()
    if ctx.hub is not None:
        r = delete_hub_user(ctx.hub, name)
        if r.status_code == 404 and not known:
            raise PeopleError(f"There is no user {name!r}.")
        check(r, f"remove {name}", ok=(204, 404))
        hub_user = r.status_code == 204
        # Deleting the hub user ran offboard.retire in the hub (NativeAuthenticator.delete_user);
        # a person who never logged in had no hub user, so it is done here.
        done = offboard.retire(ctx.records, name, system_accounts=ctx.system_accounts)
    else:
        try:
            hub_user = jhdb.delete_user(ctx.jh_db, name)
        except jhdb.HubDown as e:
            raise PeopleError(str(e)) from None
        if not hub_user and not known:
            raise PeopleError(f"There is no user {name!r}.")
        done = offboard.retire(ctx.records, name, system_accounts=ctx.system_accounts)
    # Retired just now, here or by the hub (not an account of an earlier removal of the name).
    retired = [r for r in ctx.records.retired_unix_accounts(name) if r.retired >= started]
    unix = done.unix_account or (retired[0].unix_name if retired else None)
    home = offboard.home_of(unix) if unix and ctx.system_accounts else None
    archived = None
    if archive_to is not None and unix is not None and home is not None:
        try:
            archived = offboard.archive(ctx.records, unix, archive_to)
        except offboard.OffboardError as e:
            raise PeopleError(f"{name} was removed, but archiving failed: {e}") from None
        home = None
    return Removed(hub_user, unix, home, archived)


__all__ = ["Context", "HubError", "PeopleError", "Person"]

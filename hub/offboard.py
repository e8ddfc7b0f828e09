"""Offboarding: what removing a person does to their login and Unix account.

One code path, whoever removes them: JupyterHub's user deletion (the admin page's "Delete user"
and `mlrp user remove`, which calls the hub's API) first stops their servers (which frees their
GPUs) and then calls `NativeAuthenticator.delete_user`, which calls `retire` here; JupyterHub
then deletes the hub user with their tokens and group memberships, and their cookies stop
working because the user they name is gone. With the hub down, `mlrp user remove` does the
JupyterHub part on its database (hub/jhdb.py) and then calls `retire` itself.

The Unix account and its files are never deleted here: the account is locked (no password, an
expired account) and recorded as retired, so a later person given the same hub name gets a fresh
account, never the old files, unless the admin asks (`mlrp user add NAME --restore`).
`mlrp user remove --archive` then packs the home into the data directory and deletes the
account (`archive`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hub import accounts
from hub.storage import SQLRecords
from spawners.accounts import find_account

log = logging.getLogger(__name__)


class OffboardError(Exception):
    """A step that could not be done; the message says what to do."""


@dataclass(frozen=True)
class Retired:
    login_deleted: bool
    unix_account: str | None  # the retired account's name; None if they never had one
    home: Path | None  # its home, still on disk; None without a Unix account


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OffboardError(f"{' '.join(args)} failed: {done.stderr.strip() or done.returncode}")


def lock_account(unix_name: str) -> None:
    """No password login and an account expired since 1970: nothing can log in as it, and
    cron and at refuse its jobs. Its files stay."""
    _run(["usermod", "--lock", "--expiredate", "1", unix_name])


def unlock_account(unix_name: str) -> None:
    _run(["usermod", "--unlock", "--expiredate", "", unix_name])


def home_of(unix_name: str) -> Path | None:
    account = find_account(unix_name)
    return account.home if account else None


def retire(records: SQLRecords, name: str, *, system_accounts: bool) -> Retired:
    """Delete `name`'s login and retire their Unix account (locked, kept, never reused)."""
    login_deleted = accounts.delete(records, name)
    unix = records.retire_unix_account(name)
    home = None
    if unix is not None and system_accounts and home_of(unix) is not None:
        lock_account(unix)
        home = home_of(unix)
    return Retired(login_deleted, unix, home)


def restore(records: SQLRecords, name: str, *, system_accounts: bool) -> tuple[str, Path | None]:
    """Give `name` back the account they had before they were last removed."""
    retired = records.retired_unix_accounts(name)
    if not retired:
        raise OffboardError(f"{name} has no earlier Unix account to restore.")
    last = retired[0]
    if last.archive:
        raise OffboardError(
            f"{name}'s earlier account {last.unix_name} was archived to {last.archive} and "
            "deleted. Add them without --restore, then unpack the archive into their new home "
            f"as root: tar -xzf {last.archive} -C <new home> --strip-components=1, and chown it."
        )
    if system_accounts and home_of(last.unix_name) is None:
        raise OffboardError(
            f"{name}'s earlier Unix account {last.unix_name} no longer exists on this machine; "
            "add them without --restore."
        )
    records.restore_unix_account(name, last.unix_name)
    if system_accounts:
        unlock_account(last.unix_name)
    return last.unix_name, home_of(last.unix_name)


def archive(records: SQLRecords, unix_name: str, archive_dir: Path) -> Path:
    """Pack a retired account's home into `archive_dir` (root only), then delete the account.

    The archive is written completely before anything is deleted; symbolic links are stored
    as links, never followed."""
    home = home_of(unix_name)
    if home is None:
        raise OffboardError(f"There is no Unix account {unix_name} to archive.")
    archive_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(archive_dir, 0o700)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = archive_dir / f"{unix_name}-{stamp}.tar.gz"
    partial = target.with_suffix(".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        if home.is_dir():
            tar.add(home, arcname=unix_name)
    partial.rename(target)
    records.set_archive(unix_name, str(target))
    _run(["userdel", "--remove", unix_name])
    return target

"""Native login accounts kept in the MLRP database (for `mlrp user …` and the authenticator)."""

from __future__ import annotations

import re

from sqlalchemy import select

from hub.models import LoginAccount
from hub.passwords import (
    dummy_hash,
    generate_password,
    hash_password,
    needs_upgrade,
    verify_password,
)
from hub.storage import SQLRecords, now

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AccountInputError(ValueError):
    """Bad user name or password; the message says what is allowed."""


def check_username(name: str) -> str:
    if not USERNAME_RE.fullmatch(name):
        raise AccountInputError(
            f"{name!r} is not a valid user name: use 1-64 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit."
        )
    return name


def exists(records: SQLRecords, name: str) -> bool:
    with records.session() as s:
        return s.get(LoginAccount, name) is not None


def names(records: SQLRecords) -> list[str]:
    with records.session() as s:
        return list(s.scalars(select(LoginAccount.name).order_by(LoginAccount.name)))


def set_password(
    records: SQLRecords,
    name: str,
    password: str | None = None,
    min_length: int = 10,
    email: str | None = None,
) -> str:
    """Create the account or replace its password; returns the (generated) password. `email`
    is kept with a new account (for a later single sign-on match); ignored on a change."""
    check_username(name)
    if password is None:
        password = generate_password()
    elif len(password) < min_length:
        raise AccountInputError(f"The password must have at least {min_length} characters.")
    with records.session() as s, s.begin():
        row = s.get(LoginAccount, name)
        if row is None:
            t = now()
            s.add(
                LoginAccount(
                    name=name,
                    password_hash=hash_password(password),
                    created=t,
                    changed=t,
                    email=email,
                )
            )
        else:
            row.password_hash = hash_password(password)
            row.changed = now()
    return password


def delete(records: SQLRecords, name: str) -> bool:
    with records.session() as s, s.begin():
        row = s.get(LoginAccount, name)
        if row is None:
            return False
        s.delete(row)
        return True


def check_login(records: SQLRecords, name: str, password: str) -> bool:
    """Whether `password` is `name`'s; a hash made with older parameters is upgraded on success.

    An unknown name costs the same single scrypt as a known one (against a dummy hash), so
    timing does not reveal which names exist.
    """
    with records.session() as s:
        row = s.get(LoginAccount, name)
        stored = row.password_hash if row else None
    if stored is None:
        verify_password(password, dummy_hash())
        return False
    if not verify_password(password, stored):
        return False
    if needs_upgrade(stored):
        _upgrade(records, name, stored, password)
    return True


def _upgrade(records: SQLRecords, name: str, old_hash: str, password: str) -> None:
    new_hash = hash_password(password)
    with records.session() as s, s.begin():
        row = s.get(LoginAccount, name)
        if row is not None and row.password_hash == old_hash:  # not changed meanwhile
            row.password_hash = new_hash

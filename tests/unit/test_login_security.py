"""Password hashing at current guidance (with upgrade of old hashes), equal work for unknown
names, and the login throttle's arithmetic. The throttle in a real hub is tested end to end in
tests/integration/test_login_throttle.py.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from hub import accounts, passwords
from hub.models import LoginAccount
from hub.storage import SQLRecords, sqlite_url
from hub.throttle import Throttle, wait_sentence

pytestmark = pytest.mark.unit


@pytest.fixture
def records(tmp_path: Path) -> SQLRecords:
    return SQLRecords.from_url(sqlite_url(tmp_path))


def old_hash(password: str, n: int = 2**14) -> str:
    """A hash as MLRP made them before (scrypt N=2**14)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}$8$1${b64(salt).decode()}${b64(digest).decode()}"


def stored_hash(records: SQLRecords, name: str) -> str:
    with records.session() as s:
        row = s.get(LoginAccount, name)
        assert row is not None
        return str(row.password_hash)


def test_new_hashes_use_current_guidance() -> None:
    stored = passwords.hash_password("correct horse")
    assert stored.split("$")[1:4] == [str(2**17), "8", "1"]
    assert passwords.verify_password("correct horse", stored)
    assert not passwords.verify_password("correct hors", stored)
    assert not passwords.needs_upgrade(stored)


@pytest.mark.parametrize("stored", [old_hash("x"), "bcrypt$whatever", "garbage"])
def test_weaker_or_unknown_hashes_need_an_upgrade(stored: str) -> None:
    assert passwords.needs_upgrade(stored)


def test_an_old_hash_still_logs_in_and_is_upgraded_then(records: SQLRecords) -> None:
    accounts.set_password(records, "alice", "an old password")
    with records.session() as s, s.begin():
        row = s.get(LoginAccount, "alice")
        assert row is not None
        row.password_hash = old_hash("an old password")

    assert not accounts.check_login(records, "alice", "wrong password")
    assert stored_hash(records, "alice").split("$")[1] == str(2**14), "no upgrade on failure"

    assert accounts.check_login(records, "alice", "an old password")
    upgraded = stored_hash(records, "alice")
    assert upgraded.split("$")[1] == str(2**17)
    assert accounts.check_login(records, "alice", "an old password")
    assert stored_hash(records, "alice") == upgraded, "upgraded once, not at every login"


def test_an_unknown_name_costs_exactly_what_a_known_one_does(
    records: SQLRecords, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names cannot be enumerated by timing: one scrypt at the same parameters either way."""
    accounts.set_password(records, "alice", "alice's password")
    passwords.dummy_hash()  # made once, when the hub starts
    runs: list[tuple[Any, ...]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: Any) -> bytes:
        runs.append((kw["n"], kw["r"], kw["p"]))
        return real(password, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    assert not accounts.check_login(records, "alice", "wrong")
    known = list(runs)
    runs.clear()
    assert not accounts.check_login(records, "nobody-here", "wrong")
    assert runs == known == [(2**17, 8, 1)]


# --- the throttle -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waits_begin_after_the_free_failures_and_double_up_to_the_cap() -> None:
    clock = Clock()
    t = Throttle(free_failures=3, max_delay=10, clock=clock)
    assert [t.failed("alice") for _ in range(3)] == [0, 0, 0]
    assert t.wait("alice") == 0
    assert [t.failed("alice") for _ in range(4)] == [1, 2, 4, 8]
    assert t.failed("alice") == 10 and t.failed("alice") == 10, "capped"
    assert t.wait("alice") == 10
    clock.now += 4
    assert t.wait("alice") == 6
    clock.now += 6
    assert t.wait("alice") == 0, "after the wait, the next try may go ahead"
    assert t.wait("bob") == 0, "per key"


def test_thirty_failures_in_a_row_wait_the_longest_and_never_overflow() -> None:
    t = Throttle(free_failures=5, max_delay=900, clock=Clock())
    for _ in range(200):
        t.failed("alice")
    assert t.wait("alice") == 900


def test_success_forgets_the_failures_and_old_failures_fade() -> None:
    clock = Clock()
    t = Throttle(free_failures=1, max_delay=60, forget_after=3600, clock=clock)
    t.failed("alice")
    t.failed("alice")
    t.succeeded("alice")
    assert (t.wait("alice"), t.failures("alice")) == (0, 0)
    t.failed("bob")
    t.failed("bob")
    clock.now += 3601
    assert t.wait("bob") == 0
    assert t.failed("bob") == 0, "an hour later, bob starts afresh"


@pytest.mark.parametrize(
    ("seconds", "words"), [(0.2, "wait 1 second,"), (8, "wait 8 seconds"), (900, "15 minutes")]
)
def test_the_sentence_says_how_long(seconds: float, words: str) -> None:
    sentence = wait_sentence(seconds)
    assert words in sentence and "administrator" in sentence

"""Creating a person's Unix account: the home is private (0700) even where useradd makes it
0755, and an account another hub user already holds is never handed to a second one.

The home test makes a real account with the real useradd (so it needs root), through a wrapper
that opens the home up to 0755 afterwards, as useradd does on a distribution whose login.defs
sets HOME_MODE 0755 or ignores --key HOME_MODE.
"""

from __future__ import annotations

import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import MemoryRecords
from harness import remove_accounts, run_prefix

from spawners import accounts
from spawners.accounts import ensure_account, unix_name_for
from spawners.records import AccountClash

pytestmark = pytest.mark.unit

LOOSE_USERADD = """#!/bin/sh
/usr/sbin/useradd "$@" || exit $?
while [ $# -gt 0 ]; do
  if [ "$1" = --home-dir ]; then chmod 0755 "$2"; fi
  shift
done
"""
RECORDING_USERADD = """#!/bin/sh
echo "$@" >> "{log}"
exit 1
"""


def fake_useradd(where: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    where.mkdir()
    script = where / "useradd"
    script.write_text(text)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{where}:{os.environ['PATH']}")


@pytest.fixture
def prefix() -> Iterator[str]:
    p = run_prefix()
    yield p
    remove_accounts(p)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a real Unix account")
async def test_home_is_private_even_where_useradd_opens_it(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_useradd(tmp_path / "bin", LOOSE_USERADD, monkeypatch)
    home_root = tmp_path / "home"
    home_root.mkdir()
    records = MemoryRecords()
    account, created = await ensure_account(records, "alice", prefix, home_root)
    assert created and account.name == f"{prefix}alice"
    assert account.home == home_root / account.name
    info = account.home.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700, oct(info.st_mode)
    assert info.st_uid == pwd.getpwnam(account.name).pw_uid
    assert records.accounts == {"alice": account.name}


async def test_an_account_held_by_another_hub_user_is_never_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hub names that map to one Unix name (a hash collision, a renamed prefix): the
    second is refused before useradd runs, and the first keeps the account."""
    log = tmp_path / "useradd.log"
    fake_useradd(tmp_path / "bin", RECORDING_USERADD.format(log=log), monkeypatch)
    records = MemoryRecords(accounts={"Alice": "mlrp_collided"})
    monkeypatch.setattr(
        accounts, "unix_name_for", lambda name, prefix, generation=0: "mlrp_collided"
    )
    with pytest.raises(AccountClash, match="already belongs to 'Alice'"):
        await ensure_account(records, "alice.b", "mlrp-", tmp_path)
    assert not log.exists(), "useradd must not run for a refused claim"
    assert records.accounts == {"Alice": "mlrp_collided"}


async def test_a_hub_user_keeps_the_account_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After accounts.prefix changed, a person is not silently given a second account."""
    log = tmp_path / "useradd.log"
    fake_useradd(tmp_path / "bin", RECORDING_USERADD.format(log=log), monkeypatch)
    records = MemoryRecords(accounts={"alice": unix_name_for("alice", "old-")})
    with pytest.raises(AccountClash, match="already runs as old-alice"):
        await ensure_account(records, "alice", "new-", tmp_path)
    assert not log.exists()

"""Hub user → Unix account name: safe for useradd and paths, and injective."""

from __future__ import annotations

import pwd
import random
import re
import string

import pytest

from spawners.accounts import unix_name_for

pytestmark = pytest.mark.unit

SAFE = re.compile(r"[a-z][a-z0-9]*[-_][a-z0-9_-]+")
HOSTILE = [
    "../etc",
    "Alice",
    "alice.b",
    "a" * 40,
    "a" * 21,
    "ü",
    "",
    "x;rm",
    "x y",
    "x\ny",
    " alice",
    "alice ",
    "$(id)",
    "`id`",
    "{{7*7}}",
    "-rf",
    "0day",
    "mlrp_abcdefghijklmnop",
    "mlrp-alice",
    "alice/..",
    "\x00",
    "ALICE",
    "алиса",
    "👩‍🔬",
]
SYSTEM_ACCOUNTS = {"root", "daemon", "bin", "sys", "nobody", "www-data", "systemd-network"} | {
    p.pw_name for p in pwd.getpwall()
}


def is_safe(name: str) -> bool:
    return SAFE.fullmatch(name) is not None and len(name) <= 32


@pytest.mark.parametrize("name", ["alice", "bob2", "a", "z" * 20, "x0"])
def test_simple_names_keep_their_name(name: str) -> None:
    assert unix_name_for(name) == "mlrp-" + name
    assert unix_name_for(name, "lab-") == "lab-" + name


@pytest.mark.parametrize("name", HOSTILE)
def test_other_names_map_to_a_safe_hashed_name(name: str) -> None:
    unix = unix_name_for(name)
    assert is_safe(unix), repr(unix)
    assert re.fullmatch(r"mlrp_[a-z2-7]{16}", unix), unix
    assert unix not in SYSTEM_ACCOUNTS


@pytest.mark.parametrize("prefix", ["mlrp-", "a-", "abcdefgh-", "lab1-"])
@pytest.mark.parametrize("name", ["alice", "z" * 20, *HOSTILE])
def test_every_allowed_prefix_gives_safe_names(prefix: str, name: str) -> None:
    unix = unix_name_for(name, prefix)
    assert is_safe(unix), repr(unix)
    assert unix.startswith(prefix.rstrip("-"))


@pytest.mark.parametrize("name", ["root", "daemon", "nobody", "bin", "sys"])
def test_system_account_names_get_the_prefix(name: str) -> None:
    unix = unix_name_for(name)
    assert unix == "mlrp-" + name
    assert unix not in SYSTEM_ACCOUNTS


def test_case_matters_and_never_merges() -> None:
    names = {unix_name_for(n) for n in ("alice", "Alice", "ALICE", "aLice")}
    assert len(names) == 4


def test_branches_differ_in_the_separator() -> None:
    assert unix_name_for("alice")[len("mlrp")] == "-"
    assert unix_name_for("Alice")[len("mlrp")] == "_"


def _generated_names(rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits + "._-@ ü/;"
    names = {"".join(rng.choices(alphabet, k=rng.randint(0, 24))) for _ in range(3000)}
    names |= {
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 22))) for _ in range(2000)
    }
    # Names that look like outputs of either branch, and their case variants.
    outputs = [unix_name_for(n) for n in sorted(names)[::5]]
    names |= set(outputs) | {o.upper() for o in outputs} | {o.capitalize() for o in outputs}
    some = sorted(names)[::7]
    names |= {n.upper() for n in some} | {n.title() for n in some}
    names |= {
        "mlrp_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz234567", k=16)) for _ in range(500)
    }
    return sorted(names)


def test_no_two_names_share_an_account() -> None:
    names = _generated_names(random.Random(20240607))
    assert len(names) > 5000
    seen: dict[str, str] = {}
    for name in names:
        unix = unix_name_for(name)
        assert is_safe(unix), repr((name, unix))
        assert seen.setdefault(unix, name) == name, (name, seen[unix], unix)


def test_the_two_branches_never_meet() -> None:
    names = _generated_names(random.Random(7))
    is_simple = re.compile(r"[a-z][a-z0-9]{0,19}").fullmatch
    simple = {unix_name_for(n) for n in names if is_simple(n)}
    hashed = {unix_name_for(n) for n in names if not is_simple(n)}
    assert simple and hashed
    assert all(n.startswith("mlrp-") for n in simple)
    assert all(n.startswith("mlrp_") for n in hashed)
    assert not simple & hashed


@pytest.mark.parametrize("name", ["alice\n", "root\n"])
def test_trailing_newline_is_not_a_simple_name(name: str) -> None:
    unix = unix_name_for(name)
    assert is_safe(unix), repr(unix)
    assert unix != unix_name_for(name.strip()) + "\n"

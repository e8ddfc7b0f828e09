"""Saved spawner state is versioned and migrated forward (spawners/state.py): every layout an
earlier MLRP wrote still finds its server; what cannot be read is refused with a reason, never
guessed at."""

from __future__ import annotations

from typing import Any

import pytest

from spawners.state import VERSION, StateError, migrate

pytestmark = pytest.mark.unit

V1 = {"v": 1, "profile": "gpu", "gpus": 2, "backend": "local", "spawn_id": "s",
      "placement": {"pid": 7}}  # fmt: skip


def test_version_1_becomes_the_current_layout() -> None:
    state = migrate(V1)
    assert state == {
        "v": VERSION,
        "backend": "local",
        "spawn_id": "s",
        "request": {"profile": "gpu", "gpus": 2},
        "placement": {"pid": 7},
    }
    assert migrate(state) == state, "the current layout passes unchanged"


@pytest.mark.parametrize(
    ("saved", "why"),
    [
        ([1, 2], "not a mapping"),
        ({"backend": "local"}, "no version"),
        ({**V1, "v": True}, "no version"),
        ({**V1, "v": "1"}, "no version"),
        ({**V1, "v": VERSION + 1}, "newer than this MLRP"),
        ({**V1, "v": 0}, "no migration from state version 0"),
        ({"v": 1, "backend": "local"}, "damaged"),
        ({**V1, "placement": None}, "lacks backend or placement"),
        ({"v": 2, "backend": "local", "placement": {}}, "lacks the request"),
        ({**V1, "gpus": "many"}, "damaged"),
    ],
)
def test_unreadable_state_is_refused_with_its_reason(saved: Any, why: str) -> None:
    with pytest.raises(StateError) as e:
        migrate(saved)
    assert why in str(e.value)

"""hub.gpu_view: one row per GPU, free ones too, held ones named as such."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from hub.gpu_view import gpu_rows, render_text
from spawners.records import Lease, held_owner

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 24, 9, 0)


def test_rows_name_holders_profiles_and_holds() -> None:
    leases = [
        Lease("n", "1", "alice/", T0),
        Lease("n", "2", "bob/lab2", T0 + timedelta(minutes=30)),
        Lease("n", "3", held_owner("mlrp-carol"), T0),
        Lease("n", "9", "dave/", T0),  # a GPU no longer in the inventory
    ]
    rows = gpu_rows(["0", "1", "2", "3"], leases, {"alice/": "gpu1", "bob/lab2": "multi"})
    assert [(r.gpu, r.holder, r.profile) for r in rows] == [
        ("0", "free", ""),
        ("1", "alice", "gpu1"),
        ("2", "bob/lab2", "multi"),
        ("3", "held: leftovers of mlrp-carol", ""),
        ("9", "dave", ""),
    ]
    text = render_text(rows, T0 + timedelta(hours=2, minutes=5))
    assert "1    alice" in text and "2 h 05 min" in text and "1 h 35 min" in text
    assert text.splitlines()[-1] == "4 of 5 GPU(s) leased"

"""Where a spawn of ours spends its time, from the progress events the hub recorded for it
(`spawn_events` in mlrp.sqlite): one mark per progress value, plus "post" (the request sent)
and "ready" (the hub said ready)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime

from harness import Hub

Phase = tuple[str, int | str, int | str]  # (label, from mark, to mark)


def spawn_marks(hub: Hub, name: str, posted: float, ready: float) -> dict[int | str, float]:
    """Epoch times of the latest spawn of `name`'s default server, by progress value."""
    with closing(hub.db()) as c:
        row = c.execute(
            "SELECT spawn_id FROM spawn_events WHERE owner = ? ORDER BY id DESC LIMIT 1",
            (f"{name}/",),
        ).fetchone()
        rows = (
            c.execute(
                "SELECT progress, at FROM spawn_events WHERE spawn_id = ? ORDER BY id", (row[0],)
            ).fetchall()
            if row
            else []
        )
    marks: dict[int | str, float] = {"post": posted, "ready": ready}
    for progress, at in rows:
        stamp = datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()
        marks.setdefault(int(progress), stamp)
    return marks


def split(marks: dict[int | str, float], phases: Sequence[Phase]) -> dict[str, float]:
    """Seconds of each phase; {} when a mark is missing."""
    if not all(a in marks and b in marks for _, a, b in phases):
        return {}
    return {label: marks[b] - marks[a] for label, a, b in phases}

"""MLRPSpawner's saved state: versioned, and migrated on load.

JupyterHub keeps each spawner's `get_state()` in its database and hands it back to
`load_state()` after a hub restart; MLRP also writes it as a checkpoint during a start
(spawners.records.Checkpoint). A hub upgraded while servers run must still find every one of
them, so each layout has a version and every older one is migrated forward here, never dropped.

Version 1 (issues 2-14): {"v": 1, "profile", "gpus", "backend", "spawn_id", "placement"}.
Version 2: {"v": 2, "backend", "spawn_id", "request": user options ({"profile", "gpus", …}),
           "placement": the backend's own state}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VERSION = 2
KEY = "mlrp"  # our part of JupyterHub's spawner state


class StateError(ValueError):
    """Saved state this MLRP cannot read (a newer version, or damaged); `str()` says why."""


def _v1_to_v2(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "v": 2,
        "backend": s["backend"],
        "spawn_id": s.get("spawn_id", ""),
        "request": {"profile": s["profile"], "gpus": int(s.get("gpus", 0))},
        "placement": s.get("placement", {}),
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` in the current layout; StateError if it cannot be read."""
    if not isinstance(saved, dict):
        raise StateError(f"saved state is not a mapping: {saved!r:.80}")
    version = saved.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise StateError(f"saved state has no version: {saved!r:.80}")
    if version > VERSION:
        raise StateError(
            f"saved state is version {version}, newer than this MLRP ({VERSION}): it was "
            "written by a newer MLRP"
        )
    state = dict(saved)
    try:
        while state["v"] < VERSION:
            step = MIGRATIONS.get(state["v"])
            if step is None:
                raise StateError(f"no migration from state version {state['v']}")
            state = step(state)
        if not isinstance(state.get("backend"), str) or not isinstance(
            state.get("placement"), dict
        ):
            raise StateError(f"saved state lacks backend or placement: {saved!r:.80}")
        if not isinstance(state.get("request"), dict):
            raise StateError(f"saved state lacks the request: {saved!r:.80}")
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, StateError):
            raise
        raise StateError(f"saved state is damaged ({e!r}): {saved!r:.80}") from None
    return state


def profile_of(jupyterhub_state: object) -> str:
    """The profile slug a server was started with, from JupyterHub's whole spawner state (any
    version we can read); "" when there is none or it cannot be read."""
    if not isinstance(jupyterhub_state, dict):
        return ""
    try:
        return str(migrate(jupyterhub_state.get(KEY) or {})["request"].get("profile", ""))
    except (StateError, AttributeError):
        return ""

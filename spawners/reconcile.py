"""Reconciliation: what placement backends hold against the servers JupyterHub runs.

- a checkpoint (spawners.records.Checkpoint) of a server JupyterHub neither runs nor starts is
  what a hub killed mid-start, or a stop that failed half-way, left behind: its backend cleans it
  (ends the processes or cancels the job, frees GPUs) and the checkpoint goes;
- a server JupyterHub runs is re-adopted by JupyterHub itself (load_state, then poll); its
  checkpoint stays until its teardown;
- each backend frees what nothing holds any more (GPU leases of owners with neither).

Every decision is logged. hub/reconcile.py runs this inside the hub, at start and periodically.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from spawners.platform import Platform
from spawners.records import Checkpoint
from spawners.state import StateError, migrate

log = logging.getLogger(__name__)


async def reconcile_once(platform: Platform, live: set[str], backends: Iterable[str]) -> list[str]:
    """One pass; returns the decisions (also logged). `live`: owners JupyterHub runs or starts;
    `backends`: the names the profiles use (checkpoints may name others)."""
    decisions: list[str] = []
    for cp in platform.records.checkpoints():
        if cp.owner in live:
            continue
        try:
            decision = await clean_checkpoint(platform, cp)
        except Exception as e:  # one bad checkpoint must not stop the others being cleaned
            log.exception("Reconcile: cleaning %s (%s) failed", cp.owner, cp.backend)
            decision = f"{cp.owner}: could not clean its {cp.backend} placement ({e}); kept"
        decisions.append(decision)
    left = platform.records.checkpoints()  # not cleaned (yet): what they hold stays held
    holders = live | {cp.owner for cp in left}
    for name in sorted(set(backends) | {cp.backend for cp in left}):
        try:
            backend = platform.backend(name)
        except Exception as e:
            decisions.append(f"backend {name}: not available ({e})")
            continue
        decisions += await backend.reconcile(holders)
    for line in decisions:
        log.warning("Reconcile: %s", line)
    return decisions


async def clean_checkpoint(platform: Platform, cp: Checkpoint) -> str:
    """End and free what one checkpointed server holds, then forget the checkpoint."""
    try:
        state = migrate(cp.state)
    except StateError as e:
        return f"{cp.owner}: checkpoint unreadable ({e}); kept for an admin"
    backend = platform.backend(state["backend"])
    placement = Checkpoint(cp.owner, cp.backend, state["placement"], cp.updated)
    what = await backend.clean(placement)
    platform.records.drop_checkpoint(cp.owner)
    return f"{cp.owner} has no running server; its {cp.backend} placement: {what}"

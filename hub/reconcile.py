"""Hub start-up: free GPU leases that no server JupyterHub knows of still holds.

JupyterHub itself re-checks every server it believes is running (poll → stop if dead, and our
stop frees the lease). What it cannot see is a lease taken by a spawn the hub never recorded
(the hub was killed between lease and start). We read JupyterHub's own tables — users, spawners
and their server_id, a schema stable since JupyterHub 1.0 — to learn which servers exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hub.jhdb import server_rows
from spawners.gpus import GPUAllocator
from spawners.records import owner_key

log = logging.getLogger(__name__)


def live_owners(jupyterhub_db: Path) -> set[str] | None:
    """Owners ("user/server") with a server row in JupyterHub's DB; None if unreadable."""
    rows = server_rows(jupyterhub_db)
    if rows is None:
        log.warning("Cannot read %s to reconcile GPU leases", jupyterhub_db)
        return None
    return {owner_key(r.user, r.server) for r in rows if r.running}


def release_orphan_leases(allocator: GPUAllocator, jupyterhub_db: Path) -> list[str]:
    owners = live_owners(jupyterhub_db)
    if owners is None:
        return []
    stale = allocator.release_all_except(owners)
    for lease in stale:
        log.warning("Freed GPU %s held by %s, which has no server", lease.device, lease.owner)
    return [lease.device for lease in stale]

"""Reconciliation (spawners/reconcile.py), run inside the hub: once the hub has started and
then every `MLRPSpawner.reconcile_interval` seconds. The servers JupyterHub runs or starts are
read from the hub's own in-process state (whatever database it uses), never from its file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jupyterhub.app import JupyterHub

from spawners.platform import platform_for
from spawners.reconcile import reconcile_once
from spawners.records import owner_key
from spawners.spawner import MLRPSpawner

log = logging.getLogger(__name__)


def hub_live_owners(app: Any) -> set[str]:
    """Owners of servers the running JupyterHub `app` runs (a server row) or is starting."""
    from jupyterhub import orm

    owners: set[str] = set()
    for orm_spawner in app.db.query(orm.Spawner):
        owner = owner_key(orm_spawner.user.name, orm_spawner.name or "")
        if orm_spawner.server is not None:
            owners.add(owner)
            continue
        user = dict.get(app.users, orm_spawner.user.id)  # only users already loaded
        spawner = dict.get(user.spawners, orm_spawner.name or "") if user else None
        if spawner is not None and spawner.pending:
            owners.add(owner)
    return owners


def run_in_hub() -> None:
    """Schedule reconciliation inside the hub that is loading this config: first once the hub
    has started (JupyterHub has re-checked its servers), then every reconcile_interval."""
    try:
        loop = asyncio.get_running_loop()  # JupyterHub loads its config inside its event loop
    except RuntimeError:
        log.warning("No event loop while loading the config: reconciliation will not run")
        return
    task = loop.create_task(_reconcile_forever())
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


_TASKS: set[asyncio.Task[None]] = set()


async def _reconcile_forever() -> None:
    app = JupyterHub.instance()
    started = getattr(app, "_start_future", None)  # JupyterHub 5 and 6: set once it runs
    if started is not None:
        await started
    settings = MLRPSpawner(config=app.config)  # reads its traits only: starts nothing
    platform = platform_for(settings)
    backends = {str(p.get("backend", "local")) for p in settings.profiles}
    interval = float(settings.reconcile_interval)
    while True:
        try:
            await reconcile_once(platform, hub_live_owners(app), backends)
        except Exception:
            log.exception("Reconcile failed; trying again in %s s", interval)
        await asyncio.sleep(interval)

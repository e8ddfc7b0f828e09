"""`POST /hub/api/mlrp/users/NAME/servers/[SERVER]/clear` (scope admin:servers): force one
person's stuck server out, whatever state it is in. `mlrp server clear NAME` calls it.

Stuck means JupyterHub's own stop cannot finish: a start that never ends (a job that waits
forever, a hung scheduler command), or a stop that hangs or fails. In order: a pending start is
cancelled; JupyterHub's stop is tried (with a time limit); if that fails, the placement is ended
and freed directly (MLRPSpawner.force_clear: its processes or job, GPUs, checkpoint) and
JupyterHub's record of the server is cleared; the route goes in any case. Each step is logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

STOP_TIMEOUT = 30.0


def user_and_spawner(handler: APIHandler, user_name: str, server_name: str) -> tuple[Any, Any]:
    """The hub user and their spawner `server_name`, or 404 with a sentence."""
    user = handler.find_user(user_name)
    if user is None:
        raise web.HTTPError(404, f"There is no hub user {user_name!r}.")
    if server_name not in user.orm_spawners:
        raise web.HTTPError(404, f"{user_name} has no server named {server_name!r}.")
    return user, user.spawners[server_name]


class ClearServerAPIHandler(APIHandler):
    @needs_scope("admin:servers")
    async def post(self, user_name: str, server_name: str = "") -> None:
        user, spawner = user_and_spawner(self, user_name, server_name)
        steps: list[str] = []
        future = spawner._spawn_future
        if future is not None and not future.done():
            future.cancel()
            steps.append("cancelled its start")
            await asyncio.sleep(0)
        try:
            await asyncio.wait_for(user.stop(server_name), timeout=STOP_TIMEOUT)
            steps.append("stopped it")
        except Exception as e:  # noqa: BLE001 (a stuck server can fail in any way)
            why = "it did not stop in time" if isinstance(e, TimeoutError) else repr(e)
            steps.append(f"stopping failed ({why}); forced it out")
            await self._force(user, spawner)
        try:
            await self.proxy.delete_user(user, server_name)
        except Exception as e:  # noqa: BLE001 (already gone is fine)
            self.log.debug("Route of %s: %s", spawner._log_name, e)
        self.log.warning(
            "Server %s cleared by %s: %s",
            spawner._log_name,
            self.current_user.name,
            "; ".join(steps),
        )
        self.finish({"steps": steps})

    async def _force(self, user: Any, spawner: Any) -> None:
        force = getattr(spawner, "force_clear", None)
        if force is not None:
            await force()
        spawner.server = None
        spawner.orm_spawner.state = spawner.get_state()
        spawner._stop_pending = False
        spawner._spawn_pending = False
        spawner._start_pending = False
        self.db.commit()

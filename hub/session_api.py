"""`GET /hub/api/mlrp/users/NAME/session` (the default server) and
`GET /hub/api/mlrp/users/NAME/servers/SERVER/session` (scope read:servers, which a person has for
their own servers only): where a running server is placed, and for a Slurm session its
job, node and the walltime left. The home page shows it (hub/templates/home.html)."""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope

from hub.servers_api import user_and_spawner


class SessionAPIHandler(APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name: str, server_name: str = "") -> None:
        _, spawner = user_and_spawner(self, user_name, server_name)
        describe = getattr(spawner, "session", None)
        found = describe() if callable(describe) and spawner.active else {}
        self.finish({"running": bool(spawner.ready), **found})

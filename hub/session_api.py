"""`GET /hub/api/mlrp/users/NAME/session` (the default server) and
`GET /hub/api/mlrp/users/NAME/servers/SERVER/session` (scope read:servers, which a person has for
their own servers only): where a running server is placed, and for a Slurm session its
job, node and the walltime left. The home page shows it (hub/templates/home.html)."""

from __future__ import annotations

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web


class SessionAPIHandler(APIHandler):
    @needs_scope("read:servers")
    async def get(self, user_name: str, server_name: str = "") -> None:
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"There is no hub user {user_name!r}.")
        if server_name not in user.orm_spawners:
            raise web.HTTPError(404, f"{user_name} has no server named {server_name!r}.")
        spawner = user.spawners[server_name]
        describe = getattr(spawner, "session", None)
        found = describe() if callable(describe) and spawner.active else {}
        self.finish({"running": bool(spawner.ready), **found})

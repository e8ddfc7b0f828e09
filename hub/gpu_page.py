"""/hub/mlrp/gpus: the admin's view of who holds which GPU (hub.gpu_view). Admins only."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers import BaseHandler
from tornado import web

from hub.gpu_view import gpu_rows


class GPUPageHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        if not user.admin:
            raise web.HTTPError(403, "Only administrators can see who holds which GPU.")
        records: Any = self.authenticator.records
        config = self.settings["config"]
        gpu_ids = [str(d) for d in config.MLRPSpawner.get("gpu_devices", [])]
        try:
            from spawners.platform import _cache

            platform = next(iter(_cache.values()), None)
            if platform is not None:  # the hub's own inventory (NVML or configured)
                gpu_ids = platform.allocator.ids
        except ImportError:
            pass
        profiles = {
            f"{sp.user.name}/{sp.name or ''}": str(
                (sp.state or {}).get("mlrp", {}).get("profile", "")
            )
            for sp in self.db.query(orm.Spawner)
        }
        rows = gpu_rows(gpu_ids, records.leases(socket.gethostname()), profiles)
        now = datetime.now()
        html = await self.render_template(
            "mlrp-gpus.html",
            mlrp_rows=[
                {
                    "gpu": r.gpu,
                    "holder": r.holder,
                    "profile": r.profile,
                    "since": r.since.strftime("%Y-%m-%d %H:%M") if r.since else "",
                    "for": r.held_for(now),
                }
                for r in rows
            ],
        )
        self.finish(html)

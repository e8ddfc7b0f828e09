"""/hub/mlrp/gpus: the admin's view of who holds which GPU and what it is doing (hub.gpu_view).
Admins only. `?format=json` gives the same as `mlrp gpus --json`; the admin page's "GPUs held"
table (templates/admin.html) reads that.

NVML is read off the event loop with a time limit (hub.gpu_usage): a hung driver costs this
page a few seconds and "n/a", never the hub.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers import BaseHandler
from tornado import web

from hub.gpu_usage import Usage, usage_async
from hub.gpu_view import as_json, gpu_rows, local_time, utc_now
from spawners.state import profile_of

FORMATS = ("html", "json")


def _inventory_ids(config: Any, usage: Usage) -> list[str]:
    """The hub's own inventory once a spawn has built it; before that, what it will be: NVML's
    GPUs (read just now) unless the YAML says `source: config`, else the configured devices."""
    from spawners.backends.local import LocalBackend
    from spawners.platform import loaded_platforms

    for platform in loaded_platforms():
        local = platform.backends.get(LocalBackend.name)
        if isinstance(local, LocalBackend):
            return local.allocator.ids
    settings = config.LocalBackend
    if settings.get("gpu_source", "auto") != "config" and usage.report.state == "ok":
        return [g.uuid for g in usage.report.gpus]
    return [str(d) for d in settings.get("gpu_devices", [])]


class GPUPageHandler(BaseHandler):
    @web.authenticated
    async def get(self) -> None:
        user = self.current_user
        if not user.admin:
            raise web.HTTPError(403, "Only administrators can see who holds which GPU.")
        wanted = self.get_argument("format", "html")
        if wanted not in FORMATS:
            raise web.HTTPError(400, "format must be 'html' or 'json' (or left out, for the page).")
        records: Any = self.authenticator.records
        usage = await usage_async()
        profiles = {
            f"{sp.user.name}/{sp.name or ''}": profile_of(sp.state)
            for sp in self.db.query(orm.Spawner)
        }
        node = socket.gethostname()
        rows = gpu_rows(
            _inventory_ids(self.settings["config"], usage), records.leases(node), profiles, usage
        )
        if wanted == "json":
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps(as_json(rows, usage, node)))
            return
        now = utc_now()
        html = await self.render_template(
            "mlrp-gpus.html",
            mlrp_nvml_error="" if usage.report.state == "ok" else usage.report.error,
            mlrp_rows=[
                {
                    "gpu": r.gpu,
                    "holder": r.holder,
                    "profile": r.profile,
                    "since": local_time(r.since) if r.since else "",
                    "for": r.held_for(now),
                    "utilization": r.utilization_text,
                    "memory": r.memory_text,
                    "processes": r.processes_text,
                    "unleased": r.used_without_lease,
                }
                for r in rows
            ],
        )
        self.finish(html)

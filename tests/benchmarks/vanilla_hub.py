"""The ecosystem anchor for the spawn benchmarks: vanilla JupyterHub + LocalProcessSpawner.

What an admin would run instead of MLRP on the same node: `<venv>/bin/jupyterhub` from the same
venv as our hub (JupyterHub 6.x), its default LocalProcessSpawner, its own configurable-http-proxy
(the same binary as ours), all on free loopback ports, its SQLite database and cookie secret in a
temp dir. Its users are named exactly like the Unix accounts our hub created for the same people
(`tqzkx-solo`), because LocalProcessSpawner runs the server as the account named like the hub
user. There is no login: a service with an API token we generate creates users and starts and
stops servers through the REST API, as the benchmark does with our hub. Like the admin token
the benchmark uses with our hub, that token is one JupyterHub generated (for an admin user):
JupyterHub checks a token given in its config with 16384 rounds of SHA-512 on every request
(~2 ms CPU), a generated one with one round, and the hub CPU per spawn is compared.

The server gets the same command, arguments and environment (PATH, LANG, GPU variables...) as our
hub gives its server, copied from the running server's /proc; JupyterHub's own variables (token,
URLs, port) are left out, vanilla makes its own. Our server runs in a cgroup (the profile's
1 CPU / 2G); vanilla's does not, as vanilla has no such limits.

Also shared with the benchmark of our hub: `spawn_until_ready`, the one definition of "ready".
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from harness import PROXY_CMD, VENV, free_port, stop_hub, wait_for_hub

JUPYTERHUB = VENV / "bin" / "jupyterhub"
SINGLEUSER = VENV / "bin" / "jupyterhub-singleuser"
SERVICE = ADMIN = "mlrp-bench"
# Enough to create users, start/stop their servers, read progress and the server's pid (state).
SCOPES = ["admin:users", "admin:servers", "admin:server_state", "list:users"]
# Variables JupyterHub sets for each server itself: never copied into vanilla's configuration.
HUB_MADE = ("JUPYTERHUB_", "JPY_")


def spawn_until_ready(
    url: str, token: str, name: str, body: dict[str, Any] | None, timeout: float
) -> float:
    """Seconds from sending POST /hub/api/users/<name>/server until the hub reports it ready.

    JupyterHub answers the POST with 201 only once the spawn has finished and the proxy route is
    in place (it waits up to its slow_spawn_timeout, 10 s); on 202 we read the progress event
    stream until the event with "ready": true. The same code times our hub and vanilla.
    """
    headers = {"Authorization": f"token {token}"}
    t0 = time.perf_counter()
    r = requests.post(
        f"{url}/hub/api/users/{name}/server", json=body or {}, headers=headers, timeout=timeout
    )
    assert r.status_code in (201, 202), f"spawn of {name}: {r.status_code} {r.text}"
    if r.status_code == 202 and not _ready_event(url, headers, name, timeout):
        # The stream ended without a ready event: trust only the REST model then.
        _poll_ready(url, headers, name, t0 + timeout)
    return time.perf_counter() - t0


def _ready_event(url: str, headers: dict[str, str], name: str, timeout: float) -> bool:
    with requests.get(
        f"{url}/hub/api/users/{name}/server/progress",
        headers={**headers, "Accept": "text/event-stream"},
        stream=True,
        timeout=timeout,
    ) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:") :])
            if event.get("ready"):
                return True
            if event.get("failed"):
                raise AssertionError(f"spawn of {name} failed: {event}")
    return False


def _poll_ready(url: str, headers: dict[str, str], name: str, deadline: float) -> None:
    while time.perf_counter() < deadline:
        model = requests.get(f"{url}/hub/api/users/{name}", headers=headers, timeout=30).json()
        server = model.get("servers", {}).get("", {})
        if server.get("ready"):
            return
        if not server:
            raise AssertionError(f"server of {name} is not starting: {model}")
        time.sleep(0.1)
    raise AssertionError(f"server of {name} not ready in time")


def server_launch(environ: dict[str, str]) -> dict[str, str]:
    """The server environment of ours, minus what JupyterHub makes per server (token, URLs)."""
    return {k: v for k, v in environ.items() if not k.startswith(HUB_MADE)}


@dataclass
class VanillaHub:
    """`<venv>/bin/jupyterhub` with LocalProcessSpawner, as a subprocess, in `workdir`."""

    workdir: Path
    server_env: dict[str, str] = field(default_factory=dict)
    server_args: list[str] = field(default_factory=list)
    # Spawner.start_timeout and http_timeout (JupyterHub's defaults: 60 and 30 s). The benchmark
    # gives vanilla the start timeout it gives ours: with the default 30 s http_timeout, vanilla
    # spawns failed ("didn't respond in 30 seconds") when 20 started at once on a busy 2-core
    # machine, while ours, waiting for the port within start_timeout, did not.
    start_timeout: int = 60
    proc: subprocess.Popen[bytes] | None = None
    boot_token: str = field(default_factory=lambda: secrets.token_hex(32))  # in the config
    token: str = ""  # generated by JupyterHub at start(); what every request then uses
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / "jupyterhub.log"

    def config(self) -> str:
        """jupyterhub_config.py: JupyterHub's defaults except ports, files and the server."""
        w = self.workdir
        settings: dict[str, Any] = {
            "JupyterHub.bind_url": self.url,
            "JupyterHub.hub_bind_url": f"http://127.0.0.1:{self.hub_port}",
            "JupyterHub.db_url": f"sqlite:///{w / 'jupyterhub.sqlite'}",
            "JupyterHub.cookie_secret_file": str(w / "jupyterhub_cookie_secret"),
            "JupyterHub.pid_file": str(w / "jupyterhub.pid"),
            "JupyterHub.cleanup_servers": True,  # its servers stop with it
            "JupyterHub.authenticator_class": "null",  # no login: API tokens only
            "Authenticator.admin_users": {ADMIN},  # owns the token the benchmark uses
            "ConfigurableHTTPProxy.command": [PROXY_CMD],
            "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{self.proxy_api_port}",
            "ConfigurableHTTPProxy.pid_file": str(w / "proxy.pid"),
            "JupyterHub.services": [{"name": SERVICE, "api_token": self.boot_token}],
            "JupyterHub.load_roles": [
                {"name": SERVICE, "scopes": [*SCOPES, "tokens"], "services": [SERVICE]}
            ],
            "Spawner.cmd": [str(SINGLEUSER)],
            "Spawner.args": self.server_args,
            "Spawner.environment": self.server_env,
            "Spawner.start_timeout": self.start_timeout,
            "Spawner.http_timeout": self.start_timeout,
        }
        lines = ["# Written by tests/benchmarks/vanilla_hub.py"]
        for key, value in settings.items():
            section, name = key.split(".")
            lines.append(f"c.{section}.{name} = {value!r}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "jupyterhub_config.py").write_text(self.config())
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of ours
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(JUPYTERHUB), "-f", str(self.workdir / "jupyterhub_config.py")],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for_hub(self.proc, self.url, timeout, self.log, "vanilla hub")
        r = self.api("POST", f"/users/{ADMIN}/tokens", self.boot_token, json={"scopes": SCOPES})
        assert r.status_code == 201, f"token for {ADMIN}: {r.status_code} {r.text}"
        self.token = str(r.json()["token"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, method: str, path: str, token: str = "", **kw: Any) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw
        )

    def add_users(self, names: list[str]) -> None:
        have = {u["name"] for u in self.api("GET", "/users").json()}
        new = [n for n in names if n not in have]
        if new:
            r = self.api("POST", "/users", json={"usernames": new})
            assert r.status_code == 201, r.text

    def spawn(self, name: str, timeout: float = 180) -> float:
        """Request → ready of `name`'s server, as for ours (spawn_until_ready)."""
        return spawn_until_ready(self.url, self.token, name, None, timeout)

    def server_pid(self, name: str) -> int:
        server = self.api("GET", f"/users/{name}").json().get("servers", {}).get("", {})
        return int(server.get("state", {}).get("pid", 0))

    def stop_server(self, name: str) -> None:
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "" not in self.api("GET", f"/users/{name}").json().get("servers", {}):
                return
            time.sleep(0.1)
        raise AssertionError(f"vanilla server of {name} did not stop")

    def proxy_pid(self) -> int:
        try:
            return int((self.workdir / "proxy.pid").read_text().strip())
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        """SIGTERM by PID: cleanup_servers stops its servers, then it stops its proxy."""
        stop_hub(self.proc, self.workdir / "proxy.pid")

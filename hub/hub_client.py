"""How `mlrp user` reaches the running hub: its REST API on the hub's own loopback port.

The hub registers a service `mlrp-cli` whose token `mlrp up` keeps in the data directory (mode
0600 in a 0700 directory: only root reads it). The CLI, run as root on the same machine, reads it
and calls `http://127.0.0.1:<hub_port>/hub/api` directly (not through the proxy, so TLS on the
public address does not matter). Its scopes are what offboarding, onboarding and ending
sessions need, nothing more.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from hub.hub_state import hub_process

if TYPE_CHECKING:
    from config.schema import MLRPConfig

TOKEN_FILE = "mlrp-cli.token"
SERVICE = "mlrp-cli"
SCOPES = [
    "admin:users",  # create and delete users (deleting stops their servers first)
    "admin:servers",
    "admin:groups",  # add people to groups
    "list:users",
    "read:users",
]
TIMEOUT = 60  # deleting a user waits for their servers to stop


class HubError(Exception):
    """The hub does not answer, or refused what was asked; the message says which."""


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def ensure_token(data_dir: Path) -> str:
    """The service token, made on first use (called by the hub at start)."""
    path = token_path(data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class HubClient:
    def __init__(self, api_url: str, token: str) -> None:
        self.api_url = api_url
        self.token = token

    def __call__(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(
            method,
            self.api_url + path,
            headers={"Authorization": f"token {self.token}"},
            timeout=TIMEOUT,
            **kw,
        )


def connect(data_dir: Path, hub_port: int, host: str = "127.0.0.1") -> HubClient | None:
    """A client of the running hub, or None when no hub runs on this data directory. `host`:
    where the hub API listens (loopback, or slurm.hub_api_address: see api_host)."""
    shown = f"[{host}]" if ":" in host else host
    api_url = f"http://{shown}:{hub_port}/hub/api"
    try:
        requests.get(api_url + "/", timeout=10)
    except requests.ConnectionError:
        if hub_process(data_dir).pid is not None:
            raise HubError(
                f"The hub is running (pid file {data_dir / 'jupyterhub.pid'}) but does not "
                f"answer at {api_url}. Wait until it has started, then run this again."
            ) from None
        return None
    except requests.Timeout:
        raise HubError(f"The hub at {api_url} did not answer within 10 s.") from None
    try:
        token = token_path(data_dir).read_text().strip()
    except FileNotFoundError:
        raise HubError(
            f"The hub answers at {api_url} but {token_path(data_dir)} is missing: it was started "
            "by an older MLRP. Restart it (mlrp up), then run this again."
        ) from None
    return HubClient(api_url, token)


def check(r: requests.Response, doing: str, ok: tuple[int, ...] = (200, 201, 204)) -> None:
    """Raise HubError with the hub's own message unless `r` is one of `ok`."""
    if r.status_code in ok:
        return
    try:
        message = r.json().get("message") or r.text
    except ValueError:
        message = r.text
    raise HubError(f"The hub refused to {doing}: {r.status_code} {message.strip()[:300]}")


def api_host(cfg: MLRPConfig) -> str:
    """Where the hub API listens: loopback, or the address compute nodes reach it at when
    the config sets slurm.hub_api_address (config/render.py binds it there)."""
    if cfg.slurm is not None and cfg.slurm.hub_api_address is not None:
        return cfg.slurm.hub_api_address
    return "127.0.0.1"

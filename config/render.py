"""MLRPConfig (the validated YAML) → JupyterHub traitlets config.

Also the checks that need the node itself (GPU inventory vs profiles), shared by `mlrp up`,
`mlrp config check` and jupyterhub_config.py so they can never disagree.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from markupsafe import escape

from config.schema import ConfigError, MLRPConfig, ProfileSection, SlurmSection
from hub import hub_client
from hub.tls import self_signed_paths
from spawners.gpus import GPUSourceError, Inventory, load_inventory

CULLER_ROLE_SCOPES = ["list:users", "read:users:activity", "read:servers", "delete:servers"]


def node_inventory(cfg: MLRPConfig, source: str = "configuration") -> Inventory:
    """The GPUs this node offers under `cfg`; ConfigError if a local profile asks for more."""
    try:
        inv = load_inventory(cfg.gpus.source, cfg.gpus.devices)
    except GPUSourceError as e:
        raise ConfigError(source, [f"gpus.source: {e}"]) from None
    problems = []
    for i, p in enumerate(cfg.profiles):
        most = max(p.gpu_choices)
        if p.backend == "local" and most > len(inv.gpus):  # other backends: not this node's
            where = "NVML" if inv.source == "nvml" else "gpus.devices"
            problems.append(
                f"profiles[{i}] ({p.slug}).gpus: asks for up to {most} GPU(s) but this node has "
                f"{len(inv.gpus)} (from {where}); lower it to {len(inv.gpus)} or fewer"
                + (", or list devices under gpus.devices" if inv.source != "nvml" else "")
            )
    if problems:
        raise ConfigError(source, problems)
    return inv


def profile_dict(p: ProfileSection, cfg: MLRPConfig) -> dict[str, Any]:
    choices = p.gpu_choices
    default = None if isinstance(p.gpus, int) else p.gpus.default
    return {
        "slug": p.slug,
        "name": p.name,
        "description": p.description,
        "backend": p.backend,
        "placement": dict(p.placement),
        "image": p.image,
        "image_env": str(cfg.images[p.image].env),
        "apptainer": str(cfg.images[p.image].apptainer or ""),
        "catalog": cfg.images[p.image].catalog or "",
        "gpu_choices": choices,
        "default_gpus": default if default is not None else choices[0],
        "cpus": p.cpus,
        "memory_bytes": p.memory_bytes,
        "idle_timeout": p.idle_timeout,
        "groups": list(p.groups),
        "max_processes": p.max_processes,
    }


def announcement_vars(text: str) -> dict[str, str]:
    """JupyterHub's template variables for hub.announcement, shown on every hub page (login,
    home, spawn…). Its page.html inserts `announcement` unescaped (`| safe`, it expects HTML),
    so the plain text is escaped here: `<b>` shows as `<b>`, whatever template renders it."""
    return {"announcement": str(escape(text))}


def configure(c: Any, cfg: MLRPConfig, records: Any) -> None:
    """Fill the traitlets config object `c` of jupyterhub_config.py."""
    from hub.auth import NativeAuthenticator
    from hub.form import render_form
    from spawners.spawner import MLRPSpawner

    h = cfg.hub
    data = h.data_dir
    c.JupyterHub.bind_url = f"{h.scheme}://{h.ip}:{h.port}"
    if h.tls is not None:
        cert, key = self_signed_paths(data) if h.tls.self_signed else (h.tls.cert, h.tls.key)
        c.JupyterHub.ssl_cert = str(cert)
        c.JupyterHub.ssl_key = str(key)
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{h.hub_port}"
    c.JupyterHub.db_url = f"sqlite:///{data / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = False  # a hub restart must not stop people's servers
    c.JupyterHub.log_level = h.log_level
    c.ConfigurableHTTPProxy.command = h.proxy_command
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{h.proxy_api_port}"
    c.ConfigurableHTTPProxy.pid_file = str(data / "proxy.pid")

    c.JupyterHub.authenticator_class = NativeAuthenticator
    c.NativeAuthenticator.records = records
    c.NativeAuthenticator.min_password_length = cfg.login.min_password_length
    c.NativeAuthenticator.failures_before_delay = cfg.login.failures_before_delay
    c.NativeAuthenticator.max_login_delay = cfg.login.max_login_delay
    c.NativeAuthenticator.system_accounts = cfg.accounts.mode == "system"
    # Lax: the hub's login cookie is not sent on cross-site POSTs (forms on other sites); Secure
    # is added by JupyterHub itself whenever the hub is reached over HTTPS.
    c.JupyterHub.tornado_settings = {"cookie_options": {"samesite": "Lax"}}
    c.JupyterHub.template_paths = [
        str(Path(__file__).resolve().parent.parent / "hub" / "templates")
    ]
    if h.announcement:
        c.JupyterHub.template_vars = announcement_vars(h.announcement)
    c.Authenticator.admin_users = set(cfg.login.admin_users)
    c.JupyterHub.load_groups = {g: {"users": list(m)} for g, m in cfg.groups.items()}

    c.JupyterHub.spawner_class = MLRPSpawner
    s = c.MLRPSpawner
    s.records = records
    s.profiles = [profile_dict(p, cfg) for p in cfg.profiles]
    s.accounts_mode = cfg.accounts.mode
    s.account_prefix = cfg.accounts.prefix
    s.home_root = str(cfg.accounts.home_root)
    s.account_map = dict(cfg.accounts.map)
    s.log_dir = str(data / "logs")
    s.umask = cfg.accounts.umask
    s.form_renderer = render_form
    s.poll_interval = h.poll_interval
    s.start_timeout = h.start_timeout
    s.http_timeout = 30
    env_bin = str(cfg.images["default"].env / "bin") if "default" in cfg.images else ""
    s.environment = {"PATH": f"{env_bin}:/usr/local/bin:/usr/bin:/bin".lstrip(":")}
    local = c.LocalBackend
    local.gpu_source = cfg.gpus.source
    local.gpu_devices = list(cfg.gpus.devices)
    local.tmp_dir = str(data / "tmp")
    if cfg.gpus.driver is not None:
        local.nvidia_driver = cfg.gpus.driver
    if cfg.slurm is not None or any(p.backend == "slurm" for p in cfg.profiles):
        _configure_slurm(c, cfg)
    # Reconciliation runs inside the hub, at start and then periodically (hub/reconcile.py).
    c.MLRPSpawner.reconcile_interval = h.reconcile_interval
    if cfg.accounts.mode == "single-user" and os.getuid() == 0:
        # Developer mode only: JupyterLab refuses root unless told. Labelled in `mlrp up`.
        s.args = ["--ServerApp.allow_root=True"]

    # `mlrp user` reaches the running hub as this service (hub/hub_client.py).
    services: list[dict[str, Any]] = [
        {"name": hub_client.SERVICE, "api_token": hub_client.ensure_token(data)}
    ]
    roles: list[dict[str, Any]] = [
        {
            "name": hub_client.SERVICE,
            "scopes": hub_client.SCOPES,
            "services": [hub_client.SERVICE],
        }
    ]
    if cfg.idle_culler.enabled:
        services.append(
            {
                "name": "idle-culler",
                "command": [
                    sys.executable,
                    "-m",
                    "jupyterhub_idle_culler",
                    f"--timeout={cfg.idle_culler.timeout}",
                    f"--cull-every={cfg.idle_culler.interval}",
                ],
            }
        )
        roles.append(
            {"name": "idle-culler", "scopes": CULLER_ROLE_SCOPES, "services": ["idle-culler"]}
        )
    c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles

    from hub.callback_api import close_batchspawner_hazard  # /hub/api/batchspawner: port only

    close_batchspawner_hazard()


def _configure_slurm(c: Any, cfg: MLRPConfig) -> None:
    """c.SlurmBackend from the `slurm:` section (spawners/backends/slurm.py has the help)."""
    sl = cfg.slurm if cfg.slurm is not None else SlurmSection()  # type: ignore[call-arg]
    b = c.SlurmBackend
    for command in ("sbatch", "squeue", "scancel", "scontrol"):
        setattr(b, f"{command}_command", [str(sl.bin_dir / command)])
    b.command_path = f"{sl.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    if sl.conf is not None:
        b.slurm_conf = str(sl.conf)
    b.server_ip = sl.server_ip
    b.node_addresses = dict(sl.node_addresses)
    b.output_dir = sl.output_dir
    b.poll_period = float(sl.poll_interval)
    b.walltime_warning = sl.walltime_warning
    b.connect_timeout = float(sl.connect_timeout)
    if sl.nvidia_driver is not None:
        b.nvidia_driver = sl.nvidia_driver
    if sl.hub_api_address is not None:
        host = f"[{sl.hub_api_address}]" if ":" in sl.hub_api_address else sl.hub_api_address
        url = f"http://{host}:{cfg.hub.hub_port}"
        c.JupyterHub.hub_bind_url = url
        c.JupyterHub.hub_connect_url = url


def config_path_from_env() -> Path | None:
    value = os.environ.get("MLRP_CONFIG", "")
    return Path(value) if value else None

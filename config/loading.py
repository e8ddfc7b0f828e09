"""Shared by the CLI and jupyterhub_config.py: find, load and validate the deployment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from config.defaults import default_config
from config.render import config_path_from_env, configure, node_inventory
from config.schema import MLRPConfig, load
from spawners.gpus import Inventory

SYSTEM_CONFIG = Path("/etc/mlrp/mlrp.yaml")


def resolve_path(given: str | None) -> Path | None:
    """--config, else $MLRP_CONFIG, else /etc/mlrp/mlrp.yaml if present, else None (default)."""
    if given:
        return Path(given).resolve()
    env = config_path_from_env()
    if env:
        return env.resolve()
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def load_config(path: Path | None) -> MLRPConfig:
    return load_with_inventory(path)[0]


def load_with_inventory(path: Path | None) -> tuple[MLRPConfig, Inventory]:
    """The validated deployment and the GPUs this node offers under it (read once: NVML's
    start-up can take a second on a GPU node)."""
    cfg = load(path) if path else default_config()
    return cfg, node_inventory(cfg, str(path) if path else "the embedded default configuration")


def load_for_hub(c: Any) -> None:
    from hub.storage import SQLRecords, sqlite_url

    path = config_path_from_env()
    cfg = load_config(path)
    records = SQLRecords.from_url(os.environ.get("MLRP_DB_URL") or sqlite_url(cfg.hub.data_dir))
    configure(c, cfg, records)

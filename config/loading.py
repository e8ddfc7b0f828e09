"""Shared by the CLI and jupyterhub_config.py: find, load and validate the deployment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.collect import Collected, collect
from config.defaults import default_config
from config.node_limits import Node, beyond_node, this_node
from config.render import config_path_from_env, configure, node_inventory
from config.schema import ConfigError, MLRPConfig, read_yaml
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


@dataclass
class Examined:
    """All that can be said about a deployment file on this node, in one run.

    `problems` make it unusable (`mlrp config check` exits 2; `mlrp up` refuses). `warnings`
    do not: a profile limit beyond this node. `config` and `inventory` are set only when there
    is no problem."""

    source: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: MLRPConfig | None = None
    inventory: Inventory | None = None


def examine(path: Path | None, node: Node | None = None) -> Examined:
    """Validate the deployment at `path` (None: the embedded default) against the schema and
    this node's GPUs, collecting every problem, and note the limits this node cannot give.
    ConfigError only when the file cannot be read or is not YAML: then nothing more is known."""
    if path is None:
        found = Examined("the embedded default configuration")
        collected = Collected(default_config())
    else:
        found = Examined(str(path))
        collected = collect(read_yaml(path))
        found.problems = list(collected.problems)
    cfg = collected.config
    if cfg is None:
        return found
    # With a stand-in for the gpus section, the inventory would be judged on a guess.
    if not collected.rests_on_stand_in("gpus"):
        try:
            inventory = node_inventory(cfg, found.source)
        except ConfigError as e:
            found.problems += e.problems
        else:
            if not found.problems:
                found.config, found.inventory = cfg, inventory
    found.warnings = beyond_node(cfg, node or this_node(), collected.unnamed())
    return found


def load_with_inventory(path: Path | None) -> tuple[MLRPConfig, Inventory]:
    """The validated deployment and the GPUs this node offers under it (read once: NVML's
    start-up can take a second on a GPU node); ConfigError listing every problem."""
    found = examine(path)
    if found.problems or found.config is None or found.inventory is None:
        raise ConfigError(found.source, found.problems)
    return found.config, found.inventory


def load_for_hub(c: Any) -> None:
    from hub.storage import SQLRecords, sqlite_url

    path = config_path_from_env()
    cfg = load_config(path)
    records = SQLRecords.from_url(os.environ.get("MLRP_DB_URL") or sqlite_url(cfg.hub.data_dir))
    configure(c, cfg, records)
    from hub.reconcile import run_in_hub

    run_in_hub()

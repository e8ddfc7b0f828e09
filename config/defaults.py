"""The embedded default deployment: what `mlrp up` runs with when no YAML is given.

Single node, local placement, SQLite under /var/lib/mlrp, native login with an `admin` account
whose password is generated and printed once. GPU profiles appear only if NVML finds GPUs, so the
default is valid on every machine.
"""

from __future__ import annotations

from config.schema import MLRPConfig, parse
from spawners.gpus import discover_nvml


def default_config() -> MLRPConfig:
    gpus = discover_nvml() or []
    profiles: list[dict[str, object]] = [
        {
            "slug": "cpu",
            "name": "CPU only",
            "description": "JupyterLab without a GPU.",
            "gpus": 0,
            "cpus": 2,
            "memory": "4G",
            "idle_timeout": 3600,
        }
    ]
    if gpus:
        profiles.append(
            {
                "slug": "gpu1",
                "name": "1 GPU",
                "description": "JupyterLab with one GPU of its own.",
                "gpus": 1,
                "cpus": 4,
                "memory": "16G",
                "idle_timeout": 3600,
            }
        )
    return parse({"profiles": profiles}, "the embedded default configuration")

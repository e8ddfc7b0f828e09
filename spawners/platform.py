"""Per-hub-process shared state for all MLRP spawners: records, GPU allocator, accounts policy.

Built once from MLRPSpawner's traits (every spawner of a hub shares the same config) and cached,
so 20 users spawning at once share one allocator and one view of the leases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spawners.cgroups import CgroupSupport, probe, probe_fence
from spawners.gpus import GPUAllocator, Inventory, load_inventory
from spawners.records import Records

if TYPE_CHECKING:
    from spawners.spawner import MLRPSpawner

log = logging.getLogger(__name__)


@dataclass
class Platform:
    records: Records
    allocator: GPUAllocator
    accounts_mode: str
    account_prefix: str
    home_root: Path
    log_dir: Path
    cgroups: CgroupSupport
    cgroup_root: Path  # where servers' cgroups are made

    @property
    def multi_user(self) -> bool:
        return self.accounts_mode == "system"


_cache: dict[int, Platform] = {}


def platform_for(spawner: MLRPSpawner) -> Platform:
    records = spawner.records
    if records is None:
        raise RuntimeError(
            "MLRPSpawner.records is not set: start the hub with config/jupyterhub_config.py "
            "(mlrp up) so the MLRP database is wired in."
        )
    key = id(records)
    if key not in _cache:
        inventory = load_inventory(spawner.gpu_source, spawner.gpu_devices)
        log_dir = Path(spawner.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cgroup_root = Path(spawner.cgroup_root)
        support = (
            probe(cgroup_root)
            if spawner.enforce_limits
            else CgroupSupport(False, "none", "disabled")
        )
        _cache[key] = Platform(
            records=records,
            allocator=GPUAllocator(records, inventory),
            accounts_mode=spawner.accounts_mode,
            account_prefix=spawner.account_prefix,
            home_root=Path(spawner.home_root),
            log_dir=log_dir,
            cgroups=support,
            cgroup_root=cgroup_root,
        )
        log.info(
            "MLRP platform: %d GPU(s) from %s, accounts=%s, limits: %s",
            len(inventory.gpus),
            inventory.source,
            spawner.accounts_mode,
            support.detail,
        )
        _log_fence(inventory, cgroup_root if spawner.enforce_limits else None)
    return _cache[key]


def _log_fence(inventory: Inventory, cgroup_root: Path | None) -> None:
    """Say once, at start, whether GPUs leased to others are denied or only hidden. (GPUs
    whose device node is unknown were named by load_inventory already.)"""
    if not inventory.gpus:
        return
    fence = probe_fence(cgroup_root) if cgroup_root is not None else None
    if fence is not None and fence.enforced:
        log.info("GPU fence: %s denies each server the GPUs leased to others", fence.detail)
        return
    why = fence.detail if fence is not None else "limits are disabled (enforce_limits)"
    log.warning(
        "GPU fence off: %s. A server is only told its GPUs (CUDA_VISIBLE_DEVICES) and can still "
        "open the others' device nodes; `mlrp doctor` says what to do.",
        why,
    )

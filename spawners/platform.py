"""Per-hub-process shared state for all MLRP spawners: records, GPU allocator, accounts policy.

Built once from MLRPSpawner's traits (every spawner of a hub shares the same config) and cached,
so 20 users spawning at once share one allocator and one view of the leases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from spawners.accounts import AccountPolicy
from spawners.cgroups import (
    CgroupSupport,
    KillSupport,
    ServerCgroup,
    probe,
    probe_fence,
    probe_kill,
)
from spawners.gpus import GPUAllocator, Inventory, load_inventory
from spawners.isolation import parse_umask, private_tmp_works
from spawners.records import Records, held_tag

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
    containment: KillSupport = KillSupport(False, "none", "not probed")
    tmp_root: Path = Path("/var/lib/mlrp/tmp")  # servers' private temp directories
    private_mounts: bool = False  # a mount namespace per server (else TMPDIR only)
    umask: int = 0o077
    kill_timeout: float = 10.0  # how long a stop waits for a server's processes to end
    account_map: dict[str, str] = field(default_factory=dict)  # hub user → existing account

    @property
    def multi_user(self) -> bool:
        """Servers run as people's own accounts (system or existing), not the hub's."""
        return self.accounts_mode != "single-user"

    @property
    def accounts(self) -> AccountPolicy:
        return AccountPolicy(
            self.accounts_mode, self.account_prefix, self.home_root, self.account_map
        )

    def sweep_held(self) -> list[str]:
        """Free GPUs kept for stopped servers whose leftover processes have ended since.

        A stop that cannot kill every process of a server keeps its GPUs under a hold
        (:func:`held_owner`) instead of handing them to the next person. Called before GPUs
        are counted or leased, so a hold lasts exactly as long as its processes.
        """
        freed: list[str] = []
        for owner in {lease.owner for lease in self.allocator.leases()}:
            tag = held_tag(owner)
            if tag is None:
                continue
            group = ServerCgroup.find(tag, self.cgroup_root) if self.containment.enforced else None
            left = group.pids() if group is not None else []
            if left:
                continue
            if group is not None:
                group.remove()
            gpus = self.allocator.release(owner)
            freed.extend(gpus)
            log.warning(
                "Released GPU(s) %s held for server %s: its leftover processes are gone now",
                ",".join(gpus),
                tag,
            )
        return freed


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
        _share_hub_log(spawner.log)
        inventory = load_inventory(spawner.gpu_source, spawner.gpu_devices)
        log_dir = Path(spawner.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cgroup_root = Path(spawner.cgroup_root)
        support = (
            probe(cgroup_root)
            if spawner.enforce_limits
            else CgroupSupport(False, "none", "disabled")
        )
        containment = (
            probe_kill(cgroup_root)
            if spawner.enforce_limits
            else KillSupport(False, "none", "cgroups are disabled (enforce_limits)")
        )
        private_mounts, mounts_detail = (
            private_tmp_works() if spawner.private_tmp else (False, "disabled (private_tmp)")
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
            containment=containment,
            tmp_root=Path(spawner.tmp_dir),
            private_mounts=private_mounts,
            umask=parse_umask(spawner.umask),
            kill_timeout=spawner.kill_timeout,
            account_map=dict(spawner.account_map),
        )
        log.info(
            "MLRP platform: %d GPU(s) from %s, accounts=%s, limits: %s",
            len(inventory.gpus),
            inventory.source,
            spawner.accounts_mode,
            support.detail,
        )
        _log_fence(inventory, cgroup_root if spawner.enforce_limits else None)
        _log_containment(containment, mounts_detail)
        _cache[key].sweep_held()
    return _cache[key]


def _share_hub_log(app_log: logging.Logger) -> None:
    """Send our modules' log records (spawners.*, hub.*) to JupyterHub's log, at its level.

    Without this they reach no handler: Python's last resort prints warnings bare on stderr
    and drops the rest, so the hub log would never say how servers are fenced or contained.
    Only JupyterHub's own logger is joined (elsewhere, e.g. in tests, records propagate).
    """
    if app_log.name != "JupyterHub":
        return
    for name in ("spawners", "hub"):
        ours = logging.getLogger(name)
        if ours.handlers:
            continue
        for handler in app_log.handlers:
            ours.addHandler(handler)
        ours.setLevel(app_log.getEffectiveLevel())
        ours.propagate = False


def _log_containment(containment: KillSupport, mounts_detail: str) -> None:
    if containment.enforced:
        log.info("Stopped servers' processes are ended with %s", containment.detail)
    else:
        log.warning(
            "Containment off: %s; a GPU is handed on when its server's main process ends.",
            containment.detail,
        )
    log.info("Temp files: %s", mounts_detail)


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

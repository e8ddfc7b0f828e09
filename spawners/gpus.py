"""GPU inventory and exclusive leases on one node.

Inventory comes from NVML (nvidia-ml-py) when the driver is there, else from the YAML's device
list (machines without GPUs, such as CI, describe a pretend inventory that way). Leases live in
the shared Records store, so a hub restart neither leaks nor double-assigns a GPU.

What goes into CUDA_VISIBLE_DEVICES: the NVML UUID (stable across reboots and independent of
CUDA's device ordering) or the configured id verbatim.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from spawners.records import Lease, Records

log = logging.getLogger(__name__)


NVIDIA_MAJOR = 195  # /dev/nvidiaN is character device 195:N


@dataclass(frozen=True)
class GPU:
    id: str
    name: str = "GPU"
    memory_mib: int | None = None
    minor: int | None = None  # N of /dev/nvidiaN, used to fence the device node off

    @property
    def device_rule(self) -> str | None:
        """The cgroup v1 devices line for this GPU's node, if its minor number is known."""
        return None if self.minor is None else f"c {NVIDIA_MAJOR}:{self.minor} rwm"


@dataclass(frozen=True)
class Inventory:
    gpus: tuple[GPU, ...]
    source: str  # "nvml", "config" or "none"

    @property
    def ids(self) -> list[str]:
        return [g.id for g in self.gpus]


class GPUSourceError(Exception):
    """The configured GPU source cannot be used (e.g. source: nvml on a node without NVML)."""


def discover_nvml() -> list[GPU] | None:
    """GPUs NVML reports, or None when NVML (the driver) is not available."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.debug("NVML not available: %s", e)
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024)
            try:
                minor: int | None = int(pynvml.nvmlDeviceGetMinorNumber(h))
            except pynvml.NVMLError:
                minor = None
            gpus.append(
                GPU(
                    id=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_mib=int(mem),
                    minor=minor,
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def load_inventory(source: str, devices: Iterable[str]) -> Inventory:
    """Resolve the YAML's `gpus` section into an inventory."""
    # Without NVML, a numeric id is the index N of /dev/nvidiaN (what Slurm's gres.conf and
    # nvidia-smi -L use on a node whose driver is not loaded yet); UUIDs have no known node.
    configured = tuple(GPU(id=d, minor=int(d) if d.isdigit() else None) for d in devices)
    if source == "config":
        return Inventory(configured, "config" if configured else "none")
    found = discover_nvml()
    if found is not None:
        return Inventory(tuple(found), "nvml")
    if source == "nvml":
        raise GPUSourceError(
            "'nvml' is required but NVML is not available on this node: install the NVIDIA "
            "driver (nvidia-smi must work), or set gpus.source to 'config' and list gpus.devices."
        )
    return Inventory(configured, "config" if configured else "none")


class NoFreeGPUs(Exception):
    def __init__(self, wanted: int, total: int, free: int) -> None:
        self.wanted, self.total, self.free = wanted, total, free
        if total == 0:
            text = (
                f"This server has no GPUs, and this profile asks for {wanted}. Pick a CPU profile."
            )
        elif free == 0:
            text = (
                f"All {total} GPUs on this server are in use right now. Pick a CPU profile, "
                "or try again later when someone stops their server."
            )
        else:
            text = (
                f"You asked for {wanted} GPUs but only {free} of {total} are free right now. "
                f"Ask for {free} or fewer, pick a CPU profile, or try again later."
            )
        super().__init__(text)


class GPUAllocator:
    """Exclusive GPU leases for one node, persisted in Records."""

    def __init__(self, records: Records, inventory: Inventory, node: str | None = None) -> None:
        self.records = records
        self.inventory = inventory
        self.node = node or socket.gethostname()

    @property
    def total(self) -> int:
        return len(self.inventory.gpus)

    def leases(self) -> list[Lease]:
        return [lease for lease in self.records.leases(self.node) if lease.device in self.ids]

    @property
    def ids(self) -> list[str]:
        return self.inventory.ids

    def free(self) -> list[str]:
        taken = {lease.device for lease in self.records.leases(self.node)}
        return [d for d in self.ids if d not in taken]

    def check(self, count: int) -> None:
        """Raise NoFreeGPUs now if `count` cannot be leased (a cheap pre-check for the form)."""
        free = len(self.free()) if count > 0 else 0
        if count > free:
            raise NoFreeGPUs(count, self.total, free)

    def lease(self, owner: str, count: int) -> list[str]:
        if count <= 0:
            return []
        held = [lease.device for lease in self.leases() if lease.owner == owner]
        if held:
            # A stale lease of this same server (e.g. a crash between lease and start): reuse
            # nothing, free it first so accounting stays exact.
            log.warning("Releasing stale GPU lease of %s: %s", owner, held)
            self.records.release_gpus(owner)
        got = self.records.lease_gpus(owner, self.node, self.ids, count)
        if not got:
            raise NoFreeGPUs(count, self.total, len(self.free()))
        log.info("Leased GPU(s) %s to %s", ",".join(got), owner)
        return got

    def release(self, owner: str) -> list[str]:
        freed = self.records.release_gpus(owner)
        if freed:
            log.info("Released GPU(s) %s of %s", ",".join(freed), owner)
        return freed

    def release_all_except(self, live_owners: set[str]) -> list[Lease]:
        """Free leases whose owner is not a live server (hub start-up reconciliation)."""
        stale = [
            lease for lease in self.records.leases(self.node) if lease.owner not in live_owners
        ]
        for owner in {lease.owner for lease in stale}:
            self.release(owner)
        return stale

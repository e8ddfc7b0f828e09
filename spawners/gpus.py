"""GPU inventory and exclusive leases on one node.

Inventory comes from NVML (nvidia-ml-py) when the driver is there, else from the YAML's device
list (machines without GPUs, such as CI, describe a pretend inventory that way). Leases live in
the shared Records store, so a hub restart neither leaks nor double-assigns a GPU.

What goes into CUDA_VISIBLE_DEVICES: the NVML UUID (stable across reboots and independent of
CUDA's device ordering) or the configured id verbatim. Each GPU also carries its minor number N
of /dev/nvidiaN when known (from NVML, or a numeric configured id), so that a server's cgroup
can deny the device nodes of GPUs leased to others (see spawners/cgroups.py).

:func:`read_nvml` is the one NVML reader of the inventory: the hub's inventory, the embedded default
config and `mlrp doctor` all see the same GPUs through it. :func:`read_usage` reads what the GPUs
are doing now (utilisation, memory, processes) with the same helpers, for the admin's GPU view.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

from spawners.records import Lease, Records, held_tag

log = logging.getLogger(__name__)
T = TypeVar("T")


NVIDIA_MAJOR = 195  # /dev/nvidiaN is character device 195:N
MIB = 1024 * 1024


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
    driver: str | None = None  # the NVIDIA driver NVML reported (source "nvml")

    @property
    def ids(self) -> list[str]:
        return [g.id for g in self.gpus]


class GPUSourceError(Exception):
    """The configured GPU source cannot be used (e.g. source: nvml on a node without NVML)."""


@dataclass(frozen=True)
class NvmlGPU:
    """One GPU as NVML describes it."""

    index: int  # NVML's enumeration order (not CUDA's, and not the N of /dev/nvidiaN)
    uuid: str
    name: str
    memory_mib: int
    minor: int | None  # N of /dev/nvidiaN; None when NVML could not say
    minor_error: str = ""  # why NVML could not say, for the log and `mlrp doctor`

    def describe(self) -> str:
        """How admins recognise the GPU: its index (nvidia-smi's) and UUID."""
        return f"GPU {self.index} ({self.uuid})"


@dataclass(frozen=True)
class NvmlReport:
    """What NVML said; `error` is set (and the rest empty) when NVML could not be used."""

    driver: str = ""
    cuda: str = ""  # the CUDA version the driver supports, e.g. "12.4"
    gpus: tuple[NvmlGPU, ...] = ()
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error

    @property
    def unfenceable(self) -> tuple[NvmlGPU, ...]:
        """GPUs whose device node is unknown: they can be leased but not fenced off."""
        return tuple(g for g in self.gpus if g.minor is None)


def format_cuda_version(version: int) -> str:
    """NVML encodes CUDA 12.4 as 12040 (1000 * major + 10 * minor)."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _text(value: object) -> str:
    """NVML strings are `str` in current pynvml and `bytes` in old releases."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _reason(exc: BaseException) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return reason.splitlines()[0]


def _read_minor(pynvml: ModuleType, handle: object) -> tuple[int | None, str]:
    # Some platforms answer "Not Supported" here. That GPU must stay leasable: only its fence is
    # lost, and guessing the node from the index could deny the wrong GPU (or allow the right).
    try:
        return int(pynvml.nvmlDeviceGetMinorNumber(handle)), ""
    except pynvml.NVMLError as e:
        return None, _reason(e)


def _read_gpu(pynvml: ModuleType, index: int) -> NvmlGPU:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    minor, minor_error = _read_minor(pynvml, handle)
    return NvmlGPU(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_mib=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
        minor=minor,
        minor_error=minor_error,
    )


def _read_report(pynvml: ModuleType) -> NvmlReport:
    return NvmlReport(
        driver=_text(pynvml.nvmlSystemGetDriverVersion()),
        cuda=format_cuda_version(int(pynvml.nvmlSystemGetCudaDriverVersion_v2())),
        gpus=tuple(_read_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())),
    )


def _shutdown(pynvml: ModuleType) -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as e:
        log.debug("nvmlShutdown failed (nothing left to release): %s", e)


def read_nvml() -> NvmlReport:
    """Ask NVML for the driver, the CUDA driver version and every GPU; never raises NVML errors.

    The one NVML reader: the hub's inventory, the embedded default config and `mlrp doctor` all
    see the same GPUs. NVML is always shut down again, also when a call fails halfway.
    """
    try:
        import pynvml
    except ImportError as e:
        return NvmlReport(error=f"pynvml is not installed ({_reason(e)})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return NvmlReport(error=_reason(e))
    try:
        return _read_report(pynvml)
    except pynvml.NVMLError as e:
        # The driver loaded but a GPU stopped answering: worth a warning, unlike a node
        # without a driver (the common CPU-only case).
        log.warning("NVML failed while listing GPUs: %s", e)
        return NvmlReport(error=_reason(e))
    finally:
        _shutdown(pynvml)


def nvml_gpus(report: NvmlReport) -> tuple[GPU, ...]:
    """The inventory entries for what NVML found: UUIDs as ids, minors from NVML."""
    return tuple(
        GPU(id=g.uuid, name=g.name, memory_mib=g.memory_mib, minor=g.minor) for g in report.gpus
    )


def _warn_unfenceable(report: NvmlReport) -> None:
    if report.unfenceable:
        log.warning(
            "GPU fence incomplete: NVML gives no minor number for %s. Such GPUs are leased as "
            "usual, but servers that did not lease them can still open their /dev/nvidiaN.",
            "; ".join(f"{g.describe()}: {g.minor_error}" for g in report.unfenceable),
        )


def discover_nvml() -> list[GPU] | None:
    """GPUs NVML reports, or None when NVML (the driver) is not available.

    Logs one warning naming the GPUs that cannot be fenced (no minor number), per call.
    """
    report = read_nvml()
    if not report.available:
        log.debug("NVML not available: %s", report.error)
        return None
    _warn_unfenceable(report)
    return list(nvml_gpus(report))


def load_inventory(
    source: str, devices: Iterable[str], nvml: NvmlReport | None = None
) -> Inventory:
    """Resolve the YAML's `gpus` section into an inventory.

    NVML is read here, with one warning naming the GPUs that cannot be fenced, unless `nvml`
    hands in a report already read: `mlrp doctor` reads NVML once for all its rows and names
    those GPUs in its table instead.
    """
    # Without NVML, a numeric id is the index N of /dev/nvidiaN (what Slurm's gres.conf and
    # nvidia-smi -L use on a node whose driver is not loaded yet); UUIDs have no known node.
    configured = tuple(GPU(id=d, minor=int(d) if d.isdigit() else None) for d in devices)
    from_config = Inventory(configured, "config" if configured else "none")
    quiet = nvml is not None  # the doctor names unfenceable GPUs in its table instead
    if source == "config":
        return from_config if quiet else _warn_unnumbered(from_config)
    report = read_nvml() if nvml is None else nvml
    if report.available:
        if not quiet:
            _warn_unfenceable(report)
        return Inventory(nvml_gpus(report), "nvml", driver=report.driver or None)
    log.debug("NVML not available: %s", report.error)
    if source == "nvml":
        raise GPUSourceError(
            f"'nvml' is required but NVML is not available on this node ({report.error}): "
            "install the NVIDIA driver (nvidia-smi must work), or set gpus.source to 'config' "
            "and list gpus.devices."
        )
    return from_config if quiet else _warn_unnumbered(from_config)


def _warn_unnumbered(inventory: Inventory) -> Inventory:
    """The configured-devices counterpart of _warn_unfenceable: an id that is not a number
    (a UUID) names no /dev/nvidiaN, so that GPU cannot be denied to others."""
    unnumbered = [g.id for g in inventory.gpus if g.minor is None]
    if unnumbered:
        log.warning(
            "GPU fence incomplete: gpus.devices names %s by UUID, so its /dev/nvidiaN is unknown. "
            "Such GPUs are leased as usual, but servers that did not lease them can still open "
            "them; list GPUs by their index N of /dev/nvidiaN instead.",
            ", ".join(unnumbered),
        )
    return inventory


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

    def hold(self, owner: str, holder: str) -> list[str]:
        """Move `owner`'s GPUs to the lease owner `holder`, keeping them from everyone: the
        server stopped, but processes of it that could not be killed may still use them.

        Release and re-lease run with no await between them, so no other spawn of this hub
        can take the GPUs in between (one hub per node owns the node's leases)."""
        devices = [lease.device for lease in self.leases() if lease.owner == owner]
        if not devices:
            return []
        self.records.release_gpus(owner)
        return self.records.lease_gpus(holder, self.node, devices, len(devices))

    def release_all_except(self, live_owners: set[str]) -> list[Lease]:
        """Free leases whose owner is not a live server (hub start-up reconciliation).

        GPUs held for a stopped server's leftover processes stay held: Platform.sweep_held
        frees them once those processes are gone."""
        stale = [
            lease
            for lease in self.records.leases(self.node)
            if lease.owner not in live_owners and held_tag(lease.owner) is None
        ]
        for owner in {lease.owner for lease in stale}:
            self.release(owner)
        return stale


# -- usage: what each GPU is doing now (for `mlrp gpus` and the admin GPU page) ----------------
@dataclass(frozen=True)
class NvmlProcess:
    """A process NVML sees on a GPU; `used_mib` is None where NVML cannot say (e.g. MIG)."""

    pid: int
    used_mib: int | None


@dataclass(frozen=True)
class NvmlUsage:
    """One GPU's load as NVML reports it; None in a field means NVML answered "Not Supported"
    (or similar) for that one reading, which leaves the others usable."""

    uuid: str
    minor: int | None
    utilization: int | None  # percent of the last sample period a kernel ran
    memory_used_mib: int | None
    memory_total_mib: int | None
    processes: tuple[NvmlProcess, ...] | None

    def matches(self, gpu_id: str) -> bool:
        """Whether the inventory id `gpu_id` names this GPU: its UUID (NVML inventory) or its
        number N of /dev/nvidiaN (a configured inventory, see load_inventory)."""
        return gpu_id == self.uuid or (gpu_id.isdigit() and int(gpu_id) == self.minor)


@dataclass(frozen=True)
class UsageReport:
    """What NVML said about every GPU's load. `state` says whether it could: "ok"; "absent" (no
    pynvml, or nvmlInit failed: no driver, the CPU-only case); "failed" (NVML broke mid-read);
    "hung" (no answer in time, see hub.gpu_usage). `error` says why, `gpus` is empty unless ok."""

    gpus: tuple[NvmlUsage, ...] = ()
    state: str = "ok"
    error: str = ""

    def find(self, gpu_id: str) -> NvmlUsage | None:
        return next((g for g in self.gpus if g.matches(gpu_id)), None)


def _optional(pynvml: ModuleType, read: Callable[[], T]) -> T | None:
    """One reading NVML may refuse for this GPU alone ("Not Supported", "No Permission")."""
    try:
        return read()
    except pynvml.NVMLError as e:
        log.debug("NVML reading not available: %s", e)
        return None


def _processes(pynvml: ModuleType, handle: object) -> tuple[NvmlProcess, ...] | None:
    compute = _optional(pynvml, lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    graphics = _optional(pynvml, lambda: pynvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
    if compute is None and graphics is None:
        return None
    seen: dict[int, NvmlProcess] = {}
    for p in [*(compute or []), *(graphics or [])]:
        used = getattr(p, "usedGpuMemory", None)  # None: NVML_VALUE_NOT_AVAILABLE
        seen.setdefault(int(p.pid), NvmlProcess(int(p.pid), None if used is None else used // MIB))
    return tuple(sorted(seen.values(), key=lambda p: p.pid))


def _read_usage(pynvml: ModuleType, index: int) -> NvmlUsage:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = _optional(pynvml, lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
    rates = _optional(pynvml, lambda: pynvml.nvmlDeviceGetUtilizationRates(handle))
    return NvmlUsage(
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        minor=_read_minor(pynvml, handle)[0],
        utilization=None if rates is None else int(rates.gpu),
        memory_used_mib=None if memory is None else int(memory.used) // MIB,
        memory_total_mib=None if memory is None else int(memory.total) // MIB,
        processes=_processes(pynvml, handle),
    )


def read_usage() -> UsageReport:
    """Utilisation, memory and processes of every GPU NVML sees; never raises NVML errors.

    Synchronous, and NVML can hang on a sick GPU: callers that must stay responsive (the hub's
    event loop, `mlrp gpus`) run it through hub.gpu_usage (a thread and a timeout), not directly.
    """
    try:
        import pynvml
    except ImportError as e:
        return UsageReport(state="absent", error=f"pynvml is not installed ({_reason(e)})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return UsageReport(state="absent", error=_reason(e))
    try:
        return UsageReport(
            gpus=tuple(_read_usage(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount()))
        )
    except pynvml.NVMLError as e:
        log.warning("NVML failed while reading GPU usage: %s", e)
        return UsageReport(state="failed", error=_reason(e))
    finally:
        _shutdown(pynvml)

"""`mlrp doctor`: what this node has and lacks for running the hub, and an exit status.

Each check probes one real thing (the NVIDIA driver through NVML, the proxy binary, free disk,
root, `useradd`, the Slurm client, cgroups) and turns every expected failure into a `Check`
that is not ok, so the admin sees a table and one fix line per problem, never a traceback.
Exit status: 0 when every required check passes, 1 otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TextIO

GIB = 1024**3
CGROUP_ROOT = Path("/sys/fs/cgroup")
GPU_SOURCES = ("nvml", "config", "auto")

NO_GPUS_FIX = (
    "No NVIDIA GPUs found: install the NVIDIA driver (nvidia-smi must work), or list devices "
    "under gpus.devices in the YAML; CPU profiles work without GPUs."
)
NVML_REQUIRED_FIX = (
    "The config requires NVML (gpus.source: nvml) but it does not work here: install the NVIDIA "
    "driver (nvidia-smi must work), or set gpus.source to auto or config and list devices under "
    "gpus.devices in the YAML."
)
PROXY_FIX = (
    "run `bash hub/bootstrap.sh up` (installs configurable-http-proxy under /opt/mlrp/node) "
    "or set hub.proxy_command"
)
ROOT_FIX = (
    "Run the hub as root (it creates a Unix account per user), or use developer single-user "
    "mode (accounts.mode: single-user)."
)
USERADD_FIX = "Install useradd (Debian/Ubuntu: apt-get install passwd) and put /usr/sbin on PATH."
SLURM_FIX = (
    "Install the Slurm client (Debian/Ubuntu: apt-get install slurm-client) so that sinfo and "
    "sbatch are on the hub's PATH, or remove the Slurm profiles from the YAML."
)
CGROUP_FIX = (
    "Memory and CPU limits cannot be enforced: run on a host with cgroup v2 (memory and cpu "
    "controllers enabled) or writable cgroup v1 hierarchies; without them limits are advisory."
)


@dataclass
class Check:
    """One line of the doctor's table."""

    name: str  # e.g. "NVIDIA driver / NVML"
    ok: bool
    detail: str  # what was found, e.g. "2 GPUs, driver 550.54, CUDA 12.4" or "not found"
    required: bool  # must-have? (False = nice-to-have, reported but does not fail)
    fix: str = ""  # one line telling the admin what to do when not ok

    @property
    def status(self) -> str:
        if self.ok:
            return "OK"
        return "MISSING" if self.required else "WARN"


# --- NVML -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_gib: float


@dataclass(frozen=True)
class NvmlReport:
    """What NVML said; `error` is set (and the rest empty) when NVML could not be used."""

    driver: str = ""
    cuda: str = ""
    gpus: list[GpuInfo] = field(default_factory=list)
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error


def _text(value: object) -> str:
    """NVML strings are `str` in current pynvml and `bytes` in old releases."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def format_cuda_version(version: int) -> str:
    """NVML encodes CUDA 12.4 as 12040 (1000 * major + 10 * minor)."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def _short_reason(exc: BaseException) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return reason.splitlines()[0]


def _read_gpus(pynvml: ModuleType) -> list[GpuInfo]:
    gpus = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        gpus.append(
            GpuInfo(
                index=index,
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                memory_gib=int(memory.total) / GIB,
            )
        )
    return gpus


def _read_nvml(pynvml: ModuleType) -> NvmlReport:
    return NvmlReport(
        driver=_text(pynvml.nvmlSystemGetDriverVersion()),
        cuda=format_cuda_version(int(pynvml.nvmlSystemGetCudaDriverVersion_v2())),
        gpus=_read_gpus(pynvml),
    )


def _shutdown_nvml(pynvml: ModuleType) -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass  # nothing left to release; the report is already written


def probe_nvml() -> NvmlReport:
    """Ask NVML for the driver, the CUDA driver version and every GPU; never raises NVML errors."""
    try:
        import pynvml
    except ImportError as exc:
        return NvmlReport(error=f"pynvml is not installed ({_short_reason(exc)})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NvmlReport(error=_short_reason(exc))
    try:
        return _read_nvml(pynvml)
    except pynvml.NVMLError as exc:
        return NvmlReport(error=_short_reason(exc))
    finally:
        _shutdown_nvml(pynvml)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def check_nvml(report: NvmlReport) -> Check:
    """Informational: the "GPUs usable" check decides whether a missing NVML matters, and says
    what to do about it, so this row carries no fix line of its own."""
    name = "NVIDIA driver / NVML"
    if not report.available:
        return Check(name, False, f"NVML not available: {report.error}", False)
    lines = [f"{_plural(len(report.gpus), 'GPU')}, driver {report.driver}, CUDA {report.cuda}"]
    lines += [
        f"GPU {gpu.index}: {gpu.name}, {gpu.memory_gib:.1f} GiB, {gpu.uuid}" for gpu in report.gpus
    ]
    return Check(name, True, "\n".join(lines), False)


def check_gpus(report: NvmlReport, gpu_source: str, configured_gpus: int) -> Check:
    """Whether the hub will have GPUs to lease, judged the way the GPU source says."""
    name = "GPUs usable"
    if gpu_source not in GPU_SOURCES:
        detail = f"unknown GPU source {gpu_source!r}"
        return Check(name, False, detail, True, f"Set the GPU source to one of {GPU_SOURCES}.")
    if gpu_source == "config" or (gpu_source == "auto" and not report.available):
        return _gpus_from_config(name, report, configured_gpus)
    required = gpu_source == "nvml"
    fix = NVML_REQUIRED_FIX if required else NO_GPUS_FIX
    if not report.available:
        return Check(name, False, f"NVML not available: {report.error}", required, fix)
    if not report.gpus:
        return Check(name, False, "no GPUs found (NVML sees none)", required, fix)
    return Check(name, True, f"{_plural(len(report.gpus), 'GPU')} via NVML", required)


def _gpus_from_config(name: str, report: NvmlReport, configured_gpus: int) -> Check:
    if configured_gpus <= 0:
        return Check(name, False, "no GPUs found", False, NO_GPUS_FIX)
    seen = f"NVML sees {len(report.gpus)}" if report.available else "no NVML on this node"
    return Check(name, True, f"{_plural(configured_gpus, 'GPU')} from config ({seen})", False)


# --- proxy, disk ------------------------------------------------------------------------------


def check_proxy(proxy_command: Sequence[str]) -> Check:
    name = "Proxy binary"
    if not proxy_command or not proxy_command[0]:
        return Check(name, False, "no proxy command configured", True, PROXY_FIX)
    program = proxy_command[0]
    found = shutil.which(program)  # a name is looked up on PATH, a path is checked as it is
    if found is None:
        return Check(name, False, f"{program}: not found", True, PROXY_FIX)
    return Check(name, True, found, True)


def nearest_existing(path: Path) -> Path:
    """`path` itself, or the closest parent that exists (the data dir is created on first start)."""
    candidate = path.absolute()
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def check_disk(data_dir: Path, min_free_gb: float) -> Check:
    name = "Disk space (data dir)"
    fix = f"Free at least {min_free_gb:g} GiB under {data_dir}, or move it to a bigger disk."
    try:
        where = nearest_existing(data_dir)
        if where == data_dir.absolute() and not where.is_dir():
            return Check(name, False, f"{data_dir} exists but is not a directory", True, fix)
        free_gib = shutil.disk_usage(where).free / GIB
    except OSError as exc:
        return Check(name, False, f"cannot read {data_dir}: {_short_reason(exc)}", True, fix)
    detail = f"{free_gib:.1f} GiB free at {where}"
    if where != data_dir.absolute():
        detail += f" ({data_dir} not created yet)"
    return Check(name, free_gib >= min_free_gb, detail, True, fix)


# --- accounts ---------------------------------------------------------------------------------


def _is_root() -> bool:
    return os.geteuid() == 0


def check_root(multi_user: bool) -> Check:
    """Multi-user mode creates Unix accounts, so it needs root; single-user mode does not."""
    uid = os.geteuid()
    if uid == 0:
        return Check("Running as root", True, "uid 0 (root)", multi_user)
    if multi_user:
        return Check("Running as root", False, f"uid {uid} (not root)", True, ROOT_FIX)
    return Check("Running as root", False, f"uid {uid} (not needed in single-user mode)", False)


def check_useradd(required: bool) -> Check:
    found = shutil.which("useradd")
    detail = found if found else "not found on PATH"
    return Check("useradd", found is not None, detail, required, USERADD_FIX)


# --- Slurm ------------------------------------------------------------------------------------


def check_slurm_client() -> Check:
    programs = ("sinfo", "sbatch")
    found = {program: shutil.which(program) for program in programs}
    missing = [program for program, path in found.items() if path is None]
    if missing:
        detail = "not found on PATH: " + ", ".join(missing)
        return Check("Slurm client", False, detail, True, SLURM_FIX)
    return Check("Slurm client", True, ", ".join(str(path) for path in found.values()), True)


# --- cgroups ----------------------------------------------------------------------------------


def _cgroup_v1(root: Path) -> bool:
    hierarchies = (root / "memory", root / "cpu")
    return all(path.is_dir() and os.access(path, os.W_OK) for path in hierarchies)


def _cgroup_v2(root: Path) -> bool:
    controllers_file = root / "cgroup.controllers"
    if not controllers_file.is_file():
        return False
    controllers = controllers_file.read_text().split()
    return "memory" in controllers and "cpu" in controllers


def check_cgroups(root: Path = CGROUP_ROOT) -> Check:
    name = "cgroups (memory/CPU limits)"
    try:
        if _cgroup_v2(root):
            return Check(name, True, "cgroup v2 (memory, cpu)", False)
        if _cgroup_v1(root):
            return Check(name, True, "cgroup v1 (memory, cpu)", False)
    except OSError as exc:
        detail = f"not available: limits are advisory ({_short_reason(exc)})"
        return Check(name, False, detail, False, CGROUP_FIX)
    return Check(name, False, "not available: limits are advisory", False, CGROUP_FIX)


# --- the whole run ----------------------------------------------------------------------------


def run_checks(
    *,
    data_dir: Path,
    proxy_command: list[str],
    gpu_source: str,
    configured_gpus: int,
    slurm_configured: bool,
    min_free_gb: float = 2.0,
    multi_user: bool = True,
) -> list[Check]:
    """Probe this node. `multi_user=False` is developer single-user mode: root is not needed."""
    nvml = probe_nvml()
    checks = [
        check_nvml(nvml),
        check_gpus(nvml, gpu_source, configured_gpus),
        check_proxy(proxy_command),
        check_disk(Path(data_dir), min_free_gb),
        check_root(multi_user),
    ]
    if multi_user:
        checks.append(check_useradd(required=_is_root()))
    if slurm_configured:
        checks.append(check_slurm_client())
    checks.append(check_cgroups())
    return checks


def render_table(checks: list[Check]) -> str:
    """Aligned columns STATUS, CHECK, DETAIL; then one `fix: ...` line per failed check."""
    rows = [("STATUS", "CHECK", "DETAIL")] + [(c.status, c.name, c.detail) for c in checks]
    status_width = max(len(row[0]) for row in rows)
    name_width = max(len(row[1]) for row in rows)
    indent = " " * (status_width + name_width + 4)
    lines = []
    for status, name, detail in rows:
        first, *rest = detail.splitlines() or [""]
        lines.append(f"{status:<{status_width}}  {name:<{name_width}}  {first}".rstrip())
        lines += [indent + line for line in rest]
    fixes = [f"fix: {c.fix}" for c in checks if not c.ok and c.fix]
    if fixes:
        lines += ["", *fixes]
    return "\n".join(lines) + "\n"


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.required and not c.ok for c in checks) else 0


def _summary(checks: list[Check]) -> str:
    failed = [c.name for c in checks if c.required and not c.ok]
    if not failed:
        return "All required checks passed."
    return f"{_plural(len(failed), 'required check')} failed: {', '.join(failed)}."


def main(
    *,
    data_dir: Path,
    proxy_command: list[str],
    gpu_source: str,
    configured_gpus: int,
    slurm_configured: bool,
    out: TextIO = sys.stdout,
    multi_user: bool = True,
) -> int:
    """Print the table and a summary line; return 0 when every required check passes, else 1."""
    checks = run_checks(
        data_dir=data_dir,
        proxy_command=proxy_command,
        gpu_source=gpu_source,
        configured_gpus=configured_gpus,
        slurm_configured=slurm_configured,
        multi_user=multi_user,
    )
    out.write(render_table(checks))
    out.write("\n" + _summary(checks) + "\n")
    return exit_code(checks)

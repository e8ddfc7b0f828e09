"""`mlrp doctor`: what this node has and lacks for running the hub, and an exit status.

Each check probes one real thing (the NVIDIA driver through NVML, the proxy binary, free disk,
root, `useradd`, the Slurm client, cgroups, the GPU fence, how stopped servers are ended,
private temp space, /proc hiding, whether the hub runs and answers, the GPU leases held now)
and turns every expected failure into
a `Check` that is not ok, so the admin sees a table and one fix line per problem, never a
traceback. Exit status: 0 when every required check passes, 1 otherwise.

GPUs and cgroups are judged by the spawner's own code (`spawners.gpus.load_inventory`,
`spawners.cgroups.probe`), never by a second detector here: what the doctor says is what the hub
will do with the same `gpus` section. Leases are read as `mlrp gpus` reads them, and a hold's
leftover processes are found as `Platform.sweep_held` finds them (the server's cgroup).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hub.gpu_view import gpu_rows, server_profiles
from hub.hub_state import HubProcess, answers, hub_process, read_leases, read_people
from hub.storage import sqlite_url
from spawners.accounts import AccountPolicy, existing_problem
from spawners.cgroups import (
    DEFAULT_ROOT,
    CgroupSupport,
    FenceSupport,
    KillSupport,
    ServerCgroup,
    probe,
    probe_fence,
    probe_kill,
)
from spawners.gpus import GPUSourceError, Inventory, NvmlReport, load_inventory, read_nvml
from spawners.isolation import private_tmp_works
from spawners.records import Lease, held_tag

GIB = 1024**3
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
FENCE_V2_FIX = (
    "To fence GPUs, run the hub on a node with the cgroup v1 devices controller (e.g. boot with "
    "systemd.unified_cgroup_hierarchy=0 where systemd still offers it); until then a server can "
    "open every /dev/nvidiaN, so tell users that CUDA_VISIBLE_DEVICES is a convention, not a "
    "boundary."
)
CONTAINMENT_FIX = (
    "Run the hub as root on a node with writable cgroups (v2, or the v1 freezer), so that "
    "stopping a server ends every process it started; until then a process a person detaches "
    "(nohup, setsid) outlives their server and can keep using a GPU handed on to someone else."
)
PRIVATE_TMP_FIX = (
    "Run the hub as root where mount namespaces are allowed (not in an unprivileged "
    "container), so each server gets its own /tmp, /var/tmp and /dev/shm; until then /tmp is "
    "shared (servers only get TMPDIR) and /dev/shm outlives servers and their memory limits."
)
HIDEPID_FIX = (
    "Hide other people's processes: `mount -o remount,hidepid=invisible /proc` (hidepid=2 on "
    "kernels before 5.8), and in /etc/fstab: `proc /proc proc defaults,hidepid=invisible 0 0`."
)
FENCE_DEVICES_FIX = (
    "Mount the cgroup v1 devices controller at /sys/fs/cgroup/devices and run the hub as root, "
    "so that a server cannot open /dev/nvidiaN of GPUs leased to others."
)
FENCE_NO_CGROUPS_FIX = (
    "Run the hub as root on a node with writable cgroup v1 hierarchies, the devices controller "
    "among them: the fence is part of each server's cgroup, and without one nothing is denied."
)
FENCE_UUID_FIX = (
    "List these GPUs in gpus.devices by their number N of /dev/nvidiaN (e.g. [0, 1]) instead "
    "of by UUID, so the hub knows which device node to deny."
)
FENCE_NVML_MINOR_FIX = (
    "NVML gave no minor number for these GPUs: check `nvidia-smi -q | grep -i minor` and update "
    "the NVIDIA driver, or set gpus.source: config and list the GPUs by their /dev/nvidiaN "
    "number in gpus.devices."
)

EXISTING_ACCOUNTS_FIX = (
    "Create the missing accounts in the cluster's directory (LDAP/SSSD), or map those people "
    "to their accounts under accounts.map; until then they can log in but not start a server. "
    "Each person's reason is in the hub log when they try."
)
SHOWN_NAMES = 10  # people named in the accounts row; the rest are counted

HUB_START_FIX = "Start it with `mlrp up` (or `bash hub/bootstrap.sh up`), or your service manager."
HUB_STALE_FIX = (
    "The hub ended without removing its pid file (killed, or the node rebooted); `mlrp up` "
    "starts it again and rewrites the file."
)
HUB_SILENT_FIX = (
    "The hub process is there but does not answer: it may still be starting (give it a "
    "minute), or be stuck; read its log (the output of `mlrp up`, or your service manager's)."
)
HELD_FIX = (
    "GPUs marked held belong to a stopped server whose processes survived SIGKILL (usually "
    "stuck in the GPU driver): they stay fenced off until those processes end, and the hub "
    "frees them at its next spawn after that. See the processes with `ps -o pid,stat,wchan:30 "
    "-p PIDS`; if they never end, reboot the node."
)
LEASES_UNREADABLE_FIX = "Run the doctor as root, with the same config (data_dir) as the hub."


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


# --- NVML and GPUs ----------------------------------------------------------------------------


def _short_reason(exc: BaseException) -> str:
    reason = str(exc).strip() or type(exc).__name__
    return reason.splitlines()[0]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _device_node(minor: int | None, minor_error: str) -> str:
    return f"/dev/nvidia{minor}" if minor is not None else f"no minor number ({minor_error})"


def check_nvml(report: NvmlReport) -> Check:
    """Informational: the "GPUs usable" check decides whether a missing NVML matters, and says
    what to do about it, so this row carries no fix line of its own."""
    name = "NVIDIA driver / NVML"
    if not report.available:
        return Check(name, False, f"NVML not available: {report.error}", False)
    lines = [f"{_plural(len(report.gpus), 'GPU')}, driver {report.driver}, CUDA {report.cuda}"]
    lines += [
        f"GPU {g.index}: {g.name}, {g.memory_mib / 1024:.1f} GiB, {g.uuid}, "
        + _device_node(g.minor, g.minor_error)
        for g in report.gpus
    ]
    return Check(name, True, "\n".join(lines), False)


def hub_inventory(
    gpu_source: str, gpu_devices: Sequence[str], report: NvmlReport
) -> Inventory | None:
    """The inventory the hub would build from this `gpus` section (the spawner's own
    `load_inventory`, fed the report already read), or None when the hub would refuse to start."""
    if gpu_source not in GPU_SOURCES:
        return None
    try:
        return load_inventory(gpu_source, gpu_devices, nvml=report)
    except GPUSourceError:
        return None


def check_gpus(report: NvmlReport, gpu_source: str, inventory: Inventory | None) -> Check:
    """Whether the hub will have GPUs to lease, judged from the inventory it would build."""
    name = "GPUs usable"
    if gpu_source not in GPU_SOURCES:
        detail = f"unknown GPU source {gpu_source!r}"
        return Check(name, False, detail, True, f"Set the GPU source to one of {GPU_SOURCES}.")
    required = gpu_source == "nvml"
    fix = NVML_REQUIRED_FIX if required else NO_GPUS_FIX
    if inventory is None:  # source nvml without NVML: the hub would refuse to start
        return Check(name, False, f"NVML not available: {report.error}", required, fix)
    count = _plural(len(inventory.gpus), "GPU")
    if inventory.source == "nvml":
        if not inventory.gpus:
            return Check(name, False, "no GPUs found (NVML sees none)", required, fix)
        return Check(name, True, f"{count} via NVML", required)
    if inventory.source == "config":
        seen = f"NVML sees {len(report.gpus)}" if report.available else "no NVML on this node"
        return Check(name, True, f"{count} from config ({seen})", False)
    return Check(name, False, "no GPUs found", False, NO_GPUS_FIX)


# --- GPU fence --------------------------------------------------------------------------------


def _unfenceable(inventory: Inventory, report: NvmlReport) -> list[str]:
    """One line per GPU of the inventory whose device node is unknown, saying why."""
    by_uuid = {g.uuid: g for g in report.gpus}
    lines = []
    for gpu in inventory.gpus:
        if gpu.minor is not None:
            continue
        found = by_uuid.get(gpu.id) if inventory.source == "nvml" else None
        if found is not None:
            lines.append(f"{found.describe()}: NVML gave no minor number ({found.minor_error})")
        else:
            lines.append(f"{gpu.id}: gpus.devices gives no /dev/nvidiaN number for it")
    return lines


def check_fence(inventory: Inventory | None, report: NvmlReport, fence: FenceSupport) -> Check:
    """Whether a server is denied the device nodes of GPUs leased to others (not just told,
    through CUDA_VISIBLE_DEVICES, which GPUs are its own). Never required: without a fence,
    leases still work, as a convention."""
    name = "GPU fence"
    if inventory is None:  # the "GPUs usable" row says why and what to do
        detail = "not judged: the hub would not start with this gpus section (see GPUs usable)"
        return Check(name, False, detail, False)
    if not inventory.gpus:
        return Check(name, True, "no GPUs: nothing to fence", False)
    advisory = "CUDA_VISIBLE_DEVICES is advisory"
    if fence.kind == "v2":
        detail = f"{fence.detail}, which MLRP does not do; {advisory}"
        return Check(name, False, detail, False, FENCE_V2_FIX)
    if fence.kind == "no-devices":
        return Check(name, False, f"{fence.detail}: {advisory}", False, FENCE_DEVICES_FIX)
    if fence.kind == "no-cgroups":
        detail = f"no server cgroups ({fence.detail}): {advisory}"
        return Check(name, False, detail, False, FENCE_NO_CGROUPS_FIX)
    # fence.kind is "v1-devices": each server's cgroup denies the rules of the GPUs it did not
    # lease, which needs every GPU's minor number.
    unfenceable = _unfenceable(inventory, report)
    denied = "GPUs leased to others are denied (cgroup v1 devices)"
    if not unfenceable:
        return Check(name, True, denied, False)
    count = _plural(len(unfenceable), "GPU")
    detail = "\n".join([f"{denied}, except {count} with no known device node:", *unfenceable])
    fix = FENCE_NVML_MINOR_FIX if inventory.source == "nvml" else FENCE_UUID_FIX
    return Check(name, False, detail, False, fix)


# --- the hub and its GPU leases -------------------------------------------------------------


def check_hub(process: HubProcess, answer: tuple[bool, str] | None) -> Check:
    """Whether the hub runs (its pid file names a live jupyterhub) and, if asked, answers on
    its URL. Never required: the doctor is also what an admin runs before the first start."""
    name = "Hub"
    if process.pid is None:
        if process.stale:
            return Check(name, False, f"{process.detail} (stale pid file)", False, HUB_STALE_FIX)
        return Check(name, False, process.detail, False, HUB_START_FIX)
    if answer is None:
        return Check(name, True, process.detail, False)
    answered, detail = answer
    text = f"{process.detail}; {detail}"
    return Check(name, answered, text, False, "" if answered else HUB_SILENT_FIX)


def held_processes(tag: str, cgroup_root: Path, containment: KillSupport) -> list[int]:
    """The processes left of stopped server `tag`, found as Platform.sweep_held finds them."""
    group = ServerCgroup.find(tag, cgroup_root) if containment.enforced else None
    return group.pids() if group is not None else []


def check_leases(
    leases: list[Lease] | None,
    why: str,
    profiles: dict[str, str],
    left_of: Callable[[str], list[int]],
) -> Check:
    """Which GPUs are leased now, to whom, since when; holds for stopped servers' leftover
    processes are a warning (those GPUs are out of use until the processes end)."""
    name = "GPU leases"
    if leases is None:
        unreadable = why.startswith("cannot")
        return Check(name, not unreadable, why, False, LEASES_UNREADABLE_FIX if unreadable else "")
    if not leases:
        return Check(name, True, "none held", False)
    owners = {lease.device: lease.owner for lease in leases}
    lines, held = [], []
    for row in gpu_rows([], leases, profiles):
        line = f"GPU {row.gpu}: {row.holder}"
        line += f", profile {row.profile}" if row.profile else ""
        line += f", since {row.since:%Y-%m-%d %H:%M} UTC" if row.since else ""
        tag = held_tag(owners[row.gpu])
        if tag is not None:
            held.append(row.gpu)
            left = left_of(tag)
            line += (
                f"; processes {', '.join(map(str, left))} still there"
                if left
                else "; its processes have ended (freed at the hub's next spawn)"
            )
        lines.append(line)
    summary = f"{_plural(len(leases), 'GPU')} leased"
    if held:
        summary += f", {len(held)} of them held for a stopped server's leftovers"
    detail = "\n".join([summary, *lines])
    return Check(name, not held, detail, False, HELD_FIX if held else "")


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


def check_accounts(
    policy: AccountPolicy,
    people: list[str] | None,
    why: str = "",
) -> Check:
    """The accounts mode; in existing mode, how many people (logins) have no usable account."""
    name = "Unix accounts"
    if policy.mode == "system":
        return Check(name, True, f"system: created on first start ({policy.prefix}<name>)", False)
    if policy.mode == "single-user":
        return Check(name, True, "single-user: every server runs as the hub's account", False)
    if people is None:
        return Check(name, True, f"existing: looked up, never created; {why}", False)
    missing = [person for person in people if existing_problem(person, policy)]
    if not missing:
        detail = (
            f"existing: looked up, never created; {_plural(len(people), 'login')}, each with one"
        )
        return Check(name, True, detail, False)
    shown = ", ".join(
        person
        if policy.existing_name(person) == person
        else f"{person} ({policy.existing_name(person)})"
        for person in missing[:SHOWN_NAMES]
    )
    more = f" and {len(missing) - SHOWN_NAMES} more" if len(missing) > SHOWN_NAMES else ""
    detail = (
        f"existing: {len(missing)} of {_plural(len(people), 'login')} without a usable Unix "
        f"account, so no server: {shown}{more}"
    )
    return Check(name, False, detail, False, EXISTING_ACCOUNTS_FIX)


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


def check_cgroups(support: CgroupSupport) -> Check:
    """The spawner's own probe, in the words the spawn form shows."""
    name = "cgroups (memory/CPU limits)"
    if support.enforced:
        return Check(name, True, support.detail, False)
    return Check(name, False, support.detail, False, CGROUP_FIX)


def check_containment(support: KillSupport) -> Check:
    """How a stop ends the processes a server detached (the spawner's own probe)."""
    name = "stopped servers' processes"
    if support.enforced:
        return Check(name, True, f"ended with {support.detail}", False)
    return Check(name, False, support.detail, False, CONTAINMENT_FIX)


def check_private_tmp(works: tuple[bool, str]) -> Check:
    ok, detail = works
    return Check("private /tmp, /dev/shm", ok, detail, False, "" if ok else PRIVATE_TMP_FIX)


def proc_hidepid(mounts: str) -> str | None:
    """The hidepid option of the /proc mount in a /proc/mounts text; None when not set
    (everyone sees everyone's processes and command lines)."""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/proc" and fields[2] == "proc":
            for option in fields[3].split(","):
                key, _, value = option.partition("=")
                if key == "hidepid" and value not in ("0", "off"):
                    return value
            return None
    return None


def check_hidepid(mounts: str) -> Check:
    name = "/proc hides other users"
    value = proc_hidepid(mounts)
    if value in ("2", "invisible"):
        return Check(name, True, f"hidepid={value}", False)
    detail = (
        f"hidepid={value}: others' processes are listed, without details"
        if value is not None
        else "no hidepid: every account sees everyone's processes and command lines"
    )
    return Check(name, False, detail, False, HIDEPID_FIX)


def _read_mounts() -> str:
    try:
        return Path("/proc/mounts").read_text()
    except OSError:
        return ""


# --- the whole run ----------------------------------------------------------------------------


def run_checks(
    *,
    data_dir: Path,
    proxy_command: list[str],
    gpu_source: str,
    gpu_devices: Sequence[str] = (),
    slurm_configured: bool,
    min_free_gb: float = 2.0,
    multi_user: bool = True,
    cgroup_root: Path = DEFAULT_ROOT,
    hub_url: str | None = None,
    db_url: str | None = None,
    node: str | None = None,
    accounts: AccountPolicy | None = None,
) -> list[Check]:
    """Probe this node for a hub configured with `gpus: {source: gpu_source, devices:
    gpu_devices}`. `multi_user=False` is developer single-user mode: root is not needed.
    `hub_url`: the loopback URL where a running hub answers (None: not asked); `db_url`: the
    MLRP database (default: the one in `data_dir`); `node`: whose leases (default: this host);
    `accounts`: the accounts policy (None: no accounts row; useradd is judged as for system)."""
    nvml = read_nvml()
    inventory = hub_inventory(gpu_source, gpu_devices, nvml)
    checks = [
        check_nvml(nvml),
        check_gpus(nvml, gpu_source, inventory),
        check_proxy(proxy_command),
        check_disk(Path(data_dir), min_free_gb),
        check_root(multi_user),
    ]
    if multi_user and (accounts is None or accounts.mode == "system"):
        checks.append(check_useradd(required=_is_root()))
    if accounts is not None:
        people, why = read_people(db_url or sqlite_url(Path(data_dir)))
        checks.append(check_accounts(accounts, people, why))
    if slurm_configured:
        checks.append(check_slurm_client())
    checks.append(check_cgroups(probe(cgroup_root)))
    checks.append(check_fence(inventory, nvml, probe_fence(cgroup_root)))
    containment = probe_kill(cgroup_root)
    checks.append(check_containment(containment))
    checks.append(check_private_tmp(private_tmp_works()))
    checks.append(check_hidepid(_read_mounts()))
    process = hub_process(Path(data_dir))
    answer = answers(hub_url) if hub_url is not None and process.pid is not None else None
    checks.append(check_hub(process, answer))
    leases, why = read_leases(db_url or sqlite_url(Path(data_dir)), node or socket.gethostname())
    profiles = server_profiles(Path(data_dir) / "jupyterhub.sqlite") if leases else {}
    checks.append(
        check_leases(
            leases, why, profiles, lambda tag: held_processes(tag, cgroup_root, containment)
        )
    )
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
    gpu_devices: Sequence[str] = (),
    slurm_configured: bool,
    out: TextIO | None = None,
    multi_user: bool = True,
    cgroup_root: Path = DEFAULT_ROOT,
    hub_url: str | None = None,
    db_url: str | None = None,
    accounts: AccountPolicy | None = None,
) -> int:
    """Print the table and a summary line to `out` (standard output when None, looked up at call
    time); return 0 when every required check passes, else 1."""
    out = sys.stdout if out is None else out
    checks = run_checks(
        data_dir=data_dir,
        proxy_command=proxy_command,
        gpu_source=gpu_source,
        gpu_devices=gpu_devices,
        slurm_configured=slurm_configured,
        multi_user=multi_user,
        cgroup_root=cgroup_root,
        hub_url=hub_url,
        db_url=db_url,
        accounts=accounts,
    )
    out.write(render_table(checks))
    out.write("\n" + _summary(checks) + "\n")
    return exit_code(checks)

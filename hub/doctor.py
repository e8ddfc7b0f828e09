"""`mlrp doctor`: what this node has and lacks for running the hub, and an exit status.

Each check probes one real thing (the NVIDIA driver through NVML, the proxy binary, free disk,
root, `useradd`, cgroups, the GPU fence, how stopped servers are ended, private temp space,
/proc hiding, whether the hub runs and answers, the GPU leases held now; with Slurm profiles or a
`slurm:` section, the Slurm client, slurm.conf, munge, the controller, each Slurm profile's
partition and the network between the hub and the nodes) and turns every expected failure into
a `Check` that is not ok, so the admin sees a table and one fix line per problem, never a
traceback. Exit status: 0 when every required check passes, 1 otherwise.

GPUs and cgroups are judged by the spawner's own code (`spawners.gpus.load_inventory`,
`spawners.cgroups.probe`), never by a second detector here: what the doctor says is what the hub
will do with the same `gpus` section. Leases are read as `mlrp gpus` reads them, and a hold's
leftover processes are found as `Platform.sweep_held` finds them (the server's cgroup). Slurm
profiles are judged as the hub's SlurmBackend judges a start: the same request
(`SlurmBackend.request_of`), the same partitions (`spawners.slurm.partitions`, read with the same
scontrol commands) and the same verdict (`partitions.impossible`). Slurm commands run as argument
lists through `spawners.slurm.run`, never a shell, each with a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

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
from spawners.profiles import Profile, SpawnRequest
from spawners.records import Lease, held_tag
from spawners.slurm.partitions import (
    Node,
    Partition,
    Request,
    SlurmInfoError,
    impossible,
    nodes_argv,
    parse_partitions,
    partitions_argv,
)
from spawners.slurm.run import Outcome, run

if TYPE_CHECKING:
    from config.schema import MLRPConfig

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
    """The PATH check `run_checks(slurm_configured=True)` makes when it is given no
    `SlurmSetup`; `mlrp doctor` judges a config's Slurm with `slurm_checks` instead."""
    programs = ("sinfo", "sbatch")
    found = {program: shutil.which(program) for program in programs}
    missing = [program for program, path in found.items() if path is None]
    if missing:
        detail = "not found on PATH: " + ", ".join(missing)
        return Check("Slurm client", False, detail, True, SLURM_FIX)
    return Check("Slurm client", True, ", ".join(str(path) for path in found.values()), True)


SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
DEFAULT_SLURM_CONF = Path("/etc/slurm/slurm.conf")  # Slurm's own default (Debian's too)
DEFAULT_MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # munge's default; AuthInfo moves it
# scontrol waits Slurm's MessageTimeout (10 s by default) for a controller that accepts the
# connection but does not answer, then prints "... is DOWN": give it that long and a little more,
# so the row shows Slurm's own words rather than our timeout.
PING_TIMEOUT = 15.0
SCONTROL_TIMEOUT = 15.0  # `show partition`, `show node`: asked only once ping answered
MUNGE_TIMEOUT = 5.0
SHOWN_NODES = 5  # nodes named in the network row; the rest are counted
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SLURM_COMMANDS_FIX = (
    "Install the Slurm client on this host (Debian/Ubuntu: apt-get install slurm-client; the "
    "same Slurm version as the cluster), or set slurm.bin_dir to the directory that holds "
    "sbatch, squeue, scancel and scontrol."
)
SLURM_CONF_FIX = (
    "Copy the cluster's slurm.conf (the same file the nodes use) to {path} on this host, "
    "readable by everyone (sbatch runs as each person), or set slurm.conf to where it is. A "
    "configless cluster: point slurm.conf at a copy of the controller's."
)
MUNGE_FIX = (
    "Start munged on this host (Debian/Ubuntu: apt-get install munge; systemctl enable --now "
    "munge) with the cluster's key: /etc/munge/munge.key, the same file as on every node, owned "
    "by munge, mode 0400."
)
MUNGE_INSTALL_FIX = (
    "Install munge's commands (Debian/Ubuntu: apt-get install munge) so that the doctor can "
    "check this host's munged."
)
CONTROLLER_FIX = (
    "Check that slurmctld runs on the controller (systemctl status slurmctld there), that this "
    "host reaches SlurmctldHost on SlurmctldPort (6817 by default) through any firewall, and "
    "that munge here has the cluster's key (a wrong key also reads as DOWN)."
)
PARTITION_DOWN_FIX = (
    "Sessions of this profile wait in the queue until the partition is UP again: `scontrol "
    "update PartitionName={name} State=UP` once its maintenance is over."
)
PARTITION_NO_NODE_FIX = (
    "No node of partition {name} can start a job now: see `sinfo -R -p {name}` and resume the "
    "nodes (`scontrol update NodeName=... State=RESUME`) once they are fixed."
)
PARTITION_MISSING_FIX = (
    "Set placement.partition of profile {slug} to a partition Slurm has (`scontrol show "
    "partition`), or add partition {partition} to slurm.conf."
)
PROFILE_IMPOSSIBLE_FIX = (
    "Lower profile {slug}'s gpus (its largest choice), walltime, cpus or memory to what "
    "partition {partition} offers, or give it another partition: every start of it is refused "
    "until then."
)
HUB_API_NOT_LOCAL_FIX = (
    "Set slurm.hub_api_address to an address of this host on the network the compute nodes "
    "share (see `ip -brief address`); the hub listens there on hub.hub_port."
)
HUB_API_UNSET_FIX = (
    "Set slurm.hub_api_address to this host's address on the cluster network, and let the "
    "nodes reach it on hub.hub_port ({port}): each session reports its port there. Traffic to "
    "it is plain HTTP (with the session's token): keep it on a network you trust."
)
SERVER_IP_FIX = (
    "Set slurm.server_ip to 0.0.0.0 (or the nodes' address on the cluster network): sessions "
    "listening on loopback cannot be reached by the hub from another host."
)


class SlurmRunner(Protocol):
    """How the doctor runs one Slurm command (argv, never a shell): `run_slurm_command`, or a
    stand-in replaying captured outputs in tests."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        stdin: str | None = None,
    ) -> Outcome: ...


def run_slurm_command(
    argv: Sequence[str], *, env: Mapping[str, str], timeout: float, stdin: str | None = None
) -> Outcome:
    """`spawners.slurm.run.run` from synchronous code: an argument list, no shell, `env` as the
    whole environment, the process group killed at `timeout`; never raises for a failure."""
    return asyncio.run(run(argv, env=env, timeout=timeout, stdin=stdin))


@dataclass(frozen=True)
class SlurmSetup:
    """What the doctor judges of a config with Slurm: its `slurm:` section (or its defaults),
    the hub's API port, and its Slurm profiles as the spawner gets them."""

    bin_dir: Path = Path("/usr/bin")
    conf: Path | None = None  # None: Slurm's default
    server_ip: str = "0.0.0.0"
    hub_api_address: str | None = None
    hub_port: int = 8081
    node_addresses: Mapping[str, str] = field(default_factory=dict)
    profiles: tuple[Profile, ...] = ()

    @classmethod
    def from_config(cls, cfg: MLRPConfig) -> SlurmSetup | None:
        """None when `cfg` has neither Slurm profiles nor a `slurm:` section."""
        from config.render import profile_dict
        from config.schema import SlurmSection

        if cfg.slurm is None and not any(p.backend == "slurm" for p in cfg.profiles):
            return None
        sl = cfg.slurm if cfg.slurm is not None else SlurmSection()  # type: ignore[call-arg]
        return cls(
            bin_dir=sl.bin_dir,
            conf=sl.conf,
            server_ip=sl.server_ip,
            hub_api_address=sl.hub_api_address,
            hub_port=cfg.hub.hub_port,
            node_addresses=dict(sl.node_addresses),
            profiles=tuple(
                Profile.from_dict(profile_dict(p, cfg))
                for p in cfg.profiles
                if p.backend == "slurm"
            ),
        )

    @property
    def conf_path(self) -> Path:
        return self.conf if self.conf is not None else DEFAULT_SLURM_CONF

    @property
    def env(self) -> dict[str, str]:
        """The Slurm commands' whole environment, as the hub's SlurmBackend gives it."""
        env = {"PATH": f"{self.bin_dir}:{SYSTEM_PATH}"}
        if self.conf is not None:
            env["SLURM_CONF"] = str(self.conf)
        return env

    def node_address(self, node: Node) -> str:
        """Where the hub reaches `node` (SlurmBackend.node_address)."""
        return self.node_addresses.get(node.name) or node.address or node.name


def slurm_request(profile: Profile) -> Request:
    """The largest request a Slurm profile can make (its largest GPU choice), built by the
    hub's own SlurmBackend.request_of, which reads nothing but the profile."""
    from spawners.backends.slurm import SlurmBackend

    backend = SlurmBackend(cast(Any, None))  # no platform: request_of does not use one
    return backend.request_of(SpawnRequest(profile, profile.max_gpus))


def check_slurm_commands(bin_dir: Path) -> Check:
    """sbatch, squeue, scancel and scontrol in slurm.bin_dir, where the hub runs them from."""
    name = "Slurm client"
    found = {c: shutil.which(c, path=str(bin_dir)) for c in SLURM_COMMANDS}
    missing = [c for c, path in found.items() if path is None]
    if missing:
        detail = f"not in {bin_dir}: {', '.join(missing)}"
        return Check(name, False, detail, True, SLURM_COMMANDS_FIX)
    return Check(name, True, f"{', '.join(SLURM_COMMANDS)} in {bin_dir}", True)


@dataclass(frozen=True)
class SlurmConf:
    """The few keys of a slurm.conf the doctor reads (lower-cased, as Slurm ignores case)."""

    path: Path
    values: Mapping[str, tuple[str, ...]]
    world_readable: bool

    def first(self, key: str, default: str = "") -> str:
        found = self.values.get(key.lower())
        return found[0] if found else default

    @property
    def auth_type(self) -> str:
        return self.first("AuthType", "auth/munge")

    @property
    def munge_socket(self) -> Path:
        """AuthInfo's socket=PATH, else munge's default socket."""
        for option in self.first("AuthInfo").split(","):
            key, _, value = option.partition("=")
            if key.strip().lower() == "socket" and value:
                return Path(value)
        return DEFAULT_MUNGE_SOCKET


def parse_slurm_conf(text: str) -> dict[str, tuple[str, ...]]:
    """Each line's first Key=Value (a node or partition line names its key first), keys
    lower-cased, values in file order; comments and blank lines skipped."""
    values: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, rest = line.partition("=")
        if not sep or not key.strip():
            continue
        words = rest.split()
        values.setdefault(key.strip().lower(), []).append(words[0] if words else "")
    return {key: tuple(found) for key, found in values.items()}


def _readable_by_all(path: Path) -> bool:
    """Others may read `path` and enter each directory above it (sbatch runs as each person)."""
    try:
        if not path.stat().st_mode & stat.S_IROTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.absolute().parents)
    except OSError:
        return False


def read_slurm_conf(path: Path) -> tuple[SlurmConf | None, str]:
    """The file's keys, or None and why it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except OSError as exc:
        return None, f"{path}: cannot read: {_short_reason(exc)}"
    return SlurmConf(path, parse_slurm_conf(text), _readable_by_all(path)), ""


def check_slurm_conf(path: Path, conf: SlurmConf | None, why: str) -> Check:
    name = "slurm.conf"
    fix = SLURM_CONF_FIX.format(path=path)
    if conf is None:
        return Check(name, False, why, True, fix)
    if not conf.values:
        return Check(name, False, f"{path}: no settings in it", True, fix)
    shown = [
        f"{key}={conf.first(key)}" for key in ("ClusterName", "SlurmctldHost") if conf.first(key)
    ]
    detail = f"{path}" + (f" ({', '.join(shown)})" if shown else "")
    if not conf.world_readable:
        detail += ": not readable by everyone, and sbatch runs as each person"
        return Check(name, False, detail, True, fix)
    return Check(name, True, detail, True)


def check_munge(
    auth_type: str, socket_path: Path, encoded: Outcome | None, decoded: Outcome | None
) -> Check:
    """Slurm's authentication on this host: a credential made by this host's munged and read
    back (`munge -n | unmunge`, as two argv commands). That the key is the nodes' own shows in
    the controller row: the controller refuses a credential made with another key."""
    name = "munge"
    if auth_type != "auth/munge":
        return Check(name, True, f"not used (AuthType={auth_type})", False)
    if encoded is None:
        detail = "munge and unmunge are not installed here: not checked"
        return Check(name, False, detail, False, MUNGE_INSTALL_FIX)
    if not encoded.ok:
        return Check(name, False, _outcome_text(encoded, "munge -n"), True, MUNGE_FIX)
    if decoded is None or not decoded.ok:
        said = _outcome_text(decoded, "unmunge") if decoded is not None else "unmunge: not run"
        return Check(
            name, False, f"a credential was made but not read back: {said}", True, MUNGE_FIX
        )
    return Check(
        name, True, f"munged answers on {socket_path} (credential made and read back)", True
    )


def _outcome_text(outcome: Outcome, what: str) -> str:
    """How a command ended, in one line: its own words where it printed any."""
    if outcome.missing:
        return f"{what}: not found"
    if outcome.timed_out:
        return f"{what}: no answer (gave up after the timeout)"
    said = " ".join((outcome.stderr or outcome.stdout).split())
    if said.startswith(what.split()[0] + ":"):  # "munge: Error: ..." names itself
        return said
    return f"{what}: {said}" if said else f"{what}: exit {outcome.rc}"


def check_slurm_controller(ping: Outcome, timeout: float = PING_TIMEOUT) -> Check:
    """`scontrol ping`: does slurmctld answer this host?"""
    name = "Slurm controller"
    lines = [
        line.strip()
        for line in ping.stdout.splitlines()
        if line.strip() and not line.strip().startswith("*")
    ]
    if ping.ok and any(line.endswith(" is UP") for line in lines):
        return Check(name, True, "; ".join(lines), True)
    if ping.missing:
        detail = f"{ping.argv[0]}: not found (see Slurm client)"
    elif ping.timed_out:
        detail = f"scontrol ping: no answer within {timeout:g} s"
    elif lines:
        detail = "; ".join(lines)
        err = " ".join(ping.stderr.split())
        detail += f" ({err})" if err else ""
    else:
        detail = _outcome_text(ping, "scontrol ping")
    return Check(name, False, detail, True, CONTROLLER_FIX)


def read_partitions(
    partitions_out: Outcome, nodes_out: Outcome
) -> tuple[dict[str, Partition] | None, str]:
    """Slurm's partitions from the two scontrol outputs, or None and why not."""
    for outcome in (partitions_out, nodes_out):
        if not outcome.ok:
            return None, f"cannot read Slurm's partitions: {outcome.describe()}"
    try:
        return parse_partitions(partitions_out.stdout, nodes_out.stdout), ""
    except SlurmInfoError as exc:
        return None, f"cannot read Slurm's partitions: {exc}"


def _duration(seconds: int) -> str:
    minutes = seconds // 60
    if minutes >= 60 and minutes % 60 == 0:
        return _plural(minutes // 60, "hour")
    return _plural(minutes, "minute")


def _gpus_per_node(p: Partition) -> str:
    counts = sorted({n.gpus for n in p.nodes})
    if not counts or counts == [0]:
        return "no GPUs"
    per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{per} GPUs per node ({p.gpus_free} of {p.gpus_total} free)"


def _partition_text(p: Partition) -> str:
    usable = sum(1 for n in p.nodes if n.usable)
    limit = f"MaxTime {_duration(p.max_time)}" if p.max_time is not None else "no time limit"
    text = (
        f"partition {p.name} {p.state}, {_plural(len(p.nodes), 'node')} ({usable} usable now), "
        f"{_gpus_per_node(p)}, {limit}"
    )
    if p.allow_groups is not None:
        text += f", only for Unix groups {', '.join(sorted(p.allow_groups))}"
    return text


def _request_text(r: Request) -> str:
    gpus = f"up to {_plural(r.gpus, 'GPU')}" if r.gpus else "no GPU"
    return (
        f"asks for {gpus}, {_plural(r.cpus, 'CPU')} and {r.memory_mb:,} MB for "
        f"{_duration(r.walltime_minutes * 60)}"
    )


def check_slurm_profile(
    slug: str, request: Request, partitions: Mapping[str, Partition] | None, why: str
) -> Check:
    """Whether a Slurm profile's partition exists and is UP, what its nodes offer, and whether
    the profile's largest request (GPUs, walltime, CPUs, memory) can ever run there."""
    name = f"Slurm profile {slug}"
    if partitions is None:
        return Check(name, False, f"partition {request.partition} not judged: {why}", False)
    p = partitions.get(request.partition)
    if p is None:
        known = ", ".join(sorted(partitions)) or "none"
        detail = f"partition {request.partition} does not exist; Slurm has: {known}"
        fix = PARTITION_MISSING_FIX.format(slug=slug, partition=request.partition)
        return Check(name, False, detail, True, fix)
    # Groups are each person's (start() checks them): here only whether anyone could run it.
    anyone = p.allow_groups if p.allow_groups is not None else ()
    verdict = impossible(request, p, anyone)
    detail = f"{_partition_text(p)}\n{_request_text(request)}"
    if verdict is not None:
        fix = PROFILE_IMPOSSIBLE_FIX.format(slug=slug, partition=p.name)
        return Check(name, False, f"{detail}: never fits\n{verdict}", True, fix)
    if not p.up:
        fix = PARTITION_DOWN_FIX.format(name=p.name)
        return Check(name, False, f"{detail}: fits, but the partition is {p.state}", False, fix)
    if not any(n.usable for n in p.nodes):
        states = ", ".join(f"{n.name} {n.state}" for n in p.nodes[:SHOWN_NODES])
        fix = PARTITION_NO_NODE_FIX.format(name=p.name)
        return Check(name, False, f"{detail}: fits, but no node is usable ({states})", False, fix)
    return Check(name, True, f"{detail}: fits", True)


def is_local_address(host: str) -> bool:
    """Whether `host` (an address or a name) is this host: loopback, or an address this host
    can bind (the kernel refuses to bind an address that is not its own)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, address in infos:
        ip = str(address[0]).split("%")[0]
        try:
            if ipaddress.ip_address(ip).is_loopback:
                return True
        except ValueError:
            continue
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((address[0], 0))
            return True
        except OSError:
            continue
    return False


def _named_nodes(nodes: Sequence[tuple[str, str]]) -> str:
    shown = ", ".join(f"{name} ({address})" for name, address in nodes[:SHOWN_NODES])
    more = f" and {len(nodes) - SHOWN_NODES} more" if len(nodes) > SHOWN_NODES else ""
    return shown + more


def _session_nodes(setup: SlurmSetup, partitions: Mapping[str, Partition]) -> list[Node]:
    """The nodes Slurm profiles' sessions can run on (every node when there is no profile)."""
    wanted = {p.options.get("partition") for p in setup.profiles}
    found: dict[str, Node] = {}
    for part in partitions.values():
        if setup.profiles and part.name not in wanted:
            continue
        for node in part.nodes:
            found.setdefault(node.name, node)
    return list(found.values())


def check_slurm_network(
    setup: SlurmSetup,
    partitions: Mapping[str, Partition] | None,
    why: str,
    is_local: Callable[[str], bool] = is_local_address,
) -> Check:
    """The two directions a session needs: its node reaches the hub's API (to report its port),
    and the hub reaches the node on the port the session binds. The doctor cannot try either from
    here; it says what the config and Slurm's node addresses imply."""
    name = "Slurm network"
    api = setup.hub_api_address
    if api is not None and not is_local(api):
        detail = (
            f"slurm.hub_api_address {api} is not an address of this host: the hub cannot "
            "listen there"
        )
        return Check(name, False, detail, True, HUB_API_NOT_LOCAL_FIX)
    if partitions is None:
        said = (
            f"nodes report to http://{_host(api)}:{setup.hub_port}"
            if api is not None
            else "slurm.hub_api_address is not set (the hub API is on loopback only)"
        )
        return Check(name, False, f"{said}; the nodes are not judged: {why}", False)
    nodes = _session_nodes(setup, partitions)
    remote = [(n.name, setup.node_address(n)) for n in nodes if not is_local(setup.node_address(n))]
    if remote and api is None:
        detail = (
            f"slurm.hub_api_address is not set, so the hub API listens on loopback only, but "
            f"nodes {_named_nodes(remote)} are other hosts: their sessions cannot report their "
            "port, and every start there fails"
        )
        return Check(name, False, detail, False, HUB_API_UNSET_FIX.format(port=setup.hub_port))
    if remote and is_loopback_ip(setup.server_ip):
        detail = (
            f"slurm.server_ip is {setup.server_ip}: sessions listen on loopback of their node, "
            f"which the hub cannot reach on {_named_nodes(remote)}"
        )
        return Check(name, False, detail, False, SERVER_IP_FIX)
    if not remote:
        local = [(n.name, setup.node_address(n)) for n in nodes]
        where = f"the nodes {_named_nodes(local)} are this host" if local else "no nodes"
        return Check(name, True, f"{where}: sessions and the hub API meet on this host", False)
    detail = (
        f"nodes {_named_nodes(remote)} report to http://{_host(api or '')}:{setup.hub_port} "
        f"(plain HTTP, with each session's token); the hub reaches each session at its node's "
        f"address on the port the job picks (sessions bind {setup.server_ip})"
    )
    return Check(name, True, detail, False)


def is_loopback_ip(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def _host(address: str | None) -> str:
    if address is None:
        return "127.0.0.1"
    return f"[{address}]" if ":" in address else address


def _not_judged(name: str, why: str) -> Check:
    return Check(name, False, f"not judged: {why}", False)


def slurm_checks(
    setup: SlurmSetup,
    runner: SlurmRunner = run_slurm_command,
    is_local: Callable[[str], bool] = is_local_address,
) -> list[Check]:
    """The Slurm rows, in the order a problem shows itself: the client, slurm.conf, munge, the
    controller, one row per Slurm profile, the network. A row that depends on one that failed
    says it was not judged rather than guessing (and runs nothing that could hang)."""
    env = setup.env
    checks = [check_slurm_commands(setup.bin_dir)]
    path = setup.conf_path
    conf, why = read_slurm_conf(path)
    checks.append(check_slurm_conf(path, conf, why))
    profile_names = [f"Slurm profile {p.slug}" for p in setup.profiles]
    if conf is None:
        why = f"no readable slurm.conf ({path})"
        rows = ["munge", "Slurm controller", *profile_names]
        checks += [_not_judged(row, why) for row in rows]
        return [*checks, check_slurm_network(setup, None, why, is_local)]

    socket_path = conf.munge_socket
    encoded = decoded = None
    munge, unmunge = (shutil.which(c, path=env["PATH"]) for c in ("munge", "unmunge"))
    if conf.auth_type == "auth/munge" and munge and unmunge:
        encoded = runner([munge, "-n", f"--socket={socket_path}"], env=env, timeout=MUNGE_TIMEOUT)
        if encoded.ok:
            decoded = runner(
                [unmunge, f"--socket={socket_path}"],
                env=env,
                timeout=MUNGE_TIMEOUT,
                stdin=encoded.stdout,
            )
    checks.append(check_munge(conf.auth_type, socket_path, encoded, decoded))

    scontrol = [str(setup.bin_dir / "scontrol")]
    ping = runner([*scontrol, "ping"], env=env, timeout=PING_TIMEOUT)
    checks.append(check_slurm_controller(ping))
    partitions: dict[str, Partition] | None = None
    why = "the controller does not answer (see Slurm controller)"
    if ping.ok:
        partitions, why = read_partitions(
            runner(partitions_argv(scontrol), env=env, timeout=SCONTROL_TIMEOUT),
            runner(nodes_argv(scontrol), env=env, timeout=SCONTROL_TIMEOUT),
        )
    for profile in setup.profiles:
        checks.append(check_slurm_profile(profile.slug, slurm_request(profile), partitions, why))
    checks.append(check_slurm_network(setup, partitions, why, is_local))
    return checks


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
    slurm_configured: bool = False,
    slurm: SlurmSetup | None = None,
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
    `accounts`: the accounts policy (None: no accounts row; useradd is judged as for system);
    `slurm`: the config's Slurm setup (None: no Slurm rows; `slurm_configured` without it only
    looks for sinfo and sbatch on PATH)."""
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
    if slurm is not None:
        checks += slurm_checks(slurm, runner=run_slurm_command)
    elif slurm_configured:
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
    slurm_configured: bool = False,
    slurm: SlurmSetup | None = None,
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
        slurm=slurm,
        multi_user=multi_user,
        cgroup_root=cgroup_root,
        hub_url=hub_url,
        db_url=db_url,
        accounts=accounts,
    )
    out.write(render_table(checks))
    out.write("\n" + _summary(checks) + "\n")
    return exit_code(checks)

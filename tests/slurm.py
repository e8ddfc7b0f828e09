"""A private, real Slurm cluster for tests: its own munged, one slurmctld and two slurmd "nodes"
(node1, node2) with 4 fake GPUs each, all on this host, as ../shared/ENVIRONMENT.md "Real Slurm"
describes. It installs nothing (hub/bootstrap.sh test installs the Debian packages).

Stand-in, named here: the GPUs are character devices with /dev/null's numbers (Slurm's gres plugin
only needs device files); Slurm sets CUDA_VISIBLE_DEVICES from them exactly as on real hardware.

Everything lives in one fresh directory under harness.TEST_ROOT (world-readable: every account's
sbatch reads slurm.conf, and jobs run there). Nothing depends on or touches a system munge or
Slurm: the private munged has its own key and socket, and every port is a free one. `stop()` ends
by PID what the cluster started: the daemons it spawned, and the job steps that slurmd forked off
(found by their working directory, which is the cluster's log directory), with their children.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness import free_port, shared_dir

PACKAGES = {
    "munged": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
}
NODES = ("node1", "node2")
GPUS_PER_NODE = 4
# What tests can rely on: name -> (nodes, MaxTime as `scontrol show partition` prints it).
PARTITIONS = {
    "gpu": ("node[1-2]", "12:00:00"),
    "debug": ("node1", "00:30:00"),
    "staffonly": ("node2", "01:00:00"),  # AllowGroups=root: "a partition the user may not use"
}
# Job states after which nothing changes any more (squeue --states=all shows them for MinJobAge).
ENDED = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
# Commands run with this PATH and nothing of the caller's environment but SLURM_CONF: sbatch
# exports the submitting environment into the job, and a test's job must not inherit root's.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def missing_packages() -> list[str]:
    """Debian packages whose programs are not on this machine (empty when Slurm can run)."""
    search = f"{PATH}:{os.environ.get('PATH', '')}"
    return sorted(
        {pkg for prog, pkg in PACKAGES.items() if shutil.which(prog, path=search) is None}
    )


def make_account(name: str) -> str:
    """An ordinary Unix account with a home (give it a harness.run_prefix() name, so that
    harness.remove_accounts(prefix) removes it and its processes)."""
    subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
        check=True,
        capture_output=True,
    )
    return name


class SlurmError(RuntimeError):
    """The cluster did not start, or a Slurm command did not do what the harness needs."""


@dataclass
class SlurmCluster:
    """A started cluster (from start_cluster()). Clients reach it with `env` (SLURM_CONF); `run`
    runs one as root or as a test account; `stop()` ends it by PID."""

    dir: Path
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stopped: bool = False

    # -- where things are ----------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def munge_socket(self) -> Path:
        return self.dir / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client needs to reach this cluster (and nothing else)."""
        return {"SLURM_CONF": str(self.conf)}

    def log_dir_for(self, unix_name: str) -> Path:
        """A directory (0700) owned by `unix_name`, for its jobs' output and working directory."""
        pw = pwd.getpwnam(unix_name)
        path = self.dir / "jobs" / unix_name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        path.chmod(0o700)
        return path

    # -- commands ------------------------------------------------------------------------------
    def run(
        self, argv: list[str], as_user: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` against this cluster, as root or as the Unix account `as_user`."""
        prefix = ["runuser", "-u", as_user, "--"] if as_user else []
        return subprocess.run(
            [*prefix, *argv],
            env={"PATH": PATH, "LANG": "C.UTF-8", **self.env},
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def sbatch(self, unix_name: str, *options: str) -> str:
        """Submit as `unix_name` (output to its log dir); the job id. Raises SlurmError with
        sbatch's own message when it refuses."""
        out = self.log_dir_for(unix_name)
        r = self.run(
            ["sbatch", "--parsable", f"--chdir={out}", f"--output={out}/%j.out", *options],
            as_user=unix_name,
        )
        if r.returncode != 0:
            raise SlurmError(f"sbatch {' '.join(options)} refused: {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def hold_gpus(self, unix_name: str, partition: str, gpus: int, seconds: int = 600) -> str:
        """A `sleep` job of `unix_name` holding `gpus` GPUs of `partition` (up to 4 on one node,
        or a multiple of 4 on that many whole nodes); its job id, once it runs."""
        if gpus <= GPUS_PER_NODE:
            shape = ["--nodes=1", f"--gres=gpu:{gpus}"]
        elif gpus % GPUS_PER_NODE == 0:
            shape = [f"--nodes={gpus // GPUS_PER_NODE}", f"--gres=gpu:{GPUS_PER_NODE}"]
        else:
            raise ValueError(f"hold_gpus: {gpus} GPUs is neither <= 4 nor whole 4-GPU nodes")
        job = self.sbatch(
            unix_name,
            f"--partition={partition}",
            *shape,
            f"--time={max(1, -(-seconds // 60))}",
            f"--wrap=sleep {int(seconds)}",
        )
        self.wait_for_state(job, "RUNNING")
        return job

    def cancel(self, job_id: str) -> None:
        r = self.run(["scancel", job_id])
        if r.returncode != 0:
            raise SlurmError(f"scancel {job_id} failed: {r.stderr.strip()}")

    def job(self, job_id: str) -> tuple[str, str]:
        """(state, reason) from squeue, e.g. ("PENDING", "Resources"); ("", "") once gone."""
        r = self.run(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T|%r"])
        if r.returncode != 0 and "Invalid job id" not in r.stderr:
            raise SlurmError(f"squeue --jobs={job_id} failed: {r.stderr.strip()}")
        line = r.stdout.strip()
        state, _, reason = line.partition("|")
        return state, reason

    def wait_for_state(
        self, job_id: str, state: str, reason: str | None = None, timeout: float = 20
    ) -> float:
        """Seconds until job `job_id` is in `state` (e.g. RUNNING), with `reason` if given (e.g.
        PENDING, Resources); SlurmError after `timeout` seconds."""
        start = time.monotonic()
        seen: tuple[str, str] = ("", "")
        while time.monotonic() - start < timeout:
            seen = self.job(job_id)
            if seen[0] == state and reason in (None, seen[1]):
                return time.monotonic() - start
            if seen[0] in ENDED:
                break  # it will not change any more
            time.sleep(0.1)
        out = self.dir / "jobs" / "*" / f"{job_id}.out"
        raise SlurmError(
            f"job {job_id} is {seen[0] or 'gone'} {seen[1]}, not {state} {reason or ''}"
            f" (waited {time.monotonic() - start:.0f} s); see its output {out}"
            f" and {self.log_dir}/ctld.log"
        )

    # -- processes -----------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """The daemons it started, by name: munged, slurmctld, slurmd-node1, slurmd-node2."""
        return {name: proc.pid for name, proc in self.procs.items()}

    def all_pids(self) -> set[int]:
        """Every process of this cluster: the daemons, the job steps slurmd forked off (their
        working directory is the log directory), and all their descendants."""
        children: dict[int, list[int]] = {}
        roots = {p.pid for p in self.procs.values() if p.poll() is None}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if Path(os.readlink(entry / "cwd")).is_relative_to(self.dir):
                    roots.add(pid)
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(pid)
        found: set[int] = set()
        todo = list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found and pid != os.getpid():
                found.add(pid)
                todo.extend(children.get(pid, []))
        return found

    def freeze_controller(self) -> None:
        """SIGSTOP slurmctld, returning once it is stopped: clients then time out (after
        MessageTimeout, 10 s) as with a controller that hangs."""
        pid = self.procs["slurmctld"].pid
        os.kill(pid, signal.SIGSTOP)
        _wait_pid_state(pid, stopped=True)

    def thaw_controller(self) -> None:
        """SIGCONT slurmctld, returning once it runs again."""
        pid = self.procs["slurmctld"].pid
        os.kill(pid, signal.SIGCONT)
        _wait_pid_state(pid, stopped=False)

    def stop(self, keep_dir: bool = False) -> None:
        """End every process of this cluster by PID and remove its directory (unless `keep_dir`
        or MLRP_KEEP_TEST_DIRS is set). Idempotent."""
        if self.stopped:
            return
        daemons = {p.pid for p in self.procs.values() if p.poll() is None}
        _signal_all(daemons, signal.SIGCONT)  # a frozen slurmctld would not act on SIGTERM
        # The daemons first, with SIGTERM and 5 s to exit cleanly (slurmctld takes the full 5 s
        # when its script helper was killed before it).
        _signal_all(daemons, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in daemons):
            self._reap()
            time.sleep(0.02)
        # Then what is left, at once: daemons that did not exit, job steps (slurmstepd ignores
        # SIGTERM) and what they run. Again while job steps may fork as we look.
        for _ in range(3):
            pids = {p for p in self.all_pids() | daemons if _alive(p)}
            if not pids:
                break
            _signal_all(pids, signal.SIGKILL)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and any(_alive(p) for p in pids):
                self._reap()
                time.sleep(0.02)
        self.stopped = True
        if not (keep_dir or os.environ.get("MLRP_KEEP_TEST_DIRS")):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _reap(self) -> None:
        for proc in self.procs.values():
            proc.poll()


def pid_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T for stopped, Z...); "" when there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    return pid_state(pid) not in ("", "Z", "X")


def _wait_pid_state(pid: int, stopped: bool, timeout: float = 5) -> None:
    """Signals arrive asynchronously: wait until the process shows (or no longer shows) T."""
    deadline = time.monotonic() + timeout
    while (pid_state(pid) == "T") != stopped:
        if time.monotonic() > deadline:
            raise SlurmError(f"process {pid} still {pid_state(pid)!r} {timeout} s after the signal")
        time.sleep(0.01)


def _signal_all(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _slurm_conf(d: Path, name: str, ports: dict[str, int]) -> str:
    host = os.uname().nodename.split(".")[0]
    nodes = f"node[1-{len(NODES)}]"
    node_ports = ",".join(str(ports[n]) for n in NODES)
    lines = [
        f"ClusterName={name}",
        # The address keeps all traffic on loopback, whatever the host name resolves to.
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports['slurmctld']}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={d}/munge/munge.socket",
        f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool/%n",
        f"SlurmctldPidFile={d}/ctld.pid",
        f"SlurmdPidFile={d}/d-%n.pid",
        f"SlurmctldLogFile={d}/log/ctld.log",
        f"SlurmdLogFile={d}/log/d-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu",
        "SlurmdParameters=config_overrides",  # 8 CPUs and 8000 MB per node, whatever this has
        "DefMemPerCPU=500",  # without it a job takes a whole node's memory
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        # Measured: a pending job gets its reason (Resources...) in ~0.6 s instead of ~2.7 s
        # (batch_sched_delay defaults to 3 s); backfill every second instead of 30 s.
        "SchedulerParameters=bf_interval=1,batch_sched_delay=0",
        "MinJobAge=300",  # ended jobs stay in squeue for 5 minutes
        "KillWait=5",  # a cancelled job gets SIGKILL 5 s after SIGTERM (default 30)
        f"NodeName={nodes} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=8000"
        f" Gres=gpu:{GPUS_PER_NODE} Port=[{node_ports}] State=UNKNOWN",
    ]
    for part, (members, max_time) in PARTITIONS.items():
        extra = " Default=YES" if part == "gpu" else ""
        extra += " AllowGroups=root" if part == "staffonly" else ""
        lines.append(f"PartitionName={part} Nodes={members} MaxTime={max_time}{extra} State=UP")
    return "\n".join(lines) + "\n"


def _gres_conf(d: Path) -> str:
    lines = []
    for i, node in enumerate(NODES):
        first = i * GPUS_PER_NODE
        last = first + GPUS_PER_NODE - 1
        lines.append(f"NodeName={node} Name=gpu File={d}/gpu/fakegpu[{first}-{last}]")
    return "\n".join(lines) + "\n"


def _layout(d: Path, name: str, ports: dict[str, int]) -> None:
    for sub in ("state", "log", "munge", "gpu", "jobs", *(f"spool/{n}" for n in NODES)):
        (d / sub).mkdir(mode=0o755, parents=True)
    for n in range(GPUS_PER_NODE * len(NODES)):
        subprocess.run(["mknod", str(d / "gpu" / f"fakegpu{n}"), "c", "1", "3"], check=True)
    key = d / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    (d / "slurm.conf").write_text(_slurm_conf(d, name, ports))
    (d / "gres.conf").write_text(_gres_conf(d))


def _spawn(cluster: SlurmCluster, name: str, argv: list[str]) -> None:
    with (cluster.log_dir / f"{name}.out").open("ab") as out:
        cluster.procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"PATH": PATH, "LANG": "C.UTF-8", **cluster.env},
            cwd=cluster.log_dir,
            start_new_session=True,  # a Ctrl-C of pytest reaches the fixture's stop(), not them
        )


def _wait(
    cluster: SlurmCluster,
    what: str,
    log: Path,
    ready: Callable[[], tuple[bool, str]],
    timeout: float,
) -> None:
    """Wait until ready() says (True, ...); else SlurmError with what it saw last and the end of
    `log` (or of the output of a daemon that exited)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                out = cluster.log_dir / f"{name}.out"
                raise SlurmError(
                    f"{name} exited with status {proc.returncode} while waiting for {what}."
                    f"{_tail(out)}{_tail(log)}"
                )
        ok, seen = ready()
        if ok:
            return
        time.sleep(0.1)
    raise SlurmError(f"{what} not within {timeout:.0f} s (last seen: {seen}).{_tail(log)}")


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f" ({log} does not exist)"
    return f"\nThe end of {log}:\n" + "\n".join(f"  {line}" for line in text)


def _nodes_idle(cluster: SlurmCluster) -> tuple[bool, str]:
    r = cluster.run(["sinfo", "--noheader", "--Node", "--format=%N %T"], timeout=10)
    if r.returncode != 0:
        return False, f"sinfo: {r.stderr.strip()}"
    states = dict(line.split() for line in r.stdout.splitlines() if line.strip())
    return all(states.get(n) == "idle" for n in NODES), ", ".join(
        f"{n} {states.get(n, 'missing')}" for n in NODES
    )


def start_cluster(timeout: float = 30) -> SlurmCluster:
    """Start a private cluster in a fresh directory; it is ready (both nodes idle) on return.
    On failure everything started is stopped, the directory is kept for its logs, and
    SlurmError says what was missing, with the end of the log that tells why."""
    d = shared_dir("slurm-")
    ports = {"slurmctld": free_port(), **{n: free_port() for n in NODES}}
    cluster = SlurmCluster(d, ports)
    try:
        _layout(d, "mlrp" + secrets.token_hex(3), ports)
        m = d / "munge"
        munged_log = m / "munged.log"
        _spawn(
            cluster,
            "munged",
            [
                "munged",
                "--foreground",
                "--force",  # as root, and beside a system munged if there is one
                f"--socket={m}/munge.socket",
                f"--key-file={m}/munge.key",
                f"--pid-file={m}/munged.pid",
                f"--log-file={munged_log}",
                f"--seed-file={m}/munged.seed",
            ],
        )
        _wait(
            cluster,
            "munged's socket",
            munged_log,
            lambda: (cluster.munge_socket.exists(), "no socket"),
            timeout,
        )
        _spawn(cluster, "slurmctld", ["slurmctld", "-D", "-f", str(cluster.conf)])
        for node in NODES:
            # -s: slurmd works in the log directory, and so do the job steps it forks off
            _spawn(
                cluster,
                f"slurmd-{node}",
                ["slurmd", "-D", "-s", "-f", str(cluster.conf), "-N", node],
            )
        _wait(
            cluster,
            "both nodes idle in sinfo",
            cluster.log_dir / "ctld.log",
            lambda: _nodes_idle(cluster),
            timeout,
        )
    except BaseException:
        cluster.stop(keep_dir=True)
        raise
    return cluster

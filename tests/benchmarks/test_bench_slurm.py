"""Slurm benchmarks on the real private cluster (tests/slurm.py): our hub against vanilla
JupyterHub + batchspawner and against a plain sbatch, in one run.

Prints numbers and ratios measured in the same run; nothing here passes or fails on timing. The
tests assert correctness: every server became ready (and its job ran), every poll saw every job
alive, and after the stops no job of the test accounts is left RUNNING or PENDING in squeue and
no process of the test accounts is left.

1. Spawn latency on an idle cluster, three ways, interleaved rounds (the order rotating), the
   same partition (gpu), request (1 CPU, the profile's memory, its walltime, no GPU), JupyterLab
   (`<venv>/bin/jupyterhub-singleuser`, the same arguments and environment) and Unix account:
   - ours: our hub (`mlrp up`), a Slurm profile, POST /hub/api/users/<u>/server until ready;
   - batchspawner: vanilla JupyterHub + batchspawner.SlurmSpawner (batchspawner_hub.py), timed
     the same way (vanilla_hub.spawn_until_ready);
   - sbatch: `sbatch` as the account of our job's own #SBATCH header and exported environment,
     the job exec'ing jupyterhub-singleuser on a port chosen beforehand (no hub in the loop; its
     API token is one minted for the user), timed from running sbatch until the first HTTP 200
     of http://127.0.0.1:<port>/user/<u>/api, polled every 50 ms.
2. Poller cost with 50 Slurm jobs (placeholders: `sleep` jobs of a test account; 16 run, the
   rest pend): ONE SlurmBackend's SharedPoller in this process, with each server's poll at the
   hub's poll_interval (what SlurmServer.poll does: poller.status), against 50 batchspawner
   SlurmSpawner objects each polling its job at JupyterHub's poll_interval, each tool at its own
   default period. squeue runs are counted by a wrapper script (the same for both) and CPU is
   this process's plus its reaped children's (squeue, and for batchspawner sh and runuser), and
   slurmctld's.

Run: pytest tests/benchmarks/test_bench_slurm.py -q -s -p no:cacheprovider. Results are also
written as JSON to $MLRP_BENCH_OUT (default <tmp>/mlrp-bench-results/); the path is printed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import requests
from batchspawner_hub import (
    POLL_INTERVAL as BS_POLL_INTERVAL,
)
from batchspawner_hub import (
    QUERY_CMD,
    BatchSpawnerHub,
    next_poll_delay,
    polling_spawners,
    slurm_env,
)
from harness import Hub, free_port, pids_of_uid, running_hub, shared_dir
from phases import spawn_marks, split
from slurm import PATH, SlurmCluster, make_account
from vanilla_hub import SINGLEUSER, spawn_until_ready

pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: the hub creates Unix accounts, the Slurm daemons run as root",
    ),
]

ROUNDS = int(os.environ.get("MLRP_BENCH_SLURM_ROUNDS", "3"))  # timed rounds of the three ways
POLL_JOBS = int(os.environ.get("MLRP_BENCH_SLURM_JOBS", "50"))  # placeholder jobs polled
POLL_SECONDS = float(os.environ.get("MLRP_BENCH_SLURM_POLL_S", "60"))  # each tool's window
PROFILE = "cluster"
PARTITION = "gpu"
WALLTIME = 60  # minutes, every way's --time
GPUS = 0  # every way: no GPU (no gres), so the fake GPUs play no part
HUB_POLL = 10  # hub.poll_interval: the product default (the tests' base config has 2)
SLURM_POLL = 10.0  # slurm.poll_interval: the product default
START_TIMEOUT = 180  # s, ours and batchspawner's hub alike
READY_POLL_S = 0.05
BASELINE_S = min(10.0, POLL_SECONDS / 3)  # slurmctld's CPU with nobody polling
TARGET_VS_SBATCH = 1.1  # the targets, printed, never asserted
TARGET_VS_BATCHSPAWNER = 0.6
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_DIR = "mlrp-bench-results"
LIVE_STATES = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED"
KINDS = ("ours", "batchspawner", "sbatch")
LABELS = {
    "ours": "ours (MLRP, Slurm profile)",
    "batchspawner": "JupyterHub + batchspawner",
    "sbatch": "plain sbatch",
}
# (label, from mark, to mark): progress values of our spawn events (0 start, 40 submitting, 45
# submitted, 90 port known), "post", "ready", and "report": the job's port report reaching the
# hub (the hub log's line for POST /hub/api/batchspawner, our port-only callback)
PHASES = (
    ("request -> spawner start", "post", 0),
    ("account, checks -> sbatch", 0, 40),
    ("sbatch as the account", 40, 45),
    ("job start, port report", 45, "report"),
    ("port report -> JupyterLab listens", "report", 90),  # its start; the hub connects
    ("hub's HTTP check, route", 90, "ready"),
)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_hub(slurm_cluster: SlurmCluster) -> Iterator[Hub]:
    def configure(h: Hub) -> None:
        h.config["profiles"].append(
            {
                "slug": PROFILE,
                "name": "Cluster",
                "backend": "slurm",
                "cpus": 1,
                "memory": "1G",
                "gpus": GPUS,
                "placement": {"partition": PARTITION, "walltime": WALLTIME},
            }
        )
        h.config["hub"]["poll_interval"] = HUB_POLL
        h.config["hub"]["start_timeout"] = START_TIMEOUT
        # slurm.poll_interval stays at its default (SLURM_POLL)
        h.config["slurm"] = {"conf": str(slurm_cluster.conf), "server_ip": "127.0.0.1"}

    with running_hub(users=("solo",), configure=configure) as h:
        h.login_session("solo", h.passwords["solo"])  # the first login makes the hub user
        h.admin_token()
        yield h


@pytest.fixture(scope="module")
def batch_hub(bench_hub: Hub, slurm_cluster: SlurmCluster) -> Iterator[BatchSpawnerHub]:
    """Started by the spawn test once our hub ran a job it copies; stopped (cleanup_servers
    stops its servers) before our hub's cleanup removes the accounts."""
    b = BatchSpawnerHub(
        bench_hub.workdir / "batchspawner",
        start_timeout=START_TIMEOUT,
        slurm_conf=str(slurm_cluster.conf),
    )
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def submitted(slurm_cluster: SlurmCluster) -> Iterator[list[str]]:
    """Ids of the jobs this module submits itself: any still alive are cancelled, by id."""
    ids: list[str] = []
    yield ids
    alive = [j for j in ids if slurm_cluster.job(j)[0] in LIVE_STATES.split(",")]
    if alive:
        slurm_cluster.run(["scancel", *alive])


@pytest.fixture(scope="module")
def results(bench_hub: Hub, slurm_cluster: SlurmCluster) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "hub_workdir": str(bench_hub.workdir),
        "cluster": str(slurm_cluster.dir),
        "cpus": os.cpu_count(),
    }


def _save(hub: Hub, results: dict[str, Any]) -> None:
    """Beside the hub's files, and where they survive the hub's cleanup ($MLRP_BENCH_OUT)."""
    text = json.dumps(results, indent=2) + "\n"
    (hub.workdir / "bench_slurm.json").write_text(text)
    out = Path(os.environ.get("MLRP_BENCH_OUT") or Path(tempfile.gettempdir(), RESULTS_DIR))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_slurm-{results['started'].replace(':', '')}.json"
    path.write_text(text)
    print(f"results written to {path}")


# -- helpers: the cluster and the accounts ------------------------------------------------------
def _live_jobs(cluster: SlurmCluster, accounts: list[str], states: str = LIVE_STATES) -> list[str]:
    """'<id> <state> <user>' of the accounts' jobs squeue lists in `states`."""
    r = cluster.run(
        [
            "squeue",
            "--noheader",
            f"--states={states}",
            f"--user={','.join(accounts)}",
            "--format=%i %T %u",
        ]
    )
    assert r.returncode == 0, f"squeue failed: {r.stderr}"
    return [line for line in r.stdout.splitlines() if line.strip()]


def _account_pids(account: str) -> list[int]:
    return list(pids_of_uid(pwd.getpwnam(account).pw_uid))


def _wait_idle(cluster: SlurmCluster, accounts: list[str], timeout: float = 40) -> None:
    """Wait until the accounts have no live job and no process; assert none is RUNNING or
    PENDING and no process is left (a job cancelled gets SIGKILL after KillWait, 5 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _live_jobs(cluster, accounts) and not any(_account_pids(a) for a in accounts):
            return
        time.sleep(0.2)
    left = _live_jobs(cluster, accounts, "PENDING,RUNNING")
    assert not left, f"jobs still RUNNING or PENDING {timeout:.0f} s after the stop: {left}"
    procs = {a: _account_pids(a) for a in accounts}
    assert not any(procs.values()), f"processes of the test accounts left: {procs}"


def _cpu_times(pid: int) -> float:
    """User+sys CPU seconds of a process itself."""
    return _cpu_and_children(pid)[0]


def _cpu_and_children(pid: int) -> tuple[float, float]:
    """(own user+sys, reaped children's user+sys) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _server_process(account: str) -> int:
    """The pid of the account's JupyterLab: the Python process running jupyterhub-singleuser
    (ours and plain sbatch: exec'd by the job) or batchspawner-singleuser (which runs
    jupyterhub-singleuser in its own process), not srun's; all on this host."""
    for pid in _account_pids(account):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            len(argv) > 1
            and Path(argv[0].decode()).name.startswith("python")
            and argv[1].decode().endswith("-singleuser")
        ):
            return pid
    raise AssertionError(f"no jupyterhub-singleuser process of {account}")


def _listening_addresses(pid: int) -> set[str]:
    """The local addresses ("7F000001" is 127.0.0.1) of the TCP sockets `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                addr = fields[1].split(":")[0]
                found.add(bytes.fromhex(addr)[::-1].hex().upper() if len(addr) == 8 else addr)
    return found


def _assert_loopback(account: str, what: str) -> None:
    """The account's JupyterLab listens, and on 127.0.0.1 only (tests use loopback only)."""
    addresses = _listening_addresses(_server_process(account))
    assert addresses == {"7F000001"}, f"{what} listens on {addresses}, not 127.0.0.1 only"


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _proc_args(pid: int) -> list[str]:
    """jupyterhub-singleuser's arguments but --ip and --port (each way sets its own)."""
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    return [a for a in argv[2:] if not a.startswith(("--ip=", "--port="))]


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(xs),
        "mean_s": statistics.mean(xs),
        "min_s": min(xs),
        "max_s": max(xs),
        "runs": len(xs),
    }


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- 1. spawn latency: ours, batchspawner, plain sbatch ----------------------------------------
@dataclass
class OurJob:
    """What our first job was made of, for the other two ways to copy."""

    header: list[str]  # its #SBATCH lines
    exported: dict[str, str]  # the variables its --export names, with the server's values
    args: list[str]  # jupyterhub-singleuser's arguments but --ip/--port

    def option(self, name: str) -> str:
        prefix = f"#SBATCH --{name}="
        found = [line[len(prefix) :] for line in self.header if line.startswith(prefix)]
        assert found, f"our job script has no --{name}: {self.header}"
        return found[0]


def _our_job(cluster: SlurmCluster, job_id: str, account: str) -> OurJob:
    r = cluster.run(["scontrol", "write", "batch_script", job_id, "-"])
    assert r.returncode == 0, f"scontrol write batch_script {job_id}: {r.stderr}"
    header = [line for line in r.stdout.splitlines() if line.startswith("#SBATCH ")]
    pid = _server_process(account)
    environ = _proc_environ(pid)
    names = OurJob(header, {}, []).option("export").split(",")
    missing = [n for n in names if n not in environ]
    assert not missing, f"our server lacks exported variables {missing}"
    return OurJob(header, {n: environ[n] for n in names}, _proc_args(pid))


PORT_REPORT_LOG = re.compile(
    r"^\[I (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) JupyterHub log:\d+\] 200 POST "
    r"/hub/api/batchspawner \((\S+)@"
)


def _port_reports(hub: Hub, name: str) -> list[float]:
    """When the hub answered `name`'s port reports (JupyterHub logs in local time, ms)."""
    found = []
    for line in hub.log().splitlines():
        m = PORT_REPORT_LOG.match(line)
        if m and m.group(2) == name:
            found.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    return found


def _phases(hub: Hub, name: str, posted: float, ready: float) -> dict[str, float]:
    """Split one spawn of ours with the timestamps of its recorded progress events and of
    its port report in the hub log."""
    marks = spawn_marks(hub, name, posted, ready)
    reports = [t for t in _port_reports(hub, name) if posted <= t <= ready]
    if reports:
        marks["report"] = reports[-1]
    return split(marks, PHASES)


@dataclass
class Spawn:
    seconds: float
    job_id: str
    phases: dict[str, float]
    sbatch_s: float = 0.0  # plain sbatch: how long the sbatch command itself took
    hub_cpu_s: float = 0.0  # the hub's jupyterhub process, request to ready
    hub_children_cpu_s: float = 0.0  # its reaped children (sbatch, squeue, runuser, sh)


def _hub_cpu(pid: int, before: tuple[float, float]) -> tuple[float, float]:
    now = _cpu_and_children(pid)
    return now[0] - before[0], now[1] - before[1]


def _ours(hub: Hub, cluster: SlurmCluster, name: str) -> Spawn:
    assert hub.proc is not None
    cpu0 = _cpu_and_children(hub.proc.pid)  # `mlrp up` exec()s jupyterhub: the same pid
    posted = time.time()
    body = {"profile": PROFILE}
    elapsed = spawn_until_ready(hub.url, hub.admin_token(), name, body, START_TIMEOUT)
    cpu = _hub_cpu(hub.proc.pid, cpu0)
    model = hub.api("GET", f"/users/{name}").json()
    assert model["servers"][""]["ready"], f"our server of {name} is not ready: {model}"
    job = str(hub.placement_state(name).get("job_id", ""))
    assert job and cluster.job(job)[0] == "RUNNING", f"our job {job!r}: {cluster.job(job)}"
    _assert_loopback(hub.unix_accounts()[name], "our server")
    return Spawn(elapsed, job, _phases(hub, name, posted, posted + elapsed), 0.0, *cpu)


def _stop_ours(hub: Hub, cluster: SlurmCluster, name: str, account: str) -> None:
    hub.stop_server(name)
    _wait_idle(cluster, [account])


def _batchspawner(b: BatchSpawnerHub, cluster: SlurmCluster, account: str) -> Spawn:
    assert b.proc is not None
    cpu0 = _cpu_and_children(b.proc.pid)
    elapsed = b.spawn(account, START_TIMEOUT)
    cpu = _hub_cpu(b.proc.pid, cpu0)
    model = b.api("GET", f"/users/{account}").json()
    assert model["servers"][""]["ready"], f"batchspawner server not ready: {model}"
    job = b.job_id(account)
    assert job and cluster.job(job)[0] == "RUNNING", f"batchspawner job {job!r}: {model}"
    _assert_loopback(account, "batchspawner's server")
    return Spawn(elapsed, job, {}, 0.0, *cpu)


def _stop_batchspawner(b: BatchSpawnerHub, cluster: SlurmCluster, account: str) -> None:
    b.stop_server(account)
    _wait_idle(cluster, [account])


class PlainSbatch:
    """sbatch, as the account, of our job's #SBATCH header with our job's exported variables
    (values copied from our server's process; the API token is one minted for the user, as
    our server's own dies with it), running jupyterhub-singleuser itself on a port chosen
    here: what our job runs minus the port report (a Python snippet that asks the OS for a free
    port and tells the hub)."""

    def __init__(
        self, hub: Hub, cluster: SlurmCluster, name: str, account: str, ours: OurJob
    ) -> None:
        self.hub, self.cluster, self.name, self.account, self.ours = (
            hub,
            cluster,
            name,
            account,
            ours,
        )
        self.token = hub.user_token(name)

    def script(self, port: int) -> str:
        out = Path(self.ours.option("output")).parent / "plain-sbatch-%j.log"
        header = [
            line
            for line in self.ours.header
            if not line.startswith(("#SBATCH --job-name=", "#SBATCH --output="))
        ]
        service_url = f"http://127.0.0.1:{port}/user/{self.name}/"
        command = [str(SINGLEUSER), "--ip=127.0.0.1", f"--port={port}", *self.ours.args]
        return "\n".join(
            [
                "#!/bin/bash",
                "#SBATCH --job-name=bench-plain-sbatch",
                f"#SBATCH --output={out}",
                *header,
                "set -eu",
                f"export JUPYTERHUB_SERVICE_URL={shlex.quote(service_url)}",
                "exec " + shlex.join(command),
                "",
            ]
        )

    def timed_start(self, submitted: list[str], timeout: float = START_TIMEOUT) -> Spawn:
        port = free_port()
        env = {**self.ours.exported, "JUPYTERHUB_API_TOKEN": self.token}
        if "JPY_API_TOKEN" in env:
            env["JPY_API_TOKEN"] = self.token
        script = self.script(port)
        url = f"http://127.0.0.1:{port}/user/{self.name}/api"
        t0 = time.perf_counter()
        r = subprocess.run(
            ["runuser", "-u", self.account, "--", "sbatch", "--parsable"],
            input=script,
            env=env,
            cwd=pwd.getpwnam(self.account).pw_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        sbatch_s = time.perf_counter() - t0
        assert r.returncode == 0, f"plain sbatch refused: {r.stderr}"
        job = r.stdout.strip().split(";")[0]
        submitted.append(job)
        deadline = t0 + timeout
        polls = 0
        while True:
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            polls += 1
            if polls % 40 == 0 and self.cluster.job(job)[0] not in LIVE_STATES.split(","):
                raise AssertionError(f"plain sbatch job {job} ended: {self.cluster.job(job)}")
            if time.perf_counter() > deadline:
                raise AssertionError(f"plain sbatch job {job} not answering in {timeout} s")
            time.sleep(READY_POLL_S)
        elapsed = time.perf_counter() - t0
        assert self.cluster.job(job)[0] == "RUNNING", self.cluster.job(job)
        _assert_loopback(self.account, "the plain sbatch server")
        return Spawn(elapsed, job, {}, sbatch_s=sbatch_s)

    def stop(self, job: str) -> None:
        self.cluster.cancel(job)
        _wait_idle(self.cluster, [self.account])


def test_spawn_ours_vs_batchspawner_vs_plain_sbatch(
    bench_hub: Hub,
    batch_hub: BatchSpawnerHub,
    slurm_cluster: SlurmCluster,
    submitted: list[str],
    results: dict[str, Any],
) -> None:
    hub, cluster, name = bench_hub, slurm_cluster, "solo"

    # The first spawn of ours creates the Unix account: our warm-up, reported apart as "cold".
    # Its job's header, environment and arguments are what the other two ways copy.
    cold = _ours(hub, cluster, name)
    account = hub.unix_accounts()[name]
    ours_job = _our_job(cluster, cold.job_id, account)
    _stop_ours(hub, cluster, name, account)

    batch_hub.runtime = ours_job.option("time")
    batch_hub.memory = ours_job.option("mem")
    batch_hub.nprocs = ours_job.option("cpus-per-task")
    assert ours_job.option("partition") == PARTITION
    batch_hub.server_args = ours_job.args
    batch_hub.server_env = {
        k: v for k, v in ours_job.exported.items() if not k.startswith(("JUPYTERHUB_", "JPY_"))
    }
    batch_hub.start()
    batch_hub.add_users([account])
    plain = PlainSbatch(hub, cluster, name, account, ours_job)

    # untimed warm-ups of the other two
    _batchspawner(batch_hub, cluster, account)
    _stop_batchspawner(batch_hub, cluster, account)
    plain.stop(plain.timed_start(submitted).job_id)

    spawns: dict[str, list[Spawn]] = {k: [] for k in KINDS}
    try:
        for i in range(ROUNDS):  # ours-batchspawner-sbatch, batchspawner-sbatch-ours, ...
            for kind in KINDS[i % 3 :] + KINDS[: i % 3]:
                if kind == "ours":
                    spawns[kind].append(_ours(hub, cluster, name))
                    _stop_ours(hub, cluster, name, account)
                elif kind == "batchspawner":
                    spawns[kind].append(_batchspawner(batch_hub, cluster, account))
                    _stop_batchspawner(batch_hub, cluster, account)
                else:
                    sp = plain.timed_start(submitted)
                    spawns[kind].append(sp)
                    plain.stop(sp.job_id)
    finally:
        for job in submitted:
            if cluster.job(job)[0] in LIVE_STATES.split(","):
                cluster.cancel(job)
    _wait_idle(cluster, [account])

    st = {k: _stats([sp.seconds for sp in spawns[k]]) for k in KINDS}
    med = {k: st[k]["median_s"] for k in KINDS}
    mean = {k: st[k]["mean_s"] for k in KINDS}
    ratios = {
        "ours/sbatch": med["ours"] / med["sbatch"],
        "ours/batchspawner": med["ours"] / med["batchspawner"],
        "batchspawner/sbatch": med["batchspawner"] / med["sbatch"],
    }
    mean_ratios = {
        "ours/sbatch": mean["ours"] / mean["sbatch"],
        "ours/batchspawner": mean["ours"] / mean["batchspawner"],
        "batchspawner/sbatch": mean["batchspawner"] / mean["sbatch"],
    }
    with_phases = [sp.phases for sp in spawns["ours"] if sp.phases]
    phases = (
        {label: statistics.median(p[label] for p in with_phases) for label, _, _ in PHASES}
        if with_phases
        else {}
    )
    sbatch_cmd = statistics.median(sp.sbatch_s for sp in spawns["sbatch"])
    hub_cpu = {
        k: {
            "jupyterhub_s": statistics.median(sp.hub_cpu_s for sp in spawns[k]),
            "children_s": statistics.median(sp.hub_children_cpu_s for sp in spawns[k]),
        }
        for k in ("ours", "batchspawner")
    }
    results["spawn"] = {
        "rounds": ROUNDS,
        "order": "rotating: ours-batchspawner-sbatch, batchspawner-sbatch-ours, ...",
        "partition": PARTITION,
        "gpus": GPUS,
        "our_job_header": ours_job.header,
        "singleuser_args": ours_job.args,
        "ready_signal": "ours, batchspawner: POST answered 201, else progress 'ready': true; "
        f"sbatch: first 200 from /user/<u>/api, polled every {READY_POLL_S} s",
        "hub_poll_interval_s": HUB_POLL,
        **{k: st[k] for k in KINDS},
        **{f"{k}_runs_s": [sp.seconds for sp in spawns[k]] for k in KINDS},
        "ratios": ratios,
        "ratios_of_means": mean_ratios,
        "targets": {"ours/sbatch": TARGET_VS_SBATCH, "ours/batchspawner": TARGET_VS_BATCHSPAWNER},
        "ours_phases_median_s": phases,
        "plain_sbatch_command_median_s": sbatch_cmd,
        "hub_cpu_per_spawn_median_s": hub_cpu,
        "cold_first_spawn_s": cold.seconds,
        "cold_first_spawn_phases_s": cold.phases,
        "loadavg": _load(),
    }

    print(f"\n== Slurm spawn, partition {PARTITION}, {GPUS} GPU, {ROUNDS} interleaved rounds ==")
    print(f"{'seconds':30}{'median':>9}{'mean':>9}{'min':>9}{'max':>9}")
    for k in KINDS:
        print(
            f"{LABELS[k]:30}{st[k]['median_s']:9.3f}{st[k]['mean_s']:9.3f}"
            f"{st[k]['min_s']:9.3f}{st[k]['max_s']:9.3f}"
        )
    for which, values in (("medians", ratios), ("means", mean_ratios)):
        print(f"ratios of {which}: " + "   ".join(f"{k} {v:.2f}" for k, v in values.items()))
    print(
        "ours and batchspawner: POST -> hub ready; plain sbatch: sbatch -> first 200 of the "
        f"server's /api (the sbatch command itself: median {sbatch_cmd:.3f} s). Same header, "
        "environment, arguments and account for all three."
    )
    print(
        "hub CPU per spawn, request to ready (median; jupyterhub process + its reaped "
        "children: sbatch, squeue, runuser, sh): "
        + ", ".join(
            f"{k} {v['jupyterhub_s']:.3f} + {v['children_s']:.3f} s" for k, v in hub_cpu.items()
        )
    )
    print(f"cold first spawn of ours (useradd + spawn): {cold.seconds:.3f} s")
    if phases:
        print("where our time goes (median of the timed spawns; cold spawn in brackets):")
        for label, value in phases.items():
            print(f"  {label:32}{value:7.3f} s  [{cold.phases.get(label, float('nan')):.3f}]")
    for label, ratio, target in (
        ("ours/plain sbatch", ratios["ours/sbatch"], TARGET_VS_SBATCH),
        ("ours/batchspawner", ratios["ours/batchspawner"], TARGET_VS_BATCHSPAWNER),
    ):
        verdict = "within" if ratio <= target else "OVER"
        print(f"{label}: {ratio:.2f} (target <= {target}: {verdict})")
    print(f"load average after: {_load()}")
    _save(hub, results)


# -- 2. the cost of polling 50 jobs -------------------------------------------------------------
@dataclass
class PollCost:
    seconds: float
    squeue_runs: int  # counted by the wrapper
    self_cpu_s: float  # this process (the event loop, parsing)
    children_cpu_s: float  # reaped children: squeue (+ sh, runuser for batchspawner)
    slurmctld_cpu_s: float  # the controller answering

    def per_minute(self) -> dict[str, float]:
        f = 60 / self.seconds
        return {
            "squeue_per_min": self.squeue_runs * f,
            "cpu_s_per_min": (self.self_cpu_s + self.children_cpu_s) * f,
            "self_cpu_s_per_min": self.self_cpu_s * f,
            "children_cpu_s_per_min": self.children_cpu_s * f,
            "slurmctld_cpu_s_per_min": self.slurmctld_cpu_s * f,
        }


class SqueueCounter:
    """A wrapper that logs one line per run ("<args>") and execs the real squeue: the same
    wrapper for both tools, run by root (ours) or the account (batchspawner, via runuser)."""

    def __init__(self, workdir: Path) -> None:
        real = shutil.which("squeue", path=PATH)
        assert real, "squeue is not installed"
        self.log = workdir / "squeue-runs.log"
        self.log.touch()
        self.log.chmod(0o666)
        self.path = workdir / "squeue"
        self.path.write_text(f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> {self.log}\nexec {real} "$@"\n')
        self.path.chmod(0o755)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()


class Window:
    """CPU and squeue runs over a measured interval of this process's work."""

    def __init__(self, counter: SqueueCounter, slurmctld: int) -> None:
        self.counter, self.slurmctld = counter, slurmctld

    def __enter__(self) -> Window:
        self.lines0 = len(self.counter.lines())
        self.cpu0 = self._cpu()
        self.t0 = time.perf_counter()
        return self

    def _cpu(self) -> tuple[float, float, float]:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time(), ch.ru_utime + ch.ru_stime, _cpu_times(self.slurmctld)

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        cpu1 = self._cpu()
        self.cost = PollCost(
            self.seconds,
            len(self.counter.lines()) - self.lines0,
            cpu1[0] - self.cpu0[0],
            cpu1[1] - self.cpu0[1],
            cpu1[2] - self.cpu0[2],
        )


async def _periodic(fn: Callable[[], Awaitable[object]], period: float, first: float) -> None:
    """fn() at `first` seconds from now, then every period with PeriodicCallback's jitter
    (tornado waits for the call to finish, then skips deadlines already past)."""
    loop = asyncio.get_running_loop()
    at = loop.time() + first
    while True:
        await asyncio.sleep(max(0.0, at - loop.time()))
        await fn()
        at += next_poll_delay(period)
        while at < loop.time():
            at += period


async def _run_for(seconds: float, tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _poll_ours(
    cluster: SlurmCluster, jobs: list[str], counter: SqueueCounter, seconds: float
) -> tuple[PollCost, int, dict[str, str]]:
    """One SlurmBackend (its SharedPoller loop every slurm.poll_interval) and each server's
    hub poll every hub.poll_interval, phases spread over the period as servers started at
    different times. Returns the cost, the poller's own count of batch checks, and each job's
    status from a check after the window."""
    from spawners.backends.slurm import SlurmBackend
    from spawners.platform import Platform

    backend = SlurmBackend(
        cast(Platform, SimpleNamespace()),  # the backend only keeps it; polling never reads it
        slurm_conf=str(cluster.conf),
        squeue_command=[str(counter.path)],
        poll_period=SLURM_POLL,
        log=logging.getLogger("bench.slurm"),
    )
    poller = backend.poller

    def hub_poll(job: str) -> Callable[[], Awaitable[object]]:
        async def poll() -> None:
            await poller.status(job)  # what SlurmServer.poll asks

        return poll

    with Window(counter, cluster.pids()["slurmctld"]) as w:
        for job in jobs:
            poller.watch(job)  # the first watch starts the poller's loop
        tasks = [
            asyncio.create_task(_periodic(hub_poll(job), HUB_POLL, i * HUB_POLL / len(jobs)))
            for i, job in enumerate(jobs)
        ]
        await _run_for(seconds, tasks)
    calls = poller.calls
    await poller.refresh()  # after the window: what it sees now
    seen = {j: (await poller.status(j)).status.value for j in jobs}
    await backend.close()
    return w.cost, calls, seen


async def _poll_batchspawner(
    cluster: SlurmCluster, account: str, jobs: list[str], counter: SqueueCounter, seconds: float
) -> tuple[PollCost, int, dict[str, str]]:
    """One batchspawner SlurmSpawner per job, each's poll() every JupyterHub poll_interval
    (30 s, jitter 0.1), phases spread over the period. Returns the cost, the number of poll()
    calls, and each spawner's last job_status."""
    spawners = polling_spawners(account, jobs, str(counter.path))
    polls = 0
    alive: dict[str, bool] = {}

    def poller(sp: Any) -> Callable[[], Awaitable[object]]:
        async def poll() -> None:
            nonlocal polls
            polls += 1
            alive[sp.job_id] = await sp.poll() is None  # None: still running (or pending)

        return poll

    with slurm_env(str(cluster.conf)), Window(counter, cluster.pids()["slurmctld"]) as w:
        tasks = [
            asyncio.create_task(
                _periodic(poller(sp), BS_POLL_INTERVAL, i * BS_POLL_INTERVAL / len(jobs))
            )
            for i, sp in enumerate(spawners)
        ]
        await _run_for(seconds, tasks)
    seen = {sp.job_id: sp.job_status.split(" ")[0] for sp in spawners if sp.job_id in alive}
    assert alive and all(alive.values()), f"batchspawner saw jobs gone: {alive}"
    if seconds >= BS_POLL_INTERVAL:  # a window of a whole period polls every job
        assert set(alive) == set(jobs), f"jobs never polled: {set(jobs) - set(alive)}"
    return w.cost, polls, seen


def test_poller_cost_with_50_jobs(
    bench_hub: Hub, slurm_cluster: SlurmCluster, submitted: list[str], results: dict[str, Any]
) -> None:
    cluster = slurm_cluster
    account = make_account(bench_hub.config["accounts"]["prefix"] + "poll")
    workdir = shared_dir("mlrp-bench-poll-")
    counter = SqueueCounter(workdir)

    def place(_: int) -> str:
        return cluster.sbatch(
            account,
            f"--partition={PARTITION}",
            "--mem=10",
            "--cpus-per-task=1",
            "--time=10",
            "--job-name=bench-placeholder",
            "--wrap=sleep 600",
        )

    try:
        with ThreadPoolExecutor(4) as pool:
            jobs = list(pool.map(place, range(POLL_JOBS)))
        submitted.extend(jobs)
        time.sleep(2)  # let the scheduler place what fits
        states = [s.split()[1] for s in _live_jobs(cluster, [account])]
        assert len(states) == POLL_JOBS, f"placeholders listed: {states}"
        mix = {s: states.count(s) for s in sorted(set(states))}

        # slurmctld's own background work with the 50 jobs and nobody polling, to read its
        # CPU below against
        with Window(counter, cluster.pids()["slurmctld"]) as idle:
            time.sleep(BASELINE_S)
        ours, ours_calls, ours_seen = asyncio.run(_poll_ours(cluster, jobs, counter, POLL_SECONDS))
        ours_lines = counter.lines()
        bs, bs_polls, bs_seen = asyncio.run(
            _poll_batchspawner(cluster, account, jobs, counter, POLL_SECONDS)
        )
        bs_lines = counter.lines()[len(ours_lines) :]
    finally:
        alive = [j for j in submitted if cluster.job(j)[0] in LIVE_STATES.split(",")]
        if alive:
            cluster.run(["scancel", *alive])  # by id: only the jobs this module submitted
        shutil.rmtree(workdir, ignore_errors=True)
    _wait_idle(cluster, [account])

    # Correctness of the measurement itself: both saw every job alive; ours asked about all
    # of them in each squeue, batchspawner about one job per squeue, every job asked about.
    assert set(ours_seen.values()) == {"running"}, f"ours saw: {ours_seen}"
    assert set(bs_seen.values()) <= {"RUNNING", "PENDING"}, f"batchspawner saw: {bs_seen}"
    ids = ",".join(sorted(jobs, key=int))
    assert ours_lines and all(f"--jobs={ids}" in line for line in ours_lines), ours_lines[:3]
    # QUERY_CMD as the wrapper logs it ("$*"): -h -j <job> -o %T %B
    words = " ".join(shlex.split(QUERY_CMD)[1:]).split()
    assert all(line.split()[:2] == words[:2] for line in bs_lines), bs_lines[:3]
    assert all(line.split()[3:] == words[3:] for line in bs_lines), bs_lines[:3]
    asked = {line.split()[2] for line in bs_lines}
    assert asked <= set(jobs) and (POLL_SECONDS < BS_POLL_INTERVAL or asked == set(jobs))

    per = {"ours": ours.per_minute(), "batchspawner": bs.per_minute()}
    periods = {"ours": SLURM_POLL, "batchspawner": BS_POLL_INTERVAL}
    runs = {"ours": ours.squeue_runs, "batchspawner": bs.squeue_runs}
    cpu = {
        "ours": ours.self_cpu_s + ours.children_cpu_s,
        "batchspawner": bs.self_cpu_s + bs.children_cpu_s,
    }
    per_run = {k: cpu[k] / max(runs[k], 1) for k in runs}
    ctld_per_run = {
        "ours": ours.slurmctld_cpu_s / max(ours.squeue_runs, 1),
        "batchspawner": bs.slurmctld_cpu_s / max(bs.squeue_runs, 1),
    }
    # Normalised to one poll period of each tool (what one round of checking every server
    # costs), and projected to a common period of SLURM_POLL s (batchspawner polling as often
    # as ours: its per-round cost times 60/SLURM_POLL).
    per_round = {k: per[k]["cpu_s_per_min"] * periods[k] / 60 for k in per}
    runs_per_round = {k: per[k]["squeue_per_min"] * periods[k] / 60 for k in per}
    same_period = {k: per_round[k] * 60 / SLURM_POLL for k in per}
    ctld_idle = idle.cost.slurmctld_cpu_s * 60 / idle.cost.seconds
    # slurmctld's CPU above its idle rate; its CPU is counted in 1/CLK_TCK steps, so a small
    # excess is within the noise (None: not above idle at all)
    ctld_extra = {
        k: (per[k]["slurmctld_cpu_s_per_min"] - ctld_idle)
        if per[k]["slurmctld_cpu_s_per_min"] > ctld_idle
        else None
        for k in per
    }
    results["poll"] = {
        "jobs": POLL_JOBS,
        "slurmctld_idle_cpu_s_per_min": ctld_idle,
        "slurmctld_cpu_s_per_min_above_idle": ctld_extra,
        "job_states_at_start": mix,
        "window_s": {"ours": ours.seconds, "batchspawner": bs.seconds},
        "periods_s": {
            "ours_squeue": SLURM_POLL,
            "ours_hub_poll": HUB_POLL,
            "batchspawner": BS_POLL_INTERVAL,
        },
        "ours": {**ours.__dict__, **per["ours"], "poller_calls": ours_calls},
        "batchspawner": {**bs.__dict__, **per["batchspawner"], "spawner_polls": bs_polls},
        "cpu_s_per_squeue_run": per_run,
        "slurmctld_cpu_s_per_squeue_run": ctld_per_run,
        "squeue_runs_per_own_period": runs_per_round,
        "cpu_s_per_own_period": per_round,
        "cpu_s_per_min_at_common_period": same_period,
        "ratios_batchspawner_over_ours": {
            "squeue_per_min": per["batchspawner"]["squeue_per_min"]
            / max(per["ours"]["squeue_per_min"], 1e-9),
            "cpu_s_per_min": per["batchspawner"]["cpu_s_per_min"]
            / max(per["ours"]["cpu_s_per_min"], 1e-9),
            "slurmctld_cpu_s_per_min": per["batchspawner"]["slurmctld_cpu_s_per_min"]
            / max(per["ours"]["slurmctld_cpu_s_per_min"], 1e-9),
            "cpu_s_per_min_at_common_period": same_period["batchspawner"]
            / max(same_period["ours"], 1e-9),
        },
    }

    print(
        f"\n== polling {POLL_JOBS} Slurm jobs ({', '.join(f'{n} {s}' for s, n in mix.items())}) "
        f"for {POLL_SECONDS:.0f} s each, each tool at its default period =="
    )
    print(
        f"{'':28}{'period':>7}{'squeue':>8}{'/min':>8}{'CPU s/min':>10}{'self':>7}"
        f"{'kids':>7}{'ctld':>7}{'CPU/run':>9}"
    )
    for k, cost, label in (
        ("ours", ours, f"ours (1 poller, hub {HUB_POLL} s)"),
        ("batchspawner", bs, "batchspawner (per server)"),
    ):
        p = per[k]
        print(
            f"{label:28}{periods[k]:7.0f}{cost.squeue_runs:8d}{p['squeue_per_min']:8.1f}"
            f"{p['cpu_s_per_min']:10.3f}{p['self_cpu_s_per_min']:7.3f}"
            f"{p['children_cpu_s_per_min']:7.3f}{p['slurmctld_cpu_s_per_min']:7.3f}"
            f"{per_run[k] * 1000:7.1f}ms"
        )
    print(
        f"slurmctld with nobody polling: {ctld_idle:.3f} CPU s/min (measured over "
        f"{idle.cost.seconds:.0f} s): the ctld column includes it"
    )
    r = results["poll"]["ratios_batchspawner_over_ours"]
    print(
        f"batchspawner/ours: squeue runs per minute {r['squeue_per_min']:.1f}x, CPU per minute "
        f"{r['cpu_s_per_min']:.1f}x (this process and its children), slurmctld CPU per minute "
        f"{r['slurmctld_cpu_s_per_min']:.1f}x"
    )
    print(
        "slurmctld CPU s/min above its idle rate: "
        + ", ".join(
            f"{k} {v:.3f}" if v is not None else f"{k} not above idle (within the noise)"
            for k, v in ctld_extra.items()
        )
    )
    print(
        "per own period (one round of checking every server): squeue runs "
        + ", ".join(f"{k} {runs_per_round[k]:.1f}" for k in per)
        + "; CPU s "
        + ", ".join(f"{k} {per_round[k]:.3f}" for k in per)
    )
    print(
        f"at a common period of {SLURM_POLL:.0f} s (batchspawner's round cost x 60/"
        f"{SLURM_POLL:.0f}): CPU s/min ours {same_period['ours']:.3f}, batchspawner "
        f"{same_period['batchspawner']:.3f} ({r['cpu_s_per_min_at_common_period']:.1f}x)"
    )
    print(
        f"squeue = runs counted by the wrapper in the window (ours' poller counted "
        f"{ours_calls} batch checks; batchspawner's spawners {bs_polls} polls); self = this "
        "process's CPU; kids = its reaped children's (squeue; for batchspawner also /bin/sh "
        "and runuser); ctld = slurmctld's CPU; CPU/run = (self + kids) per squeue run."
    )
    _save(bench_hub, results)

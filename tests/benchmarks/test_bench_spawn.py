"""Spawn benchmarks on a real hub, against vanilla JupyterHub and a bare server, in one run.

Prints numbers and ratios measured in the same run; nothing here passes or fails on timing. The
tests do assert correctness: every server became ready, and after the stops no server, server
process or GPU lease remains (for vanilla JupyterHub too: no server, no server process).

Three ways to start the same JupyterLab (`<venv>/bin/jupyterhub-singleuser`, same venv, same
arguments and environment, same Unix account):
- ours: our hub (`mlrp up`), profile ``cpu`` (a 1 CPU / 2G cgroup, as users get it);
- vanilla: `<venv>/bin/jupyterhub` (JupyterHub 6.x) with its default LocalProcessSpawner, started
  by the benchmark with its own config in a temp dir (vanilla_hub.py), no cgroup;
- bare: `jupyterhub-singleuser` started directly with subprocess.Popen as the account, no cgroup.

1. Single spawn latency: after a warm-up of each, REPEATS rounds of ours / vanilla / bare, the
   order rotating each round. The user's first spawn with us, which creates the Unix account, is
   the warm-up of ours and is reported apart as "cold".
2. CONCURRENT users at once: concurrent spawn requests to ours cold (useradd in each spawn), then
   vanilla (the same accounts), then ours warm, with the hub's CPU time per spawn.

"Ready" for ours and vanilla alike (vanilla_hub.spawn_until_ready): the time from sending
POST /hub/api/users/<u>/server until the hub reports the server ready. The POST itself returns 201
only once the spawn has finished and the proxy route is in place (JupyterHub waits up to its
slow_spawn_timeout, 10 s, before answering 202); on 202 the benchmark reads the progress event
stream (GET .../server/progress) until the event with "ready": true. "Ready" for the bare start:
the first HTTP 200 from http://127.0.0.1:<port>/user/<u>/api, polled every 20 ms (the server
answers it without auth).

Run: pytest tests/benchmarks -q -s -p no:cacheprovider   (-s shows the tables). Results are
also written as JSON to $MLRP_BENCH_OUT (default <tmp>/mlrp-bench-results/); the path is printed.
"""

from __future__ import annotations

import json
import os
import pwd
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from harness import Hub, base_config, free_port, run_prefix, shared_dir
from phases import spawn_marks, split
from vanilla_hub import SINGLEUSER, VanillaHub, server_launch, spawn_until_ready

pytestmark = [
    pytest.mark.benchmark,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: the hub creates Unix accounts and setuid()s to them",
    ),
]

PROFILE = "cpu"
# Timed rounds of ours/vanilla/bare. Vanilla's readiness polling backs off with random jitter,
# so its times spread widely (2.1 to 4.3 s seen in one run): 8 rounds, and means printed too.
REPEATS = int(os.environ.get("MLRP_BENCH_REPEATS", "8"))
CONCURRENT = int(os.environ.get("MLRP_BENCH_USERS", "20"))  # users spawning at once
READY_POLL_S = 0.02
OVERHEAD_TARGET = 0.15  # the target: our spawn at most 15 % slower than a bare start
START_TIMEOUT = 180  # s, ours and vanilla alike: 20 JupyterLabs starting at once on 2 cores
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_DIR = "mlrp-bench-results"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_hub() -> Iterator[Hub]:
    workdir = shared_dir("mlrp-bench-")
    workdir.chmod(0o755)
    hub = Hub(workdir, base_config(workdir / "data", run_prefix()))
    hub.config["hub"]["poll_interval"] = 10  # the product default, not the tests' 2 s
    hub.config["hub"]["start_timeout"] = START_TIMEOUT
    try:
        hub.start()
        hub.admin_token()  # once, before any thread uses hub.api()
        yield hub
    finally:
        hub.cleanup()


@pytest.fixture(scope="module")
def vanilla(bench_hub: Hub) -> Iterator[VanillaHub]:
    """Vanilla JupyterHub, started by the first test that needs it (_start_vanilla), once our
    hub has started a server whose arguments and environment it copies. Stopped (with its
    servers: cleanup_servers) before our hub's cleanup removes the accounts."""
    v = VanillaHub(bench_hub.workdir / "vanilla", start_timeout=START_TIMEOUT)
    try:
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="module")
def results(bench_hub: Hub) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "hub_workdir": str(bench_hub.workdir),
        "cpus": os.cpu_count(),
    }


def _save(hub: Hub, results: dict[str, Any]) -> None:
    """Write the results beside the hub's files, and where they survive the hub's cleanup.

    Hub.cleanup() removes the hub's work directory (unless MLRP_KEEP_TEST_DIRS is set), so the
    lasting copy goes to $MLRP_BENCH_OUT (default: <tmp>/mlrp-bench-results/).
    """
    text = json.dumps(results, indent=2) + "\n"
    (hub.workdir / "bench_spawn.json").write_text(text)
    out = Path(os.environ.get("MLRP_BENCH_OUT") or Path(tempfile.gettempdir(), RESULTS_DIR))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_spawn-{results['started'].replace(':', '')}.json"
    path.write_text(text)
    print(f"results written to {path}")


# -- helpers ------------------------------------------------------------------------------------
def _add_users(hub: Hub, names: list[str]) -> None:
    """Login account (mlrp user add) plus a first login, which creates the JupyterHub user."""

    def add(name: str) -> None:
        hub.add_user(name)
        hub.login_session(name, hub.passwords[name])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, names))


@dataclass
class Spawn:
    """One spawn of ours: request → ready, where the time went, and the server's CPU."""

    seconds: float
    phases: dict[str, float]  # from the spawn's recorded progress events; {} if not found
    server_cpu_s: float  # user+sys of the server process just after it was reported ready
    # Vanilla only: JupyterHub said ready, but the server's own process had already exited. Its
    # port, from random_port() (bind to 0, close), was taken meanwhile by another server starting
    # at the same time, which then answered the readiness check (any non-5xx will do). The user
    # would land on someone else's server. Ours cannot do this: it checks who owns the port.
    false_ready: bool = False


PHASES = (  # (label, from mark, to mark): marks are progress values, "post" and "ready"
    ("request -> spawner start", "post", 0),
    ("account, cgroup, Popen", 0, 50),
    ("Popen -> port listening", 50, 90),
    ("listening -> hub ready", 90, "ready"),
)


def _phases(hub: Hub, name: str, posted: float, ready: float) -> dict[str, float]:
    """Split one spawn with the timestamps of its events (progress 0, 50, 90) in mlrp.sqlite."""
    return split(spawn_marks(hub, name, posted, ready), PHASES)


def _timed_spawn(hub: Hub, name: str, timeout: float = START_TIMEOUT) -> Spawn:
    """Time from sending the spawn request until the hub reports the server ready."""
    posted = time.time()
    elapsed = spawn_until_ready(hub.url, hub.admin_token(), name, {"profile": PROFILE}, timeout)
    model = hub.api("GET", f"/users/{name}").json()
    assert model["servers"][""]["ready"], f"server of {name} is not ready: {model}"
    pid = hub.server_pid(name)
    assert pid and _alive(pid), f"no live server process for {name}"
    cpu = _cpu_times(pid)[0]
    return Spawn(elapsed, _phases(hub, name, posted, posted + elapsed), cpu)


def _vanilla_spawn(v: VanillaHub, name: str, timeout: float = START_TIMEOUT) -> Spawn:
    """The same measurement on vanilla JupyterHub (no phases: it records no events)."""
    elapsed = v.spawn(name, timeout)
    model = v.api("GET", f"/users/{name}").json()
    assert model["servers"][""]["ready"], f"vanilla server of {name} is not ready: {model}"
    pid = v.server_pid(name)
    assert pid, f"vanilla recorded no server process for {name}"
    try:
        if _alive(pid):
            return Spawn(elapsed, {}, _cpu_times(pid)[0])
    except FileNotFoundError:
        pass
    return Spawn(elapsed, {}, 0.0, false_ready=True)


def _start_vanilla(v: VanillaHub, hub: Hub, running: str) -> None:
    """Start vanilla with the command line and environment of our running server of `running`."""
    if v.running:
        return
    pid = hub.server_pid(running)
    v.server_env, v.server_args = server_launch(_proc_environ(pid)), _proc_args(pid)
    v.start()


def _proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _proc_args(pid: int) -> list[str]:
    """Arguments after the jupyterhub-singleuser script (cmdline is `python script args...`)."""
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    idx = next(i for i, a in enumerate(argv) if a.endswith("jupyterhub-singleuser"))
    return argv[idx + 1 :]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cpu_times(pid: int) -> tuple[float, float]:
    """(own user+sys, reaped children's user+sys) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _proxy_pid(hub: Hub) -> int:
    try:
        return int((hub.data_dir / "proxy.pid").read_text().strip())
    except (OSError, ValueError):
        return 0


class BareServer:
    """jupyterhub-singleuser started directly, as the account, with the hub's launch env."""

    def __init__(self, hub: Hub, name: str, env: dict[str, str], args: list[str]) -> None:
        self.hub, self.name, self.env, self.args = hub, name, env, args

    def timed_start(self, timeout: float = 60) -> tuple[float, float]:
        """(seconds from Popen to the first 200 of /api, the server's CPU seconds by then)."""
        account = pwd.getpwnam(self.hub.unix_accounts()[self.name])
        port = free_port()
        token = self.hub.user_token(self.name)  # the server token dies with the hub's server
        env = dict(self.env)
        env.update(
            JUPYTERHUB_API_TOKEN=token,
            JPY_API_TOKEN=token,
            JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}/user/{self.name}/",
        )
        url = f"http://127.0.0.1:{port}/user/{self.name}/api"
        log = (self.hub.workdir / f"bare-{self.name}.log").open("ab")
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(SINGLEUSER), *self.args],
            env=env,
            cwd=account.pw_dir,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            deadline = t0 + timeout
            while True:
                try:
                    if requests.get(url, timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None:
                    raise AssertionError(f"bare server exited with {proc.returncode}")
                if time.perf_counter() > deadline:
                    raise AssertionError(f"bare server not ready in {timeout} s")
                time.sleep(READY_POLL_S)
            return time.perf_counter() - t0, _cpu_times(proc.pid)[0]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _stop_and_check(hub: Hub | VanillaHub, names: list[str], what: str) -> None:
    """Stop these users' servers at once; assert no server or server process is left."""
    pids = {n: hub.server_pid(n) for n in names}
    with ThreadPoolExecutor(max(1, len(names))) as pool:
        list(pool.map(hub.stop_server, names))
    users = {u["name"]: u for u in hub.api("GET", "/users").json()}
    for n in names:
        assert not users[n].get("servers"), f"{what} of {n} still listed: {users[n]}"
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids.values() if p) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {n: p for n, p in pids.items() if p and _alive(p)}
    assert not left, f"{what} processes still running after stop: {left}"


def _stop_all(hub: Hub, names: list[str]) -> None:
    """Stop our servers; nothing of them is left, GPU leases included."""
    _stop_and_check(hub, names, "server")
    assert hub.leases() == {}, f"GPU leases left after stop: {hub.leases()}"


def _stop_running(hub: Hub, names: list[str]) -> None:
    """Best effort, after a failure: stop whichever of these servers still runs."""
    for n in names:
        try:
            if hub.api("GET", f"/users/{n}").json().get("servers"):
                hub.stop_server(n)
        except (requests.RequestException, AssertionError, ValueError):
            pass


def _stop_vanilla(v: VanillaHub, names: list[str]) -> None:
    _stop_and_check(v, names, "vanilla server")


def _machine_busy() -> float:
    """CPU seconds all CPUs of the machine have spent busy since boot (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


def _phase_stats(spawns: list[Spawn], how: str = "median") -> dict[str, float]:
    with_phases = [sp.phases for sp in spawns if sp.phases]
    if not with_phases:
        return {}
    agg = statistics.median if how == "median" else statistics.mean
    return {label: agg([ph[label] for ph in with_phases]) for label, _, _ in PHASES}


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


# -- 1. one user: ours vs vanilla JupyterHub vs a bare jupyterhub-singleuser -------------------
KINDS = ("ours", "vanilla", "bare")
LABELS = {
    "ours": "ours (MLRP, cgroup 1 CPU)",
    "vanilla": "vanilla JupyterHub + LPS",
    "bare": "bare jupyterhub-singleuser",
}


def test_single_spawn_vs_vanilla_and_bare(
    bench_hub: Hub, vanilla: VanillaHub, results: dict[str, Any]
) -> None:
    hub, name = bench_hub, "solo"
    _add_users(hub, [name])

    # Cold: the first spawn creates the Unix account. It is also the warm-up of ours, and the
    # moment we copy the launch environment and arguments the hub gives the server.
    cold = _timed_spawn(hub, name)
    pid = hub.server_pid(name)
    env, args = _proc_environ(pid), _proc_args(pid)
    _start_vanilla(vanilla, hub, name)
    _stop_all(hub, [name])
    account = hub.unix_accounts()[name]  # vanilla's user is named like our Unix account
    vanilla.add_users([account])
    bare = BareServer(hub, name, env, args)
    _vanilla_spawn(vanilla, account)  # warm-ups (not counted)
    _stop_vanilla(vanilla, [account])
    bare.timed_start()

    spawns: dict[str, list[Spawn]] = {k: [] for k in KINDS}
    for i in range(REPEATS):  # interleaved, order rotating: ours-vanilla-bare, vanilla-bare-...
        for kind in KINDS[i % 3 :] + KINDS[: i % 3]:
            if kind == "ours":
                spawns[kind].append(_timed_spawn(hub, name))
                _stop_all(hub, [name])
            elif kind == "vanilla":
                spawns[kind].append(_vanilla_spawn(vanilla, account))
                _stop_vanilla(vanilla, [account])
            else:
                seconds, server_cpu = bare.timed_start()
                spawns[kind].append(Spawn(seconds, {}, server_cpu))

    st = {k: _stats([sp.seconds for sp in spawns[k]]) for k in KINDS}
    med = {k: st[k]["median_s"] for k in KINDS}
    ratios = {
        "ours/vanilla": med["ours"] / med["vanilla"],
        "ours/bare": med["ours"] / med["bare"],
        "vanilla/bare": med["vanilla"] / med["bare"],
    }
    mean = {k: st[k]["mean_s"] for k in KINDS}
    mean_ratios = {
        "ours/vanilla": mean["ours"] / mean["vanilla"],
        "ours/bare": mean["ours"] / mean["bare"],
        "vanilla/bare": mean["vanilla"] / mean["bare"],
    }
    overhead = ratios["ours/bare"] - 1
    phases = _phase_stats(spawns["ours"])
    cpu = {k: statistics.median(sp.server_cpu_s for sp in spawns[k]) for k in KINDS}
    results["single"] = {
        "profile": PROFILE,
        "rounds": REPEATS,
        "order": "rotating: ours-vanilla-bare, vanilla-bare-ours, bare-ours-vanilla, ...",
        "ready_signal": "POST answered 201, else progress event stream 'ready': true",
        "bare_ready_signal": f"first 200 from /user/<u>/api, polled every {READY_POLL_S} s",
        "vanilla": {**st["vanilla"], "what": "JupyterHub + LocalProcessSpawner, no cgroup"},
        "ours": st["ours"],
        "bare": st["bare"],
        **{f"{k}_runs_s": [sp.seconds for sp in spawns[k]] for k in KINDS},
        "ratio": ratios["ours/bare"],
        "ratios": ratios,
        "ratios_of_means": mean_ratios,
        "overhead_pct": overhead * 100,
        "ours_phases_median_s": phases,
        "server_cpu_to_ready_median_s": cpu,
        "cold_first_spawn_s": cold.seconds,
        "cold_first_spawn_phases_s": cold.phases,
        "loadavg": _load(),
    }

    print(f"\n== single spawn, profile {PROFILE!r}, {REPEATS} interleaved rounds ==")
    print(f"{'seconds':30}{'median':>9}{'mean':>9}{'min':>9}{'max':>9}{'server CPU':>12}")
    for k in KINDS:
        print(
            f"{LABELS[k]:30}{st[k]['median_s']:9.3f}{st[k]['mean_s']:9.3f}"
            f"{st[k]['min_s']:9.3f}{st[k]['max_s']:9.3f}{cpu[k]:12.2f}"
        )
    for name, values in (("medians", ratios), ("means", mean_ratios)):
        print(
            f"ratios of {name}: "
            + "   ".join(f"{label} {value:.2f}" for label, value in values.items())
        )
    print(
        "ours and vanilla: POST -> hub ready; bare: Popen -> first 200; server CPU = the server "
        "process's CPU seconds until ready (median). Only ours runs in a cgroup (1 CPU / 2G)."
    )
    print(f"cold first spawn of ours (useradd + spawn): {cold.seconds:.3f} s")
    if phases:
        print("where our time goes (median of the timed spawns; cold spawn in brackets):")
        for label, value in phases.items():
            print(f"  {label:28}{value:7.3f} s  [{cold.phases.get(label, float('nan')):.3f}]")
        own = sum(v for k, v in phases.items() if k != "Popen -> port listening")
        results["single"]["hub_share_median_s"] = own
        print(
            f"hub's own share (all phases but the server's start-up): {own:.3f} s = "
            f"{100 * own / med['bare']:.1f} % of the bare median"
        )
    print(f"load average after: {_load()}")
    verdict = "within" if overhead <= OVERHEAD_TARGET else "OVER"
    print(
        f"interpretation: our spawn adds {med['ours'] - med['bare']:+.3f} s "
        f"({overhead * 100:+.1f} %) to a bare start of the same server, {verdict} the "
        f"{OVERHEAD_TARGET * 100:.0f} % target; vanilla JupyterHub adds "
        f"{med['vanilla'] - med['bare']:+.3f} s ({(ratios['vanilla/bare'] - 1) * 100:+.1f} %); "
        f"ours takes {ratios['ours/vanilla']:.2f}x vanilla's time (means: "
        f"{mean_ratios['ours/vanilla']:.2f}x)."
    )
    _save(hub, results)


# -- 2. many users at once ----------------------------------------------------------------------
def _burst(
    names: list[str], spawn: Callable[[str], Spawn], hub_pid: int, proxy_pid: int
) -> dict[str, Any]:
    """Fire all spawn requests at once; per-user and total times, and CPU used meanwhile."""
    # The CPU we count is this process's: `mlrp up` exec()s jupyterhub, vanilla is jupyterhub.
    assert "jupyterhub" in Path(f"/proc/{hub_pid}/cmdline").read_text(errors="replace")
    gate = threading.Barrier(len(names) + 1)
    spawns: dict[str, Spawn] = {}
    load_before = _load()

    def one(name: str) -> None:
        gate.wait()
        spawns[name] = spawn(name)

    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(one, n) for n in names]
        hub0, kids0 = _cpu_times(hub_pid)
        proxy0 = _cpu_times(proxy_pid)[0] if proxy_pid else 0.0
        busy0 = _machine_busy()
        t0 = time.perf_counter()
        gate.wait()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
        busy1 = _machine_busy()
        hub1, kids1 = _cpu_times(hub_pid)
        proxy1 = _cpu_times(proxy_pid)[0] if proxy_pid else 0.0
    assert sorted(spawns) == sorted(names), "every server became ready"
    false_ready = sorted(n for n, sp in spawns.items() if sp.false_ready)
    per_user = [sp.seconds for sp in spawns.values()]
    servers_cpu = sum(sp.server_cpu_s for sp in spawns.values())
    cpus = os.cpu_count() or 1
    return {
        "wall_s": wall,
        "per_user": _stats(per_user),
        "per_user_mean_s": statistics.mean(per_user),
        "phases_mean_s": _phase_stats(list(spawns.values()), how="mean"),
        "hub_cpu_s": hub1 - hub0,
        "hub_cpu_per_spawn_s": (hub1 - hub0) / len(names),
        "hub_children_cpu_s": kids1 - kids0,
        "proxy_cpu_s": proxy1 - proxy0,
        "servers_cpu_to_ready_s": servers_cpu,
        "cpu_floor_s": servers_cpu / cpus,
        "machine_busy_s": busy1 - busy0,
        "machine_busy_pct": 100 * (busy1 - busy0) / (wall * cpus),
        "ours_pct_of_busy": 100
        * (servers_cpu + (hub1 - hub0) + (kids1 - kids0) + (proxy1 - proxy0))
        / max(busy1 - busy0, 1e-9),
        "loadavg_before": load_before,
        "loadavg_after": _load(),
        "false_ready": false_ready,
    }


def test_many_users_at_once(bench_hub: Hub, vanilla: VanillaHub, results: dict[str, Any]) -> None:
    hub = bench_hub
    assert hub.proc is not None
    names = [f"c{i:02d}" for i in range(CONCURRENT)]
    _add_users(hub, names)
    single = results.get("single", {}).get("ours", {}).get("median_s")

    def ours() -> dict[str, Any]:
        assert hub.proc is not None
        return _burst(names, lambda n: _timed_spawn(hub, n), hub.proc.pid, _proxy_pid(hub))

    # Vanilla runs between our two, so neither of ours sees a systematically different machine
    # (page cache, homes just created) than vanilla does.
    runs: dict[str, dict[str, Any]] = {}
    accounts: list[str] = []
    try:
        runs["cold"] = ours()  # each spawn creates its Unix account
        _start_vanilla(vanilla, hub, names[0])
        _stop_all(hub, names)
        unix = hub.unix_accounts()
        accounts = [unix[n] for n in names]
        vanilla.add_users(accounts)
        assert vanilla.proc is not None
        runs["vanilla"] = _burst(
            accounts, lambda n: _vanilla_spawn(vanilla, n), vanilla.proc.pid, vanilla.proxy_pid()
        )
        _stop_vanilla(vanilla, accounts)
        runs["warm"] = ours()
        _stop_all(hub, names)
    except BaseException:
        _stop_running(hub, names)
        for n in accounts:
            try:
                if vanilla.running and vanilla.server_pid(n):
                    vanilla.stop_server(n)
            except (requests.RequestException, AssertionError, ValueError):
                pass
        raise

    for r in runs.values():
        r["ratio_vs_serial_single"] = r["wall_s"] / (CONCURRENT * single) if single else None
    van = runs["vanilla"]
    vs_vanilla = {
        kind: {
            "wall": runs[kind]["wall_s"] / van["wall_s"],
            "hub_cpu_per_spawn": runs[kind]["hub_cpu_per_spawn_s"] / van["hub_cpu_per_spawn_s"],
        }
        for kind in ("cold", "warm")
    }
    results["concurrent"] = {
        "users": CONCURRENT,
        "profile": PROFILE,
        "order": "ours cold, vanilla, ours warm",
        **runs,
        "ours_vs_vanilla": vs_vanilla,
    }

    cpus = os.cpu_count()
    print(f"\n== {CONCURRENT} users spawning at once, profile {PROFILE!r}, {cpus} CPUs ==")
    print(
        f"{'':9}{'wall':>7}{'mean':>7}{'median':>7}{'max':>7}{'floor':>7}{'busy%':>7}"
        f"{'ours%':>7}{'hub':>7}{'/spawn':>7}{'kids':>6}{'proxy':>6}{'vs Nx1':>8}"
    )
    for kind, r in runs.items():
        vs = r["ratio_vs_serial_single"]
        print(
            f"{kind:9}{r['wall_s']:7.1f}{r['per_user_mean_s']:7.1f}"
            f"{r['per_user']['median_s']:7.1f}{r['per_user']['max_s']:7.1f}"
            f"{r['cpu_floor_s']:7.1f}{r['machine_busy_pct']:7.0f}{r['ours_pct_of_busy']:7.0f}"
            f"{r['hub_cpu_s']:7.2f}{r['hub_cpu_per_spawn_s']:7.3f}"
            f"{r['hub_children_cpu_s']:6.2f}{r['proxy_cpu_s']:6.2f}"
            + (f"{vs:8.2f}" if vs is not None else f"{'n/a':>8}")
        )
    print(
        "rows in the order they ran: cold = ours, each spawn creating its Unix account; vanilla "
        "= vanilla JupyterHub + LocalProcessSpawner, same accounts; warm = ours again. Seconds; "
        "wall = first request to last ready; mean/median/max = each user's own request "
        f"to ready; floor = CPU the {CONCURRENT} servers used until ready / CPUs; busy% = whole "
        "machine; ours% = share of the machine's busy time used by that hub, its proxy, kids "
        "and servers; hub = CPU (user+sys) of the jupyterhub process, /spawn per spawn; kids = "
        "its reaped children (useradd); proxy = its configurable-http-proxy; "
        f"vs Nx1 = wall / ({CONCURRENT} x our single median {single or float('nan'):.3f} s). "
        "Only our servers run in a cgroup (1 CPU / 2G each)."
    )
    for kind, r in runs.items():
        if r["false_ready"]:
            print(
                f"{kind}: {len(r['false_ready'])} server(s) reported ready whose own process had "
                f"exited, another server having taken its port: {', '.join(r['false_ready'])}"
            )
    for kind in ("warm", "cold"):
        print(
            f"ours {kind}/vanilla: wall {vs_vanilla[kind]['wall']:.2f}x, hub CPU per spawn "
            f"{vs_vanilla[kind]['hub_cpu_per_spawn']:.2f}x "
            f"({runs[kind]['hub_cpu_per_spawn_s']:.3f} vs {van['hub_cpu_per_spawn_s']:.3f} s)"
        )
    print(f"where each of our users' time goes (mean over the {CONCURRENT}):")
    print(f"  {'':28}" + "".join(f"{k:>8}" for k in ("cold", "warm")))
    for label, _, _ in PHASES:
        nan = float("nan")
        cells = "".join(
            f"{runs[k]['phases_mean_s'].get(label, nan):8.2f}" for k in ("cold", "warm")
        )
        print(f"  {label:28}{cells}")
    for kind, r in runs.items():
        print(
            f"interpretation ({kind}): {CONCURRENT} spawns took {r['wall_s']:.1f} s, "
            f"{r['wall_s'] / r['cpu_floor_s']:.2f}x the CPU floor of {r['cpu_floor_s']:.1f} s "
            f"(machine {r['machine_busy_pct']:.0f} % busy, {r['ours_pct_of_busy']:.0f} % of it "
            f"this hub's; load before {r['loadavg_before']}); the hub used "
            f"{r['hub_cpu_s']:.1f} s CPU, {100 * r['hub_cpu_s'] / r['machine_busy_s']:.0f} % "
            "of the machine's busy time."
        )
    _save(hub, results)

"""The local backend with real processes: MLRPSpawner starts a fake jupyterhub-singleuser
(tests/fake_server.py) exactly as it starts JupyterLab, and the test asks the process what it was
given. Developer (single-user) mode, so no root and no Unix accounts are needed; what is checked
is what the process receives: its GPUs, its environment, its log file.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_cgroups import FakeKernelOs, make_v1_root, make_v2_root
from fake_nvml import FakeGPU, fake_pynvml
from fake_server import ask, make_image
from fakes import MemoryRecords, make_spawner
from harness import REPO

from spawners import affinity, cgroups
from spawners.accounts import current_account, server_tag
from spawners.affinity import CpuPlacer, Placement, placer_for, thread_count
from spawners.spawner import MLRPSpawner

pytestmark = pytest.mark.unit

MakeSpawner = Callable[..., MLRPSpawner]


def profiles(image: Path) -> list[dict[str, Any]]:
    common = {"backend": "local", "image_env": str(image)}
    return [
        {"slug": "cpu", "name": "CPU", "gpu_choices": [0], **common},
        {"slug": "gpu2", "name": "Two GPUs", "gpu_choices": [2], **common},
    ]


@pytest.fixture
async def spawners(tmp_path: Path) -> AsyncIterator[MakeSpawner]:
    """Makes spawners on one records store; stops their servers (by PID) afterwards."""
    image = make_image(tmp_path / "image")
    records = MemoryRecords()
    made: list[MLRPSpawner] = []

    def make(user: str = "alice", **kw: Any) -> MLRPSpawner:
        sp = make_spawner(records, profiles(image), tmp_path, user=user, **kw)
        made.append(sp)
        return sp

    yield make
    for sp in made:
        child = getattr(sp.placed, "child", None)
        if child is not None and child.pid and await child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)


def records_of(sp: MLRPSpawner) -> MemoryRecords:
    records = sp.platform.records
    assert isinstance(records, MemoryRecords)
    return records


async def start(sp: MLRPSpawner, **options: Any) -> str:
    sp.user_options = options
    return await sp.start()


async def test_the_server_sees_exactly_its_leased_gpus(spawners: MakeSpawner) -> None:
    alice = spawners("alice")
    records = records_of(alice)
    assert records.lease_gpus("bob/", alice.platform.backend("local").allocator.node, ["0"], 1) == [
        "0"
    ]
    url = await start(alice, profile="gpu2", gpus=2)
    leased = records.held_by("alice/")
    assert leased == ["1", "2"], "two GPUs, none of them bob's"
    env = ask(url, "/env")
    for key in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "MLRP_GPUS"):
        assert env[key] == "1,2", (key, env[key])
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    await alice.stop()
    assert records.held_by("alice/") == []
    assert records.held_by("bob/") == ["0"]


async def test_a_cpu_server_sees_no_gpu(spawners: MakeSpawner) -> None:
    alice = spawners()
    env = ask(await start(alice, profile="cpu"), "/env")
    assert env["CUDA_VISIBLE_DEVICES"] == "", "empty means no GPU to CUDA"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert records_of(alice).held_by("alice/") == []
    await alice.stop()


async def test_the_hubs_python_environment_never_reaches_a_server(
    spawners: MakeSpawner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub run from a checkout (tests, developers) has PYTHONPATH pointing into it; user
    servers must import nothing from there, and get none of the hub's other settings."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("VIRTUAL_ENV", "/opt/mlrp/venv")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "secret-of-the-hub")
    url = await start(spawners(), profile="cpu")
    env = ask(url, "/env")
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "LD_PRELOAD", "CONFIGPROXY_AUTH_TOKEN"):
        assert key not in env, key
    assert str(REPO) not in ask(url, "/sys-path")


@pytest.mark.parametrize(("cpus", "threads"), [(1, "1"), (1.5, "2"), (0.25, "1"), (None, None)])
async def test_numerical_libraries_get_the_profiles_cpu_count(
    spawners: MakeSpawner, cpus: float | None, threads: str | None
) -> None:
    sp = spawners()
    sp.profiles = [dict(p, cpus=cpus) for p in sp.profiles]
    env = ask(await start(sp, profile="cpu"), "/env")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert env.get(name) == threads, (name, env.get(name))
    await sp.stop()


@pytest.mark.parametrize(("setting", "expected"), [(None, 0o077), ("027", 0o027)])
async def test_the_server_runs_with_the_admins_umask(
    spawners: MakeSpawner, setting: str | None, expected: int
) -> None:
    """077 by default: what a person creates is theirs alone, even copied out of their home."""
    sp = spawners(**({} if setting is None else {"umask": setting}))
    assert ask(await start(sp, profile="cpu"), "/umask") == expected
    await sp.stop()


async def test_a_hub_ignoring_sigint_does_not_pass_that_on_to_its_servers(
    spawners: MakeSpawner,
) -> None:
    """Started as a shell's background job, the hub ignores SIGINT; JupyterHub stops a
    server with SIGINT first, so a server inheriting that would only go at SIGTERM, 10 s later."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sp = spawners()
        await start(sp, profile="cpu")
        status = Path(f"/proc/{sp.placed.child.pid}/status").read_text()  # type: ignore[union-attr]
    finally:
        signal.signal(signal.SIGINT, before)
    found = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.M)
    assert found, status
    ignored = int(found.group(1), 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), f"SigIgn {ignored:x}"
    await sp.stop()


@pytest.mark.parametrize("server", ["", "lab2", "my server", "../../etc/x", "Ünï", "a" * 200])
async def test_every_server_name_gets_its_own_safe_log_and_starts(
    spawners: MakeSpawner, server: str
) -> None:
    """JupyterHub 6 allows only simple server names; 5.x allows anything. Any name starts,
    and its log stays a plain file inside the log directory."""
    sp = spawners(server=server)
    url = await start(sp, profile="cpu")
    assert ask(url, "/env")["JUPYTERHUB_SERVER_NAME"] == server
    tag = server_tag(current_account().name, server)
    logs = sorted(p.name for p in sp.platform.log_dir.iterdir())
    assert logs == [f"{tag}.log"], logs
    assert "/" not in tag and len(tag) <= 64
    await sp.stop()


# --- cgroups: limits, their removal, the GPU fence (fake cgroup trees, real processes) ---------


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Installs a fake cgroup tree of the given layout ("v1": hybrid with the devices
    controller, "v2": unified) where spawners.cgroups looks; returns its root. The boundary:
    cgroupfs itself; test_cgroups.py tests real v1 enforcement on this machine, and this
    machine has no cgroup v2 controllers to test against."""

    def install(layout: str) -> Path:
        if layout == "v1":
            root = make_v1_root(tmp_path, devices=True)
        else:
            root = make_v2_root(tmp_path, "cpuset cpu io memory pids")
        monkeypatch.setattr(cgroups, "os", FakeKernelOs(root, exited_leave=True))
        return root

    return install


def fake_os() -> FakeKernelOs:
    assert isinstance(cgroups.os, FakeKernelOs)
    return cgroups.os


def limited(image_profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(p, cpus=1.5, memory_bytes=512 * 2**20) for p in image_profiles]


@pytest.mark.parametrize("layout", ["v1", "v2"])
async def test_limits_hold_the_server_and_go_with_it(
    spawners: MakeSpawner, kernel: Callable[[str], Path], layout: str
) -> None:
    root = kernel(layout)
    sp = spawners(enforce_limits=True, cgroup_root=str(root))
    sp.profiles = limited(sp.profiles)
    await start(sp, profile="cpu")
    pid = sp.placed.child.pid  # type: ignore[union-attr]
    tag = current_account().name
    if layout == "v1":
        memory, cpu = root / "memory" / "mlrp" / tag, root / "cpu" / "mlrp" / tag
        assert (memory / "memory.limit_in_bytes").read_text() == str(512 * 2**20)
        assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"
        groups = [memory, cpu]
    else:
        group = root / "mlrp" / tag
        assert (group / "memory.max").read_text() == str(512 * 2**20)
        assert (group / "cpu.max").read_text() == "150000 100000"
        groups = [group]
    for group in groups:
        assert (group / "cgroup.procs").read_text() == str(pid), "joined before exec"
    await sp.stop()
    for group in groups:
        assert not group.exists(), f"{group} outlived its server"


def nvml_gpus() -> list[FakeGPU]:
    """Four GPUs whose device minors are not their indexes; GPU-c's minor is not known."""
    return [
        FakeGPU("GPU-a", minor=4),
        FakeGPU("GPU-b", minor=5),
        FakeGPU("GPU-c", minor=None),
        FakeGPU("GPU-d", minor=7),
    ]


def denied(tag: str) -> list[str]:
    return [
        value
        for path, value in fake_os().writes
        if path.name == "devices.deny" and path.parent.name == tag
    ]


async def test_nvml_gpus_of_others_are_fenced_and_only_the_lease_is_visible(
    spawners: MakeSpawner, kernel: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(nvml_gpus()))
    root = kernel("v1")
    alice = spawners(enforce_limits=True, cgroup_root=str(root), gpu_source="nvml")
    alice.profiles = limited(alice.profiles)
    records = records_of(alice)
    node = alice.platform.backend("local").allocator.node
    assert records.lease_gpus("bob/", node, ["GPU-a", "GPU-b"], 2) == ["GPU-a", "GPU-b"]
    url = await start(alice, profile="gpu2", gpus=2)
    assert records.held_by("alice/") == ["GPU-c", "GPU-d"]
    env = ask(url, "/env")
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "GPU-c,GPU-d"
    tag = current_account().name
    assert sorted(denied(tag)) == ["c 195:4 rwm", "c 195:5 rwm"], "bob's GPUs, by NVML minor"
    assert (root / "devices" / "mlrp" / tag / "cgroup.procs").read_text() == str(
        alice.placed.child.pid  # type: ignore[union-attr]
    )
    await alice.stop()
    assert not (root / "devices" / "mlrp" / tag).exists()


async def test_a_gpu_without_a_known_minor_cannot_be_fenced_but_the_rest_are(
    spawners: MakeSpawner, kernel: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVML gives no minor for GPU-c: it is still leased and used, and every other GPU that
    is not the server's own is still denied."""
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(nvml_gpus()))
    root = kernel("v1")
    sp = spawners(enforce_limits=True, cgroup_root=str(root), gpu_source="nvml")
    sp.profiles = limited(sp.profiles)
    await start(sp, profile="cpu")
    assert sorted(denied(current_account().name)) == [
        "c 195:4 rwm",
        "c 195:5 rwm",
        "c 195:7 rwm",
    ], "a CPU server is denied every GPU whose device is known"
    await sp.stop()


def test_server_tags_never_meet() -> None:
    names = ["", "lab", "lab2", "my server", "my-server", "My-Server", "_x", ".x", "x.y", "a" * 31]
    tags = {server_tag("mlrp-alice", n) for n in names}
    assert len(tags) == len(names)
    assert server_tag("mlrp-alice", "lab") != server_tag("mlrp-alice-lab", "")
    assert server_tag("mlrp-al", "ice") != server_tag("mlrp-alice", "")


# --- a stop ends everything the server started; its GPUs wait for that ------------------------


async def test_gpus_stay_held_while_a_stopped_servers_process_survives(
    spawners: MakeSpawner,
    kernel: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The boundary: a process that survives SIGKILL (stuck in the kernel, state D) cannot be
    made on demand; here the kill is a no-op, so the group keeps listing the server's pid."""
    caplog.set_level(logging.INFO)
    root = kernel("v1")
    alice = spawners(enforce_limits=True, cgroup_root=str(root), kill_timeout=0.3)
    records = records_of(alice)
    await start(alice, profile="gpu2", gpus=2)
    tag = current_account().name
    monkeypatch.setattr(cgroups, "_signal_all", lambda pids: None)

    await alice.stop()

    held = records.held_by(f"!held/{tag}")
    assert held == ["0", "1"] and records.held_by("alice/") == []
    assert "stay fenced off" in caplog.text
    bob = spawners("bob", enforce_limits=True, cgroup_root=str(root))
    assert bob.capacity(bob.all_profiles()[1]).gpus_free == 2, "the held two are not offered"
    assert (root / "memory" / "mlrp" / tag).exists(), "its group stays, for the sweep"

    for procs in root.glob(f"*/mlrp/{tag}/cgroup.procs"):
        procs.write_text("")  # the stuck process ends at last: it leaves every group
    assert bob.capacity(bob.all_profiles()[1]).gpus_free == 4
    assert records.held_by(f"!held/{tag}") == []
    assert not (root / "memory" / "mlrp" / tag).exists()
    assert "its leftover processes are gone now" in caplog.text


async def test_a_stop_releases_gpus_only_after_the_group_is_empty(
    spawners: MakeSpawner, kernel: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    root = kernel("v2")
    alice = spawners(enforce_limits=True, cgroup_root=str(root))
    records = records_of(alice)
    await start(alice, profile="gpu2", gpus=2)
    group = root / "mlrp" / current_account().name
    order: list[str] = []
    real_release = records.release_gpus

    def release(owner: str) -> list[str]:
        order.append(f"release with {group.joinpath('cgroup.procs').read_text()!r} in the group")
        return real_release(owner)

    records.release_gpus = release  # type: ignore[method-assign]
    await alice.stop()

    assert order == ["release with '' in the group"]
    assert [v for path, v in fake_os().writes if path.name == "cgroup.kill"] == ["1"]
    assert "Released GPU(s) 0,1 of alice/: none of its server's processes is left" in caplog.text
    assert not group.exists()


# --- the session's own view of its limits: CPU affinity, thread counts, resource display -----

NODE = tuple(sorted(os.sched_getaffinity(0)))
needs_two_cpus = pytest.mark.skipif(
    len(NODE) < 2, reason="pinning is only observable where this process may use 2+ CPUs"
)


def with_limits(sp: MLRPSpawner, cpus: float | None, memory: int | None = None) -> MLRPSpawner:
    sp.profiles = [dict(p, cpus=cpus, memory_bytes=memory) for p in sp.profiles]
    return sp


def affinity_of(sp: MLRPSpawner) -> set[int]:
    return set(os.sched_getaffinity(sp.placed.child.pid))  # type: ignore[union-attr]


def test_placer_spreads_one_cpu_servers_over_the_node_least_used_first() -> None:
    placer = CpuPlacer(node=tuple(range(8)))
    placed = [placer.place(f"u{i}/", 1) for i in range(8)]
    assert [p.cpus for p in placed if p] == [(i,) for i in range(8)], "one server per CPU"
    ninth = placer.place("u8/", 1)
    assert ninth is not None and ninth.cpus == (0,), "all used once: the lowest CPU again"


def test_placer_counts_shares_and_places_wide_servers_on_the_least_used_cpus() -> None:
    placer = CpuPlacer(node=tuple(range(8)))
    for i in range(3):
        placer.place(f"u{i}/", 1)
    wide = placer.place("wide/", 1.5)
    assert wide == Placement((3, 4), 0.75), "ceil(1.5) = 2 CPUs, each counted 0.75"
    half = placer.place("half/", 0.5)
    assert half == Placement((5,), 0.5)
    assert placer.place("half2/", 0.5) == Placement((6,), 0.5), "a half-used CPU is not free"
    assert placer.load()[3] == placer.load()[4] == 0.75


def test_placer_forgets_a_released_server_but_not_a_newer_start_of_it() -> None:
    placer = CpuPlacer(node=(0, 1, 2, 3))
    old = placer.place("alice/", 2)
    assert old == Placement((0, 1), 1.0)
    placer.release("alice/", old)
    assert placer.held() == {} and set(placer.load().values()) == {0.0}
    first = placer.place("alice/", 1)
    again = placer.place("alice/", 1)  # the same server started again
    assert first is not None and again is not None
    placer.release("alice/", first)  # the teardown of the earlier start, late
    assert placer.held() == {"alice/": again}, "the newer start keeps its CPU"


@pytest.mark.parametrize(("cpus", "pinned"), [(None, None), (4, None), (3.5, None), (64, None)])
def test_a_profile_as_big_as_the_node_is_not_pinned(cpus: float | None, pinned: None) -> None:
    placer = CpuPlacer(node=(0, 1, 2, 3))
    assert placer.place("alice/", cpus) is pinned
    assert placer.held() == {}
    assert placer.place("bob/", 3) == Placement((0, 1, 2), 1.0), "3 of 4 CPUs is pinned"


@pytest.mark.parametrize(
    ("cpus", "threads"), [(None, None), (0.25, 1), (1, 1), (1.5, 2), (4, 4), (64, 4)]
)
def test_thread_count_is_the_limit_rounded_up_and_never_beyond_the_node(
    cpus: float | None, threads: int | None
) -> None:
    assert thread_count(cpus, 4) == threads


@pytest.mark.parametrize(
    "saved",
    [None, [], {"cpus": []}, {"cpus": ["0"], "share": 1}, {"cpus": [0], "share": 0}, {"cpus": [0]}],
)
def test_a_saved_placement_that_is_not_one_is_ignored(saved: Any) -> None:
    assert Placement.from_state(saved) is None
    assert Placement.from_state({"cpus": [2, 3], "share": 0.5}) == Placement((2, 3), 0.5)


@needs_two_cpus
async def test_one_cpu_servers_run_on_different_cpus_and_give_them_back(
    spawners: MakeSpawner,
) -> None:
    alice = with_limits(spawners("alice"), 1)
    bob = with_limits(spawners("bob", server="b"), 1)  # see the restart test below
    env = ask(await start(alice, profile="cpu"), "/env")
    await start(bob, profile="cpu")
    assert affinity_of(alice) == {NODE[0]} and affinity_of(bob) == {NODE[1]}
    assert env["OMP_NUM_THREADS"] == env["PYTHON_CPU_COUNT"] == "1"
    placer = placer_for(alice.platform.backend("local"))
    assert set(placer.held()) == {"alice/", "bob/b"}

    await alice.stop()
    assert set(placer.held()) == {"bob/b"}, "a stopped server's CPU is forgotten"
    assert placer.load()[NODE[0]] == 0
    await bob.stop()
    assert placer.held() == {}


@needs_two_cpus
async def test_a_restarted_hub_remembers_which_cpus_running_servers_use(
    spawners: MakeSpawner,
) -> None:
    alice = with_limits(spawners("alice"), 1)
    await start(alice, profile="cpu")
    saved = alice.get_state()
    affinity._placers.clear()  # the hub restarts: its memory of placements is gone

    again = with_limits(spawners("alice"), 1)
    again.load_state(saved)
    # A named server: in developer mode every user is one account, so default servers share
    # their temp directory's name.
    bob = with_limits(spawners("bob", server="b"), 1)
    await start(bob, profile="cpu")
    assert affinity_of(bob) == {NODE[1]}, "not on alice's CPU"
    await again.stop()
    assert set(placer_for(bob.platform.backend("local")).held()) == {"bob/b"}
    await bob.stop()


@pytest.mark.parametrize("extra", [0, 62])
async def test_a_server_with_a_profile_as_big_as_the_node_sees_every_cpu(
    spawners: MakeSpawner, extra: int
) -> None:
    sp = with_limits(spawners(), len(NODE) + extra)
    env = ask(await start(sp, profile="cpu"), "/env")
    assert affinity_of(sp) == set(NODE)
    assert env["OMP_NUM_THREADS"] == str(len(NODE)), "capped at what the node has"
    assert placer_for(sp.platform.backend("local")).held() == {}
    await sp.stop()


async def test_the_resource_display_gets_the_profiles_limits(spawners: MakeSpawner) -> None:
    sp = with_limits(spawners(), 1.5, 512 * 2**20)
    url = await start(sp, profile="cpu")
    env = ask(url, "/env")
    assert env["MEM_LIMIT"] == str(512 * 2**20), "bytes, as jupyter-resource-usage reads it"
    assert float(env["CPU_LIMIT"]) == 1.5
    argv = ask(url, "/argv")
    assert "--ResourceUseDisplay.track_cpu_percent=True" in argv
    assert "--ResourceUseDisplay.cpu_warning_threshold=0" in argv
    await sp.stop()


async def test_no_limit_shows_no_limit(spawners: MakeSpawner) -> None:
    sp = with_limits(spawners(), None, None)
    env = ask(await start(sp, profile="cpu"), "/env")
    for name in ("MEM_LIMIT", "CPU_LIMIT", "OMP_NUM_THREADS", "PYTHON_CPU_COUNT"):
        assert name not in env, name
    assert affinity_of(sp) == set(NODE)
    await sp.stop()

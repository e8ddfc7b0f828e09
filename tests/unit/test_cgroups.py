"""Tests for spawners.cgroups.

The v2 and v1 logic is checked against a fake cgroup tree under tmp_path, with a small stand-in
for what the kernel does on mkdir/rmdir (interface files appear, a group with processes is busy).
Enforcement is checked for real, on this machine's cgroups, by starting children that exceed
their limits; those tests skip, naming what is missing, where cgroups are not writable.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_cgroups import FakeKernelOs, make_v1_root, make_v2_root

from spawners import cgroups
from spawners.cgroups import (
    CgroupError,
    Limits,
    ServerCgroup,
    parse_memory,
    probe,
    probe_kill,
)

pytestmark = pytest.mark.unit

MiB = 2**20
GiB = 2**30


# --- parse_memory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MiB),
        ("4G", 4 * GiB),
        ("4GiB", 4 * GiB),
        ("4gb", 4 * GiB),
        ("4g", 4 * GiB),
        ("1.5G", int(1.5 * GiB)),
        ("1024", 1024),
        ("1024B", 1024),
        ("64k", 64 * 1024),
        ("2T", 2 * 2**40),
        (" 8 G ", 8 * GiB),
    ],
)
def test_parse_memory_accepts(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["abc", "", "G", "4X", "4 GG", "1e9", "4G4", "four"])
def test_parse_memory_rejects_garbage_with_a_useful_message(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_memory(text)
    assert str(info.value) == (
        f"memory must be a number with an optional unit K, M, G or T (e.g. 4G); got {text!r}"
    )


@pytest.mark.parametrize("text", ["0", "0G", "-1G", "-512", "0.0000001K"])
def test_parse_memory_rejects_zero_and_negative(text: str) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        parse_memory(text)


def test_parse_memory_rejects_fractional_bytes() -> None:
    with pytest.raises(ValueError, match="whole number of bytes"):
        parse_memory("1.5")


# --- Limits and names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpus": 0.0, "memory_bytes": None},
        {"cpus": -1.0, "memory_bytes": None},
        {"cpus": 0.001, "memory_bytes": None},
        {"cpus": float("nan"), "memory_bytes": None},
        {"cpus": float("inf"), "memory_bytes": None},
        {"cpus": None, "memory_bytes": 0},
        {"cpus": None, "memory_bytes": -1},
    ],
)
def test_limits_refuse_what_the_kernel_would(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Limits(**kwargs)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "", "Alice", "a" * 65, "abc\n", ".hidden", "-x", "a b", "..", "é"]
)
def test_create_rejects_unsafe_names(name: str, tmp_path: Path) -> None:
    # Checked before anything else, so it holds even where cgroups are not available.
    with pytest.raises(ValueError, match="cgroup name"):
        ServerCgroup.create(name, Limits(cpus=1, memory_bytes=None), root=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "a" * 64, "alice", "u1.test_x-y", "0day"])
def test_create_accepts_safe_names(name: str, fake_v2: Path) -> None:
    cg = ServerCgroup.create(name, Limits(cpus=1, memory_bytes=None), root=fake_v2)
    assert cg is not None
    assert cg.paths == [fake_v2 / "mlrp" / name]


# --- a fake cgroup tree (tests/fake_cgroups.py) --------------------------------------------------


@pytest.fixture
def fake_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pure cgroup v2 root offering cpu and memory, none enabled for children yet."""
    root = make_v2_root(tmp_path, "cpuset cpu io memory pids")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root))
    return root


@pytest.fixture
def fake_v1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hybrid v1 root: memory and cpu hierarchies, plus a cgroup2 mount with no controllers."""
    root = make_v1_root(tmp_path)
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root))
    return root


# --- v2, on the fake tree -----------------------------------------------------------------------


def test_probe_v2(fake_v2: Path) -> None:
    assert probe(fake_v2) == cgroups.CgroupSupport(True, "v2", "cgroup v2 (memory, cpu, pids)")


def test_create_v2_writes_limits_after_enabling_controllers(fake_v2: Path) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=2.0, memory_bytes=512 * MiB), root=fake_v2)

    assert cg is not None and cg.kind == "v2"
    group = fake_v2 / "mlrp" / "alice"
    assert cg.paths == [group]
    assert (group / "memory.max").read_text() == str(512 * MiB)
    assert (group / "cpu.max").read_text() == "200000 100000"
    for level in (fake_v2, fake_v2 / "mlrp"):
        assert (level / "cgroup.subtree_control").read_text().split() == [
            "+memory",
            "+cpu",
            "+pids",
        ]


def test_create_v2_leaves_enabled_controllers_alone(tmp_path: Path, monkeypatch: Any) -> None:
    root = make_v2_root(tmp_path, "cpu memory", subtree="cpu memory")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root))

    assert ServerCgroup.create("bob", Limits(cpus=1.5, memory_bytes=None), root=root)

    assert (root / "cgroup.subtree_control").read_text() == "cpu memory"
    assert (root / "mlrp" / "bob" / "cpu.max").read_text() == "150000 100000"


def test_recreate_v2_rewrites_limits_and_can_lift_them(fake_v2: Path) -> None:
    ServerCgroup.create("alice", Limits(cpus=2.0, memory_bytes=GiB), root=fake_v2)
    cg = ServerCgroup.create("alice", Limits(cpus=None, memory_bytes=None), root=fake_v2)

    assert cg is not None
    assert (cg.paths[0] / "memory.max").read_text() == "max"
    assert (cg.paths[0] / "cpu.max").read_text() == "max 100000"


def test_join_v2_writes_the_pid_and_pids_reads_it(fake_v2: Path) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=None), root=fake_v2)
    assert cg is not None

    cg.join(4242)

    assert (cg.paths[0] / "cgroup.procs").read_text() == "4242"
    assert cg.pids() == [4242]


def test_preexec_join_writes_the_calling_process(fake_v2: Path) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=None), root=fake_v2)
    assert cg is not None

    cg.preexec_join()()

    assert cg.pids() == [os.getpid()]


def test_remove_v2_rmdirs_and_tolerates_a_missing_group(fake_v2: Path) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=MiB), root=fake_v2)
    assert cg is not None

    cg.remove()
    assert not cg.paths[0].exists()
    assert (fake_v2 / "mlrp").is_dir()  # shared by all servers; stays
    cg.remove()  # again: nothing to do, no error
    assert cg.pids() == []


def test_remove_leaves_a_busy_group_and_warns(fake_v2: Path, caplog: Any) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=MiB), root=fake_v2)
    assert cg is not None
    cg.join(4242)

    with caplog.at_level(logging.WARNING, logger="spawners.cgroups"):
        cg.remove()

    assert cg.paths[0].is_dir()
    assert "still has processes [4242]" in caplog.text


def test_v2_without_cpu_controller_enforces_memory_only(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    root = make_v2_root(tmp_path, "io memory pids")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root))

    support = probe(root)
    with caplog.at_level(logging.WARNING, logger="spawners.cgroups"):
        cg = ServerCgroup.create("alice", Limits(cpus=2, memory_bytes=GiB), root=root)

    assert support.enforced and support.kind == "v2"
    assert "no cpu controller" in support.detail
    assert cg is not None
    assert (cg.paths[0] / "memory.max").read_text() == str(GiB)
    assert not (cg.paths[0] / "cpu.max").exists()
    assert "cpu limit 2 is advisory" in caplog.text


def test_not_writable_means_advisory_and_create_does_nothing(
    tmp_path: Path, monkeypatch: Any
) -> None:
    root = make_v2_root(tmp_path, "cpu memory")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root, writable=False))

    support = probe(root)

    assert support.enforced is False and support.kind == "none"
    assert support.detail.startswith("cgroups not writable")
    assert support.detail.endswith("limits are advisory")
    assert ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=GiB), root=root) is None
    assert not (root / "mlrp").exists()


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    support = probe(tmp_path)

    assert (support.enforced, support.kind) == (False, "none")
    assert "no cgroup memory or cpu controller" in support.detail
    assert ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=None), root=tmp_path) is None


def test_kernel_refusal_names_the_file(fake_v2: Path) -> None:
    (fake_v2 / "mlrp").mkdir()  # made by hand: no interface files, as if the kernel refused
    with pytest.raises(CgroupError, match=r"mlrp/cgroup.subtree_control"):
        ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=None), root=fake_v2)


# --- v1, on the fake tree -----------------------------------------------------------------------


def test_probe_v1_ignores_the_hybrid_unified_mount(fake_v1: Path) -> None:
    assert probe(fake_v1) == cgroups.CgroupSupport(True, "v1", "cgroup v1 (memory, cpu)")


def test_create_v1_one_group_per_controller(fake_v1: Path) -> None:
    cg = ServerCgroup.create("alice", Limits(cpus=0.5, memory_bytes=100 * MiB), root=fake_v1)

    assert cg is not None and cg.kind == "v1"
    memory, cpu = fake_v1 / "memory" / "mlrp" / "alice", fake_v1 / "cpu" / "mlrp" / "alice"
    assert cg.paths == [memory, cpu]
    assert (memory / "memory.limit_in_bytes").read_text() == str(100 * MiB)
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"

    cg.join(77)
    assert [(p / "cgroup.procs").read_text() for p in cg.paths] == ["77", "77"]

    (memory / "cgroup.procs").write_text("")
    (cpu / "cgroup.procs").write_text("")
    cg.remove()
    assert not memory.exists() and not cpu.exists()


def test_recreate_v1_lifts_limits_with_minus_one(fake_v1: Path) -> None:
    ServerCgroup.create("alice", Limits(cpus=0.5, memory_bytes=MiB), root=fake_v1)
    cg = ServerCgroup.create("alice", Limits(cpus=None, memory_bytes=None), root=fake_v1)

    assert cg is not None
    assert (cg.paths[0] / "memory.limit_in_bytes").read_text() == "-1"
    assert (cg.paths[1] / "cpu.cfs_quota_us").read_text() == "-1"


# --- the GPU fence: detection, on the fake trees ------------------------------------------------

DENY_GPU_4 = Limits(cpus=1, memory_bytes=None, denied_devices=("c 195:4 rwm",))


def _fences(root: Path) -> bool:
    """Whether ServerCgroup.create really writes a devices.deny line under `root`."""
    cg = ServerCgroup.create("alice", DENY_GPU_4, root=root)
    deny = root / "devices" / cgroups.PARENT / "alice" / "devices.deny"
    return cg is not None and deny.is_file() and deny.read_text() == "c 195:4 rwm"


def test_fence_v1_with_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_v1_root(tmp_path, devices=True)
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root))

    fence = cgroups.probe_fence(root)

    assert (fence.enforced, fence.kind) == (True, "v1-devices")
    assert str(root / "devices") in fence.detail
    assert "devices" in probe(root).detail  # what the spawn form and hub log say
    assert _fences(root)


def test_fence_v1_without_devices(fake_v1: Path) -> None:
    fence = cgroups.probe_fence(fake_v1)

    assert (fence.enforced, fence.kind) == (False, "no-devices")
    assert fence.detail.startswith(f"no writable cgroup v1 devices controller at {fake_v1}")
    assert not _fences(fake_v1)


def test_fence_v1_devices_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_v1_root(tmp_path, devices=True)
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root, read_only=[root / "devices"]))

    assert cgroups.probe_fence(root).kind == "no-devices"
    assert probe(root).enforced  # memory and cpu limits still work
    assert not _fences(root)


def test_fence_v2_needs_ebpf(fake_v2: Path) -> None:
    fence = cgroups.probe_fence(fake_v2)

    assert (fence.enforced, fence.kind) == (False, "v2")
    assert fence.detail == f"cgroup v2 only (at {fake_v2}): fencing devices needs eBPF"
    assert not _fences(fake_v2)


def test_no_cgroups_no_fence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_v1_root(tmp_path, devices=True)
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(root, writable=False))

    fence = cgroups.probe_fence(root)

    assert (fence.enforced, fence.kind) == (False, "no-cgroups")
    assert fence.detail == probe(root).detail  # the reason the limits are advisory
    assert not _fences(root)


# --- real enforcement on this machine -----------------------------------------------------------

REAL_ROOT = cgroups.DEFAULT_ROOT
ALLOCATE_300_MB = "data = b'x' * (300 * 2**20); print('allocated', len(data))"
SLEEP = "import time; time.sleep(120)"
SPIN_ONE_CPU_SECOND = (
    "import time\n"
    "start = time.monotonic()\n"
    "while time.process_time() < 1.0:\n"
    "    pass\n"
    "print(time.monotonic() - start)\n"
)


def _real_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return f"needs root to create cgroups (running as uid {os.geteuid()})"
    support = probe(REAL_ROOT)
    if not support.enforced:
        return f"cgroups not enforced on this machine: {support.detail}"
    return None


def _swap_on() -> bool:
    with open("/proc/swaps") as f:
        return len(f.read().splitlines()) > 1


real = pytest.mark.skipif(_real_skip_reason() is not None, reason=str(_real_skip_reason()))

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture(scope="session")
def real_parents() -> Iterator[None]:
    """Remove the shared mlrp parent groups after the session, if this session made them."""
    parents = [REAL_ROOT / c / cgroups.PARENT for c in (*cgroups.CONTROLLERS, cgroups.FREEZER)]
    parents += [REAL_ROOT / cgroups.PARENT, REAL_ROOT / "unified" / cgroups.PARENT]
    existed = {p for p in parents if p.exists()}
    yield
    for parent in parents:
        if parent.exists() and parent not in existed:
            try:
                os.rmdir(parent)
            except OSError:
                pass  # something else uses it now; not ours to remove


_counter = itertools.count()


@pytest.fixture
def real_group(real_parents: None) -> Iterator[Callable[[Limits], ServerCgroup]]:
    """Make real cgroups with unique names; kill our children and remove the groups after."""
    made: list[ServerCgroup] = []

    def make(limits: Limits) -> ServerCgroup:
        cg = ServerCgroup.create(f"test-{os.getpid()}-{next(_counter)}", limits)
        assert cg is not None
        made.append(cg)
        return cg

    yield make
    for cg in made:
        _kill_what_is_left(cg)
        cg.remove()


def _kill_what_is_left(cg: ServerCgroup) -> None:
    """SIGKILL what a failed test left in `cg`, by pid, without the code under test."""
    deadline = time.monotonic() + 5
    while (pids := cg.pids()) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Popen a Python child; any still running at the end is killed, by its PID only."""
    children: list[subprocess.Popen[str]] = []

    def start(code: str, **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )
        children.append(proc)
        return proc

    yield start
    for proc in children:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        # Not communicate(): a leftover grandchild may hold the pipes open for minutes.
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _group_file(cg: ServerCgroup, name: str) -> Path:
    """The interface file ``name`` in whichever of the server's groups has it."""
    for group in cg.paths:
        if (group / name).exists():
            return group / name
    raise AssertionError(f"no {name} in {cg.paths}")


def _stat(path: Path, key: str) -> int:
    """One counter from a "key value" cgroup file such as cpu.stat or memory.events."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise AssertionError(f"no {key} in {path}")


@real
def test_real_limits_read_back(real_group: Callable[[Limits], ServerCgroup]) -> None:
    cg = real_group(Limits(cpus=0.5, memory_bytes=100 * MiB))

    if cg.kind == "v1":
        assert _group_file(cg, "memory.limit_in_bytes").read_text().strip() == str(100 * MiB)
        assert _group_file(cg, "cpu.cfs_period_us").read_text().strip() == "100000"
        assert _group_file(cg, "cpu.cfs_quota_us").read_text().strip() == "50000"
    else:
        assert _group_file(cg, "memory.max").read_text().strip() == str(100 * MiB)
        assert _group_file(cg, "cpu.max").read_text().strip() == "50000 100000"

    # A hub restart re-creates the same group: limits are rewritten, not refused.
    again = ServerCgroup.create(cg.name, Limits(cpus=2, memory_bytes=200 * MiB))
    assert again is not None and again.paths == cg.paths
    memory_file = "memory.limit_in_bytes" if cg.kind == "v1" else "memory.max"
    assert _group_file(cg, memory_file).read_text().strip() == str(200 * MiB)


@real
def test_real_memory_limit_kills_what_runs_unconfined(
    real_group: Callable[[Limits], ServerCgroup], spawn: Spawn
) -> None:
    if _swap_on():
        pytest.skip("swap is on: with only a memory limit the child would swap, not die")
    cg = real_group(Limits(cpus=None, memory_bytes=100 * MiB))

    unconfined = spawn(ALLOCATE_300_MB)
    out, err = unconfined.communicate(timeout=60)
    assert unconfined.returncode == 0, err
    assert out.strip() == f"allocated {300 * MiB}"

    confined = spawn(ALLOCATE_300_MB, preexec_fn=cg.preexec_join())
    out, _ = confined.communicate(timeout=60)
    assert confined.returncode == -9  # SIGKILL from the cgroup's OOM killer
    assert out == ""
    events = "memory.oom_control" if cg.kind == "v1" else "memory.events"
    assert _stat(_group_file(cg, events), "oom_kill") >= 1


@real
def test_real_cpu_quota_throttles(
    real_group: Callable[[Limits], ServerCgroup], spawn: Spawn
) -> None:
    cg = real_group(Limits(cpus=0.5, memory_bytes=None))

    proc = spawn(SPIN_ONE_CPU_SECOND, preexec_fn=cg.preexec_join())
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    # One CPU-second at half a CPU takes at least two seconds of wall time, however idle or busy
    # the machine is (a busy machine only makes it slower; without the quota it takes ~1 s).
    assert float(out) > 1.8


@real
def test_real_pids_and_remove(
    real_group: Callable[[Limits], ServerCgroup], spawn: Spawn, caplog: Any
) -> None:
    cg = real_group(Limits(cpus=1, memory_bytes=256 * MiB))
    proc = spawn(SLEEP, preexec_fn=cg.preexec_join())

    assert proc.pid in cg.pids()
    membership = Path(f"/proc/{proc.pid}/cgroup").read_text()
    assert f"/mlrp/{cg.name}\n" in membership

    with caplog.at_level(logging.WARNING, logger="spawners.cgroups"):
        cg.remove()  # busy: logged and left, not raised
    assert all(p.is_dir() for p in cg.paths)
    assert "still has processes" in caplog.text

    proc.kill()
    proc.communicate()
    assert cg.pids() == []
    cg.remove()
    assert not any(p.exists() for p in cg.paths)


def test_denied_devices_must_be_device_rules() -> None:
    Limits(cpus=None, memory_bytes=None, denied_devices=("c 195:3 rwm",))
    for bad in ("c 195:* rwm", "a", "c 195:3 rwm\nc 1:3 rwm", "c 195:3 x", "../x"):
        with pytest.raises(ValueError, match="denied_devices"):
            Limits(cpus=None, memory_bytes=None, denied_devices=(bad,))


# --- ending a stopped server's processes ------------------------------------------------------

# A "server" that leaves what people leave behind: a process in a new session, a nohup'd one and
# a double-forked daemon. It prints their pids and waits.
DETACH = """
import os, subprocess, sys, time
a = subprocess.Popen(["sleep", "900"], start_new_session=True).pid
b = int(subprocess.run(["sh", "-c", "nohup sleep 901 >/dev/null 2>&1 & echo $!"],
                       capture_output=True, text=True).stdout)
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.write(w, str(os.getpid()).encode()); os.close(w)
        time.sleep(900)
    os._exit(0)
os.close(w)
c = int(os.read(r, 20))
print(a, b, c, flush=True)
time.sleep(900)
"""


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped (it runs nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _kill_until_empty(cg: ServerCgroup, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while cg.kill():
        assert time.monotonic() < deadline, f"{cg} still holds {cg.pids()}"
        time.sleep(0.02)


def _detached_children(cg: ServerCgroup, spawn: Spawn) -> tuple[subprocess.Popen[str], list[int]]:
    server = spawn(DETACH, preexec_fn=cg.preexec_join())
    assert server.stdout is not None
    leftovers = [int(pid) for pid in server.stdout.readline().split()]
    assert len(leftovers) == 3 and not any(_gone(pid) for pid in leftovers)
    assert set(leftovers) <= set(cg.pids()), "detached, yet still in the server's group"
    return server, leftovers


@real
def test_real_kill_ends_every_detached_process(
    real_group: Callable[[Limits], ServerCgroup], spawn: Spawn
) -> None:
    cg = real_group(Limits(cpus=None, memory_bytes=None))
    assert probe_kill(REAL_ROOT).kind == ("v2-kill" if cg.kind == "v2" else "v1-freezer")
    server, leftovers = _detached_children(cg, spawn)

    _kill_until_empty(cg)

    assert server.wait(timeout=5) == -9
    assert all(_gone(pid) for pid in leftovers), [p for p in leftovers if not _gone(p)]
    assert cg.pids() == []
    cg.remove()
    assert not any(path.exists() for path in cg.paths)


UNIFIED = REAL_ROOT / "unified"


@pytest.mark.skipif(
    os.geteuid() != 0 or not (UNIFIED / "cgroup.controllers").is_file(),
    reason="needs root and a cgroup2 mount at /sys/fs/cgroup/unified (hybrid layout)",
)
def test_real_cgroup_kill_on_v2_needs_no_controller(real_parents: None, spawn: Spawn) -> None:
    """cgroup.kill, for real: the hybrid layout's cgroup2 mount has no controllers, which is
    all a v2 group needs to end its processes."""
    assert probe_kill(UNIFIED).kind == "v2-kill"
    cg = ServerCgroup.create(f"test-{os.getpid()}-kill", Limits(None, None), root=UNIFIED)
    assert cg is not None and cg.kind == "v2"
    try:
        server, leftovers = _detached_children(cg, spawn)
        assert cg.kill() != []
        _kill_until_empty(cg)
        assert server.wait(timeout=5) == -9
        assert all(_gone(pid) for pid in leftovers)
    finally:
        _kill_what_is_left(cg)
        cg.remove()


FORK_UNTIL_REFUSED = """
import os, time
children = []
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
except BlockingIOError:
    print("refused", len(children), flush=True)
else:
    print("unlimited", len(children), flush=True)
time.sleep(30)
"""


@real
def test_real_process_limit_stops_a_fork_bomb(
    real_group: Callable[[Limits], ServerCgroup], spawn: Spawn
) -> None:
    cg = real_group(Limits(cpus=None, memory_bytes=None, max_processes=20))
    assert _group_file(cg, "pids.max").read_text().strip() == "20"

    bomb = spawn(FORK_UNTIL_REFUSED, preexec_fn=cg.preexec_join())
    assert bomb.stdout is not None
    verdict, count = bomb.stdout.readline().split()

    assert verdict == "refused" and int(count) < 20, (verdict, count)
    _kill_until_empty(cg)  # the whole bomb goes with one stop


def test_probe_kill_names_the_way_each_layout_ends_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2 = make_v2_root(tmp_path / "a", "cpu memory")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(v2))
    assert probe_kill(v2).kind == "v2-kill"
    monkeypatch.setattr(cgroups, "_CGROUP_KILL_KERNEL", (99, 0))
    assert (probe_kill(v2).enforced, probe_kill(v2).kind) == (True, "signals")

    v1 = make_v1_root(tmp_path / "b")
    monkeypatch.setattr(cgroups, "os", FakeKernelOs(v1))
    assert probe_kill(v1).kind == "signals"
    (v1 / "freezer").mkdir()
    (v1 / "freezer" / "cgroup.procs").write_text("")
    assert probe_kill(v1).kind == "v1-freezer"

    monkeypatch.setattr(cgroups, "os", FakeKernelOs(v1, writable=False))
    assert (probe_kill(v1).enforced, probe_kill(v1).kind) == (False, "none")


def test_kernel_release_parsing() -> None:
    assert cgroups._kernel_has_cgroup_kill("6.18.44-fc-v595")
    assert cgroups._kernel_has_cgroup_kill("5.14.0-362.el9.x86_64")
    assert not cgroups._kernel_has_cgroup_kill("5.10.0-28-amd64")
    assert not cgroups._kernel_has_cgroup_kill("4.19.0")


def test_v2_kill_writes_cgroup_kill_and_v1_freezes_around_the_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v2 = make_v2_root(tmp_path / "a", "memory")
    fake = FakeKernelOs(v2)
    monkeypatch.setattr(cgroups, "os", fake)
    cg = ServerCgroup.create("alice", Limits(None, None), root=v2)
    assert cg is not None
    (v2 / "mlrp" / "alice" / "cgroup.procs").write_text("")
    assert cg.kill() == [], "nothing to kill: nothing written"
    assert not [w for w in fake.writes if w[0].name == "cgroup.kill"]

    v1 = make_v1_root(tmp_path / "b")
    for name in ("cgroup.procs",):
        (v1 / "freezer").mkdir(exist_ok=True)
        (v1 / "freezer" / name).write_text("")
    (v1 / "freezer" / "freezer.state").write_text("THAWED")
    fake = FakeKernelOs(v1)
    monkeypatch.setattr(cgroups, "os", fake)
    killed: list[int] = []
    monkeypatch.setattr(cgroups, "_signal_all", killed.extend)
    cg = ServerCgroup.create("bob", Limits(None, None), root=v1)
    assert cg is not None
    (v1 / "freezer" / "mlrp" / "bob" / "cgroup.procs").write_text("4242\n")
    assert cg.kill() == [4242] and killed == [4242]
    states = [value for path, value in fake.writes if path.name == "freezer.state"]
    assert states == ["FROZEN", "THAWED"]

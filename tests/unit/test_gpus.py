"""GPU inventory and exclusive leases, on a real SQLite file (as the hub keeps them).

NVML discovery runs against tests/fake_nvml.py: this machine has no NVIDIA driver.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fake_nvml import FakeGPU, fake_pynvml
from sqlalchemy import event

from config.defaults import default_config
from hub.storage import SQLRecords
from spawners.gpus import (
    GPU,
    GPUAllocator,
    GPUSourceError,
    Inventory,
    NoFreeGPUs,
    NvmlGPU,
    NvmlReport,
    discover_nvml,
    format_cuda_version,
    load_inventory,
    read_nvml,
)

pytestmark = pytest.mark.unit

NODE = "node1"
FOUR = Inventory(tuple(GPU(id=str(i)) for i in range(4)), "config")
NVML_PRESENT = discover_nvml() is not None
needs_no_nvml = pytest.mark.skipif(NVML_PRESENT, reason="NVML present")


@pytest.fixture
def alloc(records: SQLRecords) -> GPUAllocator:
    return GPUAllocator(records, FOUR, node=NODE)


def held(allocator: GPUAllocator) -> dict[str, str]:
    return {lease.device: lease.owner for lease in allocator.leases()}


# --- inventory ---------------------------------------------------------------------------------


def test_config_inventory_needs_no_nvml() -> None:
    inv = load_inventory("config", ["0", "1"])
    assert inv == Inventory((GPU("0", minor=0), GPU("1", minor=1)), "config")
    assert inv.ids == ["0", "1"]


def test_numeric_ids_name_device_nodes_uuids_do_not() -> None:
    inv = load_inventory("config", ["3", "GPU-8f2a"])
    assert [g.device_rule for g in inv.gpus] == ["c 195:3 rwm", None]


def test_config_inventory_may_be_empty() -> None:
    assert load_inventory("config", []) == Inventory((), "none")


@needs_no_nvml
def test_nvml_source_without_nvml_is_refused() -> None:
    with pytest.raises(GPUSourceError) as info:
        load_inventory("nvml", ["0"])
    message = str(info.value)
    assert "NVML is not available on this node" in message
    assert "gpus.source to 'config'" in message


@needs_no_nvml
def test_auto_source_without_nvml_uses_the_devices() -> None:
    assert load_inventory("auto", ["GPU-a", "GPU-b"]).ids == ["GPU-a", "GPU-b"]
    assert load_inventory("auto", []).source == "none"


# --- NVML discovery (fake pynvml) --------------------------------------------------------------

# Minors 4..7 on indexes 0..3, as on a node whose first GPUs are hidden or numbered otherwise: a
# minor taken from the index would deny the wrong /dev/nvidiaN, and these tests would see it.
H100S = [FakeGPU(f"GPU-{i}aaaaaaa-0000-0000-0000-00000000000{i}", minor=4 + i) for i in range(4)]


def install(monkeypatch: pytest.MonkeyPatch, gpus: Sequence[FakeGPU], **kw: Any) -> ModuleType:
    fake = fake_pynvml(gpus, **kw)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "spawners.gpus" and r.levelno == logging.WARNING
    ]


def test_read_nvml_reports_driver_cuda_and_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(
        monkeypatch, [FakeGPU("GPU-a", memory_mib=24564, name="NVIDIA RTX A5000", minor=3)]
    )
    assert read_nvml() == NvmlReport(
        driver="550.54.15",
        cuda="12.4",
        gpus=(NvmlGPU(0, "GPU-a", "NVIDIA RTX A5000", 24564, 3),),
    )
    assert fake.lifecycle == ["init", "shutdown"]


def test_nvml_inventory_uses_uuids_and_minors_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, H100S)
    # NVML wins over gpus.devices under "auto": the numeric devices are not consulted.
    inv = load_inventory("auto", ["0", "1"])
    assert inv.source == "nvml"
    assert inv.ids == [g.uuid for g in H100S]
    assert [g.minor for g in inv.gpus] == [4, 5, 6, 7]
    assert [g.device_rule for g in inv.gpus] == [f"c 195:{m} rwm" for m in (4, 5, 6, 7)]
    assert inv.gpus[0] == GPU(H100S[0].uuid, "NVIDIA H100 80GB HBM3", 81559, 4)
    assert fake.lifecycle == ["init", "shutdown"]
    assert load_inventory("nvml", []).ids == inv.ids


def test_failing_minor_call_keeps_the_gpu_but_does_not_fence_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gpus = [H100S[0], FakeGPU(H100S[1].uuid, minor=None), H100S[2], H100S[3]]
    fake = install(monkeypatch, gpus)
    with caplog.at_level(logging.WARNING, logger="spawners.gpus"):
        inv = load_inventory("nvml", [])
    assert inv.ids == [g.uuid for g in gpus]  # still leasable
    rules = [g.device_rule for g in inv.gpus]
    assert rules == ["c 195:4 rwm", None, "c 195:6 rwm", "c 195:7 rwm"]
    assert "c 195:1 rwm" not in rules  # its index is not a guess at its device node
    [warning] = warnings(caplog)
    assert f"GPU 1 ({gpus[1].uuid}): Not Supported" in warning
    assert "servers that did not lease them can still open their /dev/nvidiaN" in warning
    assert fake.lifecycle == ["init", "shutdown"]


def test_unfenceable_gpus_are_named_once_per_discovery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(monkeypatch, [FakeGPU("GPU-a", minor=None), FakeGPU("GPU-b", minor=None)])
    with caplog.at_level(logging.WARNING, logger="spawners.gpus"):
        first = discover_nvml()
        assert len(warnings(caplog)) == 1
        discover_nvml()
    assert first is not None and [g.device_rule for g in first] == [None, None]
    assert len(warnings(caplog)) == 2
    assert all("GPU 0 (GPU-a)" in w and "GPU 1 (GPU-b)" in w for w in warnings(caplog))


def test_no_warning_when_every_minor_is_known(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(monkeypatch, H100S)
    with caplog.at_level(logging.WARNING, logger="spawners.gpus"):
        load_inventory("auto", [])
    assert warnings(caplog) == []


def test_a_report_read_before_is_not_read_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`mlrp doctor` reads NVML once and names unfenceable GPUs in its table, not the log."""
    fake = install(monkeypatch, [FakeGPU("GPU-a", minor=None)])
    report = read_nvml()
    fake.calls.clear()
    with caplog.at_level(logging.WARNING, logger="spawners.gpus"):
        inv = load_inventory("auto", [], nvml=report)
    assert inv.ids == ["GPU-a"]
    assert fake.calls == []
    assert warnings(caplog) == []


NVML_CALLS = [
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetMemoryInfo",
]


@pytest.mark.parametrize("call", NVML_CALLS)
def test_nvml_is_shut_down_when_a_call_fails_mid_read(
    call: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = install(monkeypatch, H100S)
    fake.fail_on[call] = "GPU is lost"
    with caplog.at_level(logging.WARNING, logger="spawners.gpus"):
        report = read_nvml()
    assert (report.available, report.error, report.gpus) == (False, "GPU is lost", ())
    assert fake.lifecycle == ["init", "shutdown"]
    assert warnings(caplog) == ["NVML failed while listing GPUs: GPU is lost"]

    assert discover_nvml() is None
    assert load_inventory("auto", ["0"]) == Inventory((GPU("0", minor=0),), "config")
    with pytest.raises(GPUSourceError, match=r"not available on this node \(GPU is lost\)"):
        load_inventory("nvml", [])
    assert fake.lifecycle == ["init", "shutdown"] * 4


def test_nvml_that_does_not_initialise(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, H100S, init_error="Driver Not Loaded")
    assert read_nvml() == NvmlReport(error="Driver Not Loaded")
    assert discover_nvml() is None
    assert load_inventory("auto", ["GPU-x"]).ids == ["GPU-x"]
    with pytest.raises(GPUSourceError) as info:
        load_inventory("nvml", [])
    assert "NVML is not available on this node (Driver Not Loaded)" in str(info.value)
    assert fake.lifecycle == []
    assert "nvmlShutdown" not in fake.calls  # nothing to shut down after a failed init


def test_a_failing_shutdown_does_not_lose_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, H100S[:1])
    fake.fail_on["nvmlShutdown"] = "Uninitialized"
    assert [g.uuid for g in read_nvml().gpus] == [H100S[0].uuid]


def test_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    report = read_nvml()
    assert report.error.startswith("pynvml is not installed (")
    assert discover_nvml() is None


def test_old_pynvml_bytes_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, [FakeGPU("GPU-a", minor=2)])
    monkeypatch.setattr(fake, "nvmlDeviceGetUUID", lambda handle: b"GPU-a")
    monkeypatch.setattr(fake, "nvmlDeviceGetName", lambda handle: b"Tesla V100")
    monkeypatch.setattr(fake, "nvmlSystemGetDriverVersion", lambda: b"470.1")
    report = read_nvml()
    assert (report.driver, report.gpus[0].uuid, report.gpus[0].name) == (
        "470.1",
        "GPU-a",
        "Tesla V100",
    )


def test_cuda_version_formatting() -> None:
    assert format_cuda_version(12040) == "12.4"
    assert format_cuda_version(11080) == "11.8"
    assert format_cuda_version(12010) == "12.1"


def test_default_config_offers_a_gpu_profile_when_nvml_finds_gpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, H100S[:1])
    assert [p.slug for p in default_config().profiles] == ["cpu", "gpu1"]


@pytest.mark.parametrize("kw", [{"gpus": []}, {"gpus": H100S, "init_error": "Driver Not Loaded"}])
def test_default_config_without_nvml_gpus_is_cpu_only(
    kw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, **kw)
    assert [p.slug for p in default_config().profiles] == ["cpu"]


# --- leases ------------------------------------------------------------------------------------


def test_leases_are_exclusive(alloc: GPUAllocator) -> None:
    a = alloc.lease("alice/", 2)
    b = alloc.lease("bob/", 1)
    assert len(a) == 2 and len(b) == 1
    assert not set(a) & set(b)
    assert held(alloc) == {a[0]: "alice/", a[1]: "alice/", b[0]: "bob/"}
    assert alloc.free() == [d for d in FOUR.ids if d not in a + b]


def test_zero_gpus_take_nothing(alloc: GPUAllocator) -> None:
    assert alloc.lease("alice/", 0) == []
    assert alloc.free() == FOUR.ids
    alloc.check(0)


def test_fifth_gpu_fails_and_suggests_a_cpu_profile(alloc: GPUAllocator) -> None:
    for user in ("a", "b", "c", "d"):
        assert len(alloc.lease(f"{user}/", 1)) == 1
    with pytest.raises(NoFreeGPUs) as info:
        alloc.lease("e/", 1)
    message = str(info.value)
    assert message.startswith("All 4 GPUs on this server are in use right now.")
    assert "Pick a CPU profile" in message
    assert (info.value.wanted, info.value.total, info.value.free) == (1, 4, 0)
    assert "e/" not in held(alloc).values()
    with pytest.raises(NoFreeGPUs):
        alloc.check(1)


def test_partial_request_says_how_many_are_free(alloc: GPUAllocator) -> None:
    alloc.lease("alice/", 2)
    with pytest.raises(NoFreeGPUs) as info:
        alloc.lease("bob/", 3)
    assert str(info.value) == (
        "You asked for 3 GPUs but only 2 of 4 are free right now. "
        "Ask for 2 or fewer, pick a CPU profile, or try again later."
    )
    assert len(alloc.free()) == 2  # nothing half-taken


def test_node_without_gpus(records: SQLRecords) -> None:
    alloc = GPUAllocator(records, Inventory((), "none"), node=NODE)
    with pytest.raises(NoFreeGPUs, match="This server has no GPUs.*Pick a CPU profile"):
        alloc.lease("alice/", 1)


def test_release_frees(alloc: GPUAllocator) -> None:
    got = alloc.lease("alice/", 4)
    assert alloc.free() == []
    assert sorted(alloc.release("alice/")) == sorted(got)
    assert alloc.free() == FOUR.ids
    assert alloc.release("alice/") == []  # idempotent
    assert alloc.lease("bob/", 4) == FOUR.ids


def test_a_second_lease_of_the_same_server_replaces_the_first(alloc: GPUAllocator) -> None:
    alloc.lease("alice/", 2)
    alloc.lease("alice/", 1)
    assert list(held(alloc).values()) == ["alice/"]
    assert len(alloc.free()) == 3


def test_nodes_do_not_share_leases(records: SQLRecords) -> None:
    one = GPUAllocator(records, FOUR, node="one")
    two = GPUAllocator(records, FOUR, node="two")
    assert one.lease("alice/", 4) == FOUR.ids
    assert two.lease("bob/", 4) == FOUR.ids


def test_leases_survive_a_hub_restart(url: str) -> None:
    before = GPUAllocator(SQLRecords.from_url(url), FOUR, node=NODE)
    taken = before.lease("alice/", 3)
    after = GPUAllocator(SQLRecords.from_url(url), FOUR, node=NODE)
    assert held(after) == dict.fromkeys(taken, "alice/")
    got = after.lease("bob/", 1)
    assert got and got[0] not in taken
    with pytest.raises(NoFreeGPUs, match="All 4 GPUs"):
        after.lease("carol/", 1)


def test_release_all_except_frees_orphans_only(alloc: GPUAllocator) -> None:
    alloc.lease("alice/", 1)
    alloc.lease("bob/", 2)
    alloc.lease("ghost/", 1)
    stale = alloc.release_all_except({"alice/", "bob/", "nobody/"})
    assert {lease.owner for lease in stale} == {"ghost/"}
    assert sorted(held(alloc).values()) == ["alice/", "bob/", "bob/"]
    assert alloc.release_all_except({"alice/", "bob/"}) == []


def test_devices_no_longer_in_the_inventory(records: SQLRecords) -> None:
    """A lease of a device the admin removed from gpus.devices is freed as an orphan, and is
    not counted as one of this inventory's leases."""
    GPUAllocator(records, FOUR, node=NODE).lease("alice/", 4)
    smaller = GPUAllocator(records, Inventory((GPU("0"), GPU("1")), "config"), node=NODE)
    assert {lease.device for lease in smaller.leases()} == {"0", "1"}
    assert smaller.free() == []
    assert {lease.device for lease in smaller.release_all_except(set())} == {"0", "1", "2", "3"}


# --- concurrency -------------------------------------------------------------------------------


def race(url: str, devices: list[str], per_process: int) -> dict[str, list[str]]:
    """Two SQLRecords on one file (the hub and another process) lease 1 GPU at a time, at once."""
    stores = [SQLRecords.from_url(url), SQLRecords.from_url(url)]
    got: dict[str, list[str]] = {}
    errors: list[Exception] = []
    start = threading.Barrier(2)

    def work(store: SQLRecords, tag: str) -> None:
        start.wait()
        for i in range(per_process):
            owner = f"{tag}{i}/"
            try:
                got[owner] = store.lease_gpus(owner, NODE, devices, 1)
            except Exception as e:  # reported by the assertion below
                errors.append(e)

    threads = [
        threading.Thread(target=work, args=(s, t)) for s, t in zip(stores, "ab", strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    return got


def test_two_processes_never_lease_the_same_device(tmp_path: Path) -> None:
    """12 requests for 8 devices, repeated on fresh files to vary the interleaving."""
    devices = [str(i) for i in range(8)]
    for attempt in range(4):
        url = f"sqlite:///{tmp_path / f'race{attempt}.sqlite'}"
        got = race(url, devices, 6)
        assert len(got) == 12
        assert all(len(devs) <= 1 for devs in got.values())
        granted = {owner: devs[0] for owner, devs in got.items() if devs}
        assert len(set(granted.values())) == len(granted)  # no device handed out twice
        final = {lease.device: lease.owner for lease in SQLRecords.from_url(url).leases(NODE)}
        assert final == {device: owner for owner, device in granted.items()}


def test_a_lost_race_retries_with_the_devices_still_free(url: str) -> None:
    mine, theirs = SQLRecords.from_url(url), SQLRecords.from_url(url)
    devices = ["0", "1", "2", "3"]
    raced: list[Any] = []

    def other_process_leases(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not raced and statement.lstrip().upper().startswith("SELECT GPU_LEASES.DEVICE"):
            try:
                raced.append(theirs.lease_gpus("bob/", NODE, devices, 1))
            except Exception as e:  # e.g. a lock held by the fixed code: still a valid run
                raced.append(e)

    event.listen(mine.engine, "after_cursor_execute", other_process_leases)
    got = mine.lease_gpus("alice/", NODE, devices, 1)
    assert raced, "the race was not staged"
    assert len(got) == 1
    assert {lease.device for lease in mine.leases(NODE)} >= set(got)

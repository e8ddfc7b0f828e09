"""GPU inventory and exclusive leases, on a real SQLite file (as the hub keeps them)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from hub.storage import SQLRecords
from spawners.gpus import (
    GPU,
    GPUAllocator,
    GPUSourceError,
    Inventory,
    NoFreeGPUs,
    discover_nvml,
    load_inventory,
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

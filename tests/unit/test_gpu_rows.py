"""hub.gpu_view: one row per GPU, free ones too, held ones named as such; utilisation, memory and
processes from NVML where present (tests/fake_nvml.py stands in for it: no GPU driver here),
"n/a (no NVML)" where not; and hub.gpu_usage, which never lets a hung NVML block its caller.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from fake_nvml import FakeGPU, FakeProcess, fake_pynvml

from hub import gpu_usage
from hub.gpu_usage import Usage, usage_async, usage_within
from hub.gpu_view import as_json, gpu_rows, held_by_server, render_text
from spawners.gpus import UsageReport, read_usage
from spawners.records import Lease, held_owner

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 24, 9, 0)
UUIDS = [f"GPU-{i}a2b3c4d-1111-2222-3333-44444444444{i}" for i in range(4)]
ME = pwd.getpwuid(os.getuid()).pw_name
NO_NVML = Usage(UsageReport(state="absent", error="NVML Shared Library Not Found"))


def busy_gpus() -> list[FakeGPU]:
    """GPU 0 used by its holder; 1 answers "Not Supported" for load and processes; 2 is free
    but something runs on it; 3 idles."""
    return [
        FakeGPU(
            UUIDS[0],
            minor=0,
            utilization=87,
            memory_used_mib=30720,
            processes=(FakeProcess(os.getpid(), 30000),),
        ),
        FakeGPU(UUIDS[1], minor=1, utilization=None, processes=None),
        FakeGPU(
            UUIDS[2],
            minor=2,
            utilization=40,
            memory_used_mib=512,
            processes=(FakeProcess(os.getpid(), 500, graphics=True),),
        ),
        FakeGPU(UUIDS[3], minor=3),
    ]


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = fake_pynvml(busy_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_rows_name_holders_profiles_and_holds() -> None:
    leases = [
        Lease("n", "1", "alice/", T0),
        Lease("n", "2", "bob/lab2", T0 + timedelta(minutes=30)),
        Lease("n", "3", held_owner("mlrp-carol"), T0),
        Lease("n", "9", "dave/", T0),  # a GPU no longer in the inventory
    ]
    rows = gpu_rows(["0", "1", "2", "3"], leases, {"alice/": "gpu1", "bob/lab2": "multi"})
    assert [(r.gpu, r.holder, r.profile) for r in rows] == [
        ("0", "free", ""),
        ("1", "alice", "gpu1"),
        ("2", "bob/lab2", "multi"),
        ("3", "held: leftovers of mlrp-carol", ""),
        ("9", "dave", ""),
    ]
    text = render_text(rows, T0 + timedelta(hours=2, minutes=5))
    assert "1    alice" in text and "2 h 05 min" in text and "1 h 35 min" in text
    assert text.splitlines()[-1] == "4 of 5 GPU(s) leased"


def test_usage_from_nvml_per_gpu(nvml: Any) -> None:
    usage = usage_within()
    assert usage.report.state == "ok"
    leases = [Lease("n", UUIDS[0], "alice/", T0), Lease("n", UUIDS[1], "bob/", T0)]
    rows = gpu_rows(UUIDS, leases, {"alice/": "gpu1"}, usage)
    held, unsupported, unleased, idle = rows
    assert (held.utilization_text, held.memory_text) == ("87%", "30.0 / 79.6 GiB")
    assert held.processes_text == f"{ME} (pid {os.getpid()}, 29.3 GiB)"
    assert not held.used_without_lease
    # One GPU refusing some readings keeps its others (memory) and every other GPU's.
    assert (unsupported.utilization_text, unsupported.processes_text) == ("n/a", "n/a")
    assert unsupported.memory_text == "0.0 / 79.6 GiB"
    assert (
        unleased.used_without_lease
        and unleased.processes_text == f"{ME} (pid {os.getpid()}, 500 MiB)"
    )
    assert (idle.utilization_text, idle.processes_text, idle.used_without_lease) == (
        "0%",
        "none",
        False,
    )


def test_configured_ids_are_matched_by_device_number(nvml: Any) -> None:
    """gpus.devices [0, 1, …] are the N of /dev/nvidiaN: NVML's minor numbers, not its order."""
    gpus = [FakeGPU(UUIDS[0], minor=7, utilization=5), FakeGPU(UUIDS[1], minor=0, utilization=60)]
    sys.modules["pynvml"] = fake_pynvml(gpus)
    rows = gpu_rows(["0", "7", "3"], [], {}, usage_within())
    assert [r.utilization_text for r in rows] == ["60%", "5%", "n/a (not seen by NVML)"]


def test_without_nvml_the_columns_say_so() -> None:
    rows = gpu_rows(["0", "1"], [Lease("n", "1", "alice/", T0)], {}, NO_NVML)
    for r in rows:
        assert r.utilization_text == r.memory_text == r.processes_text == "n/a (no NVML)"
    text = render_text(rows, T0, NO_NVML)
    assert [line.split()[-3:] for line in text.splitlines()[1:3]] == [["n/a", "(no", "NVML)"]] * 2
    assert "No utilisation, memory or processes: NVML Shared Library Not Found." in text
    assert text.splitlines()[-1] == "1 of 2 GPU(s) leased"
    assert max(len(line) for line in text.splitlines()) <= 80, text
    out = as_json(rows, NO_NVML, "n")
    assert out["nvml"] == {"state": "absent", "error": "NVML Shared Library Not Found"}
    assert [g["usage_note"] for g in out["gpus"]] == ["n/a (no NVML)"] * 2
    assert out["gpus"][1]["utilization_percent"] is None and out["gpus"][1]["processes"] is None


def test_the_real_pynvml_here_reports_absent_not_an_error() -> None:
    """This machine has pynvml but no driver: the CPU-only case every site without GPUs is."""
    if read_usage().state == "ok":
        pytest.skip("NVML works on this machine")
    assert read_usage().state == "absent"


@pytest.mark.parametrize("holder", ["alice", "alice-longer-name/experiment-2"])
def test_text_fits_100_columns_with_uuids_holds_and_processes(nvml: Any, holder: str) -> None:
    crowded = FakeGPU(
        UUIDS[0],
        minor=0,
        utilization=87,
        memory_used_mib=30720,
        processes=tuple(FakeProcess(pid, 2048) for pid in range(4_000_000, 4_000_012)),
    )
    sys.modules["pynvml"] = fake_pynvml([crowded, *busy_gpus()[1:]])
    usage = usage_within()
    leases = [
        Lease("n", UUIDS[0], f"{holder}/" if "/" not in holder else holder, T0),
        Lease("n", UUIDS[1], held_owner("mlrp-carol-longer"), T0),
    ]
    text = render_text(gpu_rows(UUIDS, leases, {}, usage), T0, usage)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, text
    assert lines[1].startswith("GPU-0a2b3c4d..  " + holder.removesuffix("/"))  # UUIDs shortened
    words = " ".join(text.split())  # as read, across wrapped lines
    assert "? (pid 4000011, 2.0 GiB)" in words  # the 12th process, on a wrapped line
    assert "87%, 30.0 / 79.6 GiB" in words  # on the GPU's line, or the next where names are long
    unleased = [line for line in lines if "without a lease" in line]
    assert unleased and unleased[0].startswith("GPU GPU-2a2b3c4d.. is free but in use")


def test_servers_group_their_gpus() -> None:
    leases = [
        Lease("n", "0", "bob/lab2", T0 + timedelta(minutes=5)),
        Lease("n", "1", "alice/", T0),
        Lease("n", "2", "bob/lab2", T0),
        Lease("n", "3", held_owner("mlrp-carol"), T0),
    ]
    held = held_by_server(gpu_rows(["0", "1", "2", "3"], leases, {"bob/lab2": "multi"}))
    assert [(h.user, h.server, h.holder, h.gpus, h.since, h.profile) for h in held] == [
        ("bob", "lab2", "bob/lab2", ("0", "2"), T0, "multi"),
        ("alice", "", "alice", ("1",), T0, ""),
        ("", "", "held: leftovers of mlrp-carol", ("3",), T0, ""),
    ]


# -- the guard: NVML is synchronous and may hang ----------------------------------------------
def test_nvml_is_shut_down_when_a_gpu_fails_mid_read(nvml: Any) -> None:
    nvml.fail_on["nvmlDeviceGetUUID"] = "GPU is lost"
    report = read_usage()
    assert (report.state, report.error, report.gpus) == ("failed", "GPU is lost", ())
    assert nvml.lifecycle == ["init", "shutdown"]
    rows = gpu_rows(["0"], [], {}, Usage(report))
    assert rows[0].utilization_text == "n/a (NVML failed)"


def test_a_hung_nvml_costs_the_caller_the_timeout_and_one_thread(nvml: Any) -> None:
    gate = threading.Event()
    nvml.hang_on["nvmlDeviceGetUtilizationRates"] = gate
    threading.Timer(3, gate.set).start()  # a caller that waits for NVML fails, not hangs
    try:
        started = time.monotonic()
        first = usage_within(0.2)
        second = usage_within(0.2)
        assert time.monotonic() - started < 2
        assert first.report.state == second.report.state == "hung"
        assert gpu_rows(["0"], [], {}, first)[0].utilization_text == "n/a (NVML did not answer)"
        assert nvml.calls.count("nvmlInit") == 1  # joined, not restarted
    finally:
        gate.set()
    assert usage_within(5).report.state == "ok"  # the stuck read finished; its answer is used
    assert nvml.calls.count("nvmlInit") == 1
    assert usage_within(5).report.state == "ok"  # and the next call reads afresh
    assert nvml.calls.count("nvmlInit") == 2


def test_a_hung_nvml_does_not_block_the_event_loop(nvml: Any) -> None:
    gate = threading.Event()
    nvml.hang_on["nvmlDeviceGetCount"] = gate
    threading.Timer(3, gate.set).start()  # a caller that waits for NVML fails, not hangs
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(10):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def both() -> Usage:
        usage, _ = await asyncio.gather(usage_async(0.3), ticker())
        return usage

    try:
        started = time.monotonic()
        assert asyncio.run(both()).report.state == "hung"
        assert time.monotonic() - started < 2
        assert len(ticks) == 10 and ticks[-1] - ticks[0] < 1  # the loop ran on while NVML hung
    finally:
        gate.set()
    future = gpu_usage._inflight
    assert future is not None and future.result(5).report.state == "ok"

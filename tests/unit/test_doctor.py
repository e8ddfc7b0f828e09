"""`mlrp doctor` on this machine (no GPU, no NVML library) and, for the GPU rows, with a stand-in
`pynvml` module (tests/fake_nvml.py), since no GPU is here to report on. Cgroup rows are checked
on the fake cgroup trees of tests/fake_cgroups.py, against the spawner's own `probe()`.
"""

from __future__ import annotations

import http.server
import io
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from fake_cgroups import FakeKernelOs, make_v1_root, make_v2_root
from fake_nvml import FakeGPU, fake_pynvml

from hub import cli, doctor, hub_state
from hub.doctor import Check
from hub.storage import SQLRecords, sqlite_url
from spawners import cgroups
from spawners.cgroups import Limits, ServerCgroup, probe, probe_kill
from spawners.gpus import load_inventory, read_nvml
from spawners.records import held_owner

pytestmark = pytest.mark.unit

GIB = 1024**3


def _nvml_loads() -> bool:
    return read_nvml().available


needs_no_nvml = pytest.mark.skipif(
    _nvml_loads(), reason="NVML works on this machine; these tests cover a node without it"
)


def _checks(tmp_path: Path, **overrides: object) -> list[Check]:
    kwargs: dict[str, object] = {
        "data_dir": tmp_path,
        "proxy_command": ["/bin/true"],
        "gpu_source": "auto",
        "gpu_devices": [],
        "slurm_configured": False,
        "multi_user": False,
    }
    kwargs.update(overrides)
    return doctor.run_checks(**kwargs)  # type: ignore[arg-type]


def _main(tmp_path: Path, **overrides: object) -> tuple[int, str]:
    out = io.StringIO()
    kwargs: dict[str, object] = {
        "data_dir": tmp_path,
        "proxy_command": ["/bin/true"],
        "gpu_source": "auto",
        "gpu_devices": [],
        "slurm_configured": False,
        "multi_user": False,
        "out": out,
    }
    kwargs.update(overrides)
    code = doctor.main(**kwargs)  # type: ignore[arg-type]
    return code, out.getvalue()


def _by_name(checks: list[Check], name: str) -> Check:
    matches = [c for c in checks if c.name == name]
    assert len(matches) == 1, [c.name for c in checks]
    return matches[0]


def _row(output: str, name: str) -> str:
    rows = [line for line in output.splitlines() if re.match(rf"^\S+\s+{re.escape(name)}\s", line)]
    assert len(rows) == 1, output
    return rows[0]


# --- this machine: no NVML ---------------------------------------------------------------------


@needs_no_nvml
def test_nvml_check_reports_not_available(tmp_path: Path) -> None:
    nvml = _by_name(_checks(tmp_path), "NVIDIA driver / NVML")
    assert not nvml.ok
    assert nvml.detail.startswith("NVML not available: ")
    assert len(nvml.detail) > len("NVML not available: ")  # carries the reason


@needs_no_nvml
def test_nvml_source_without_nvml_fails_with_fix(tmp_path: Path) -> None:
    code, output = _main(tmp_path, gpu_source="nvml")
    assert code == 1
    assert _row(output, "GPUs usable").startswith("MISSING")
    assert f"fix: {doctor.NVML_REQUIRED_FIX}" in output.splitlines()
    assert "GPUs usable" in output.splitlines()[-1]  # the summary names the failed check


@needs_no_nvml
def test_auto_source_without_gpus_warns_and_passes(tmp_path: Path) -> None:
    code, output = _main(tmp_path, gpu_source="auto")
    assert code == 0, output
    assert _row(output, "GPUs usable").startswith("WARN")
    assert "no GPUs found" in _row(output, "GPUs usable")
    assert f"fix: {doctor.NO_GPUS_FIX}" in output.splitlines()
    assert "Traceback" not in output


@needs_no_nvml
def test_config_source_reports_configured_gpus(tmp_path: Path) -> None:
    devices = ["0", "1", "2", "3"]
    gpus = _by_name(_checks(tmp_path, gpu_source="config", gpu_devices=devices), "GPUs usable")
    assert gpus.ok
    assert gpus.detail == "4 GPUs from config (no NVML on this node)"


@needs_no_nvml
def test_auto_source_falls_back_to_configured_gpus(tmp_path: Path) -> None:
    gpus = _by_name(_checks(tmp_path, gpu_source="auto", gpu_devices=["0", "1"]), "GPUs usable")
    assert gpus.ok
    assert gpus.detail == "2 GPUs from config (no NVML on this node)"


def test_unknown_gpu_source_is_a_required_failure(tmp_path: Path) -> None:
    gpus = _by_name(_checks(tmp_path, gpu_source="cuda"), "GPUs usable")
    assert (gpus.ok, gpus.required) == (False, True)
    assert "'cuda'" in gpus.detail


# --- proxy -------------------------------------------------------------------------------------


def test_existing_proxy_is_found(tmp_path: Path) -> None:
    proxy = _by_name(
        _checks(tmp_path, proxy_command=["/bin/true", "--port", "8000"]), "Proxy binary"
    )
    assert proxy.ok
    assert proxy.detail == "/bin/true"


def test_missing_proxy_fails_with_fix(tmp_path: Path) -> None:
    code, output = _main(tmp_path, proxy_command=["/nonexistent/chp"])
    assert code == 1
    assert _row(output, "Proxy binary").startswith("MISSING")
    assert "/nonexistent/chp: not found" in output
    assert f"fix: {doctor.PROXY_FIX}" in output.splitlines()


def test_empty_proxy_command_fails(tmp_path: Path) -> None:
    proxy = _by_name(_checks(tmp_path, proxy_command=[]), "Proxy binary")
    assert (proxy.ok, proxy.required) == (False, True)


# --- disk --------------------------------------------------------------------------------------


def _free_gib_in(detail: str) -> float:
    match = re.match(r"^(\d+\.\d) GiB free at ", detail)
    assert match, detail
    return float(match.group(1))


def test_disk_reports_free_gib_for_data_dir(tmp_path: Path) -> None:
    disk = _by_name(_checks(tmp_path), "Disk space (data dir)")
    actual = shutil.disk_usage(tmp_path).free / GIB
    assert disk.ok == (actual >= 2.0)
    assert disk.detail.endswith(f" GiB free at {tmp_path}")
    assert abs(_free_gib_in(disk.detail) - actual) < 0.5


def test_disk_for_data_dir_not_created_yet_uses_nearest_parent(tmp_path: Path) -> None:
    data_dir = tmp_path / "mlrp" / "data"
    disk = _by_name(_checks(tmp_path, data_dir=data_dir), "Disk space (data dir)")
    assert f"GiB free at {tmp_path} ({data_dir} not created yet)" in disk.detail
    assert _free_gib_in(disk.detail) > 0
    assert not data_dir.exists()  # the doctor only looks


def test_disk_below_minimum_fails(tmp_path: Path) -> None:
    disk = _by_name(_checks(tmp_path, min_free_gb=10**9), "Disk space (data dir)")
    assert (disk.ok, disk.required) == (False, True)
    assert "1e+09 GiB" in disk.fix


def test_data_dir_that_is_a_file_fails(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    disk = _by_name(_checks(tmp_path, data_dir=not_a_dir), "Disk space (data dir)")
    assert not disk.ok
    assert "not a directory" in disk.detail


# --- root and useradd --------------------------------------------------------------------------


def test_non_root_fails_in_multi_user_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    checks = _checks(tmp_path, multi_user=True)
    root = _by_name(checks, "Running as root")
    assert (root.ok, root.required, root.detail) == (False, True, "uid 1000 (not root)")
    assert "accounts.mode: single-user" in root.fix
    assert not _by_name(checks, "useradd").required  # only root can use it anyway
    assert doctor.exit_code(checks) == 1


def test_non_root_is_fine_in_single_user_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    checks = _checks(tmp_path, multi_user=False)
    assert not _by_name(checks, "Running as root").required
    assert "useradd" not in [c.name for c in checks]


def test_root_without_useradd_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    checks = _checks(tmp_path, multi_user=True)
    assert _by_name(checks, "Running as root").ok
    useradd = _by_name(checks, "useradd")
    assert (useradd.ok, useradd.required) == (False, True)
    assert doctor.exit_code(checks) == 1


# --- Slurm -------------------------------------------------------------------------------------


def test_slurm_configured_without_client_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, output = _main(tmp_path, slurm_configured=True, gpu_devices=["0"], gpu_source="config")
    assert code == 1
    assert _row(output, "Slurm client").startswith("MISSING")
    assert "not found on PATH: sinfo, sbatch" in output
    assert f"fix: {doctor.SLURM_FIX}" in output.splitlines()


def test_slurm_client_on_path_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("sinfo", "sbatch"):
        script = bin_dir / program
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    slurm = _by_name(_checks(tmp_path, slurm_configured=True), "Slurm client")
    assert slurm.ok
    assert slurm.detail == f"{bin_dir / 'sinfo'}, {bin_dir / 'sbatch'}"


def test_no_slurm_row_when_slurm_not_configured(tmp_path: Path) -> None:
    assert "Slurm client" not in [c.name for c in _checks(tmp_path, slurm_configured=False)]


# --- cgroups: the spawner's own probe, on fake trees --------------------------------------------


def _v1(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v1_root(tmp_path)
    return root, FakeKernelOs(root)


def _v1_devices(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v1_root(tmp_path, devices=True)
    return root, FakeKernelOs(root)


def _v1_devices_read_only(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v1_root(tmp_path, devices=True)
    return root, FakeKernelOs(root, read_only=[root / "devices"])


def _v2(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v2_root(tmp_path, "cpuset cpu io memory pids")
    return root, FakeKernelOs(root)


def _v2_memory_only(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v2_root(tmp_path, "io memory pids")
    return root, FakeKernelOs(root)


def _v2_no_controllers(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v2_root(tmp_path, "cpuset io pids")
    return root, FakeKernelOs(root)


def _v2_read_only(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v2_root(tmp_path, "cpu memory")
    return root, FakeKernelOs(root, writable=False)


def _v1_read_only(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = make_v1_root(tmp_path, devices=True)
    return root, FakeKernelOs(root, writable=False)


def _nothing(tmp_path: Path) -> tuple[Path, FakeKernelOs]:
    root = tmp_path / "cgroup"
    root.mkdir()
    return root, FakeKernelOs(root)


Tree = Callable[[Path], tuple[Path, FakeKernelOs]]
TREES: list[Tree] = [
    _v1,
    _v1_devices,
    _v1_devices_read_only,
    _v2,
    _v2_memory_only,
    _v2_no_controllers,
    _v2_read_only,
    _v1_read_only,
    _nothing,
]


def _tree(tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root, fake_os = tree(tmp_path)
    monkeypatch.setattr(cgroups, "os", fake_os)
    return root


@pytest.mark.parametrize("tree", TREES, ids=lambda t: t.__name__.strip("_"))
def test_cgroup_row_agrees_with_the_spawner(
    tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tree, tmp_path, monkeypatch)
    support = probe(root)

    row = _by_name(_checks(tmp_path, cgroup_root=root), "cgroups (memory/CPU limits)")

    assert (row.ok, row.detail, row.required) == (support.enforced, support.detail, False)
    assert row.fix == ("" if row.ok else doctor.CGROUP_FIX)
    # ... and with what the spawner then does: a cgroup is made exactly where this row or the
    # containment row says OK (v2 makes one for cgroup.kill even with no controller to limit).
    kill_row = _by_name(_checks(tmp_path, cgroup_root=root), "stopped servers' processes")
    made = ServerCgroup.create("alice", Limits(cpus=1, memory_bytes=2**30), root=root)
    assert (made is not None) == (row.ok or kill_row.ok)
    assert kill_row.ok == probe_kill(root).enforced


@pytest.mark.parametrize("tree", TREES, ids=lambda t: t.__name__.strip("_"))
def test_fence_row_agrees_with_the_spawner(
    tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([FakeGPU("GPU-a", minor=4)]))
    root = _tree(tree, tmp_path, monkeypatch)

    row = _by_name(_checks(tmp_path, cgroup_root=root), "GPU fence")

    # A server that did not lease GPU-a gets its device rule denied, or the row says it is not.
    limits = Limits(cpus=1, memory_bytes=None, denied_devices=("c 195:4 rwm",))
    made = ServerCgroup.create("bob", limits, root=root)
    deny = root / "devices" / cgroups.PARENT / "bob" / "devices.deny"
    fenced = made is not None and deny.is_file() and deny.read_text() == "c 195:4 rwm"
    assert row.ok == fenced, row


def test_cgroup_row_words_are_the_spawn_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(_v1_devices, tmp_path, monkeypatch)
    row = _by_name(_checks(tmp_path, cgroup_root=root), "cgroups (memory/CPU limits)")
    assert row.detail == "cgroup v1 (memory, cpu); GPU device nodes can be fenced (devices)"

    (tmp_path / "v2").mkdir()
    root = _tree(_v2_memory_only, tmp_path / "v2", monkeypatch)
    row = _by_name(_checks(tmp_path, cgroup_root=root), "cgroups (memory/CPU limits)")
    assert row.ok
    assert row.detail == "cgroup v2 (memory, pids); no cpu controller: those limits are advisory"


# --- table -------------------------------------------------------------------------------------


def test_render_table_aligns_columns_and_lists_fixes() -> None:
    checks = [
        Check("Proxy binary", True, "/usr/bin/chp", True),
        Check("Slurm client", False, "not found on PATH: sinfo", True, "install slurm-client"),
        Check("cgroups", False, "not available: limits are advisory", False, "use cgroup v2"),
        Check("NVML", False, "NVML not available: no library", False),
    ]
    lines = doctor.render_table(checks).splitlines()
    assert [line.split()[0] for line in lines[:5]] == ["STATUS", "OK", "MISSING", "WARN", "WARN"]
    details = ["/usr/bin/chp", "not found", "not available", "NVML not"]
    detail_columns = {line.index(d) for line, d in zip(lines[1:5], details, strict=True)}
    assert len(detail_columns) == 1, lines
    assert lines[5:] == ["", "fix: install slurm-client", "fix: use cgroup v2"]


def test_render_table_indents_multi_line_details() -> None:
    lines = doctor.render_table([Check("GPUs", True, "2 GPUs\nGPU 0: A\nGPU 1: B", False)])
    assert lines.splitlines()[1].endswith("2 GPUs")
    column = lines.splitlines()[1].index("2 GPUs")
    assert lines.splitlines()[2] == " " * column + "GPU 0: A"
    assert "fix:" not in lines


# --- GPU present: tests/fake_nvml.py, since this machine has no GPU -------------------------

H100S = [FakeGPU(f"GPU-{i}aaaaaaa-0000-0000-0000-00000000000{i}", minor=4 + i) for i in range(4)]


def _install(monkeypatch: pytest.MonkeyPatch, gpus: Sequence[FakeGPU], **kw: Any) -> ModuleType:
    fake = fake_pynvml(gpus, **kw)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@pytest.fixture
def v1_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake v1 tree with a writable devices controller: the fence works."""
    return _tree(_v1_devices, tmp_path, monkeypatch)


def test_nvml_detail_lists_gpus_with_their_device_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _install(
        monkeypatch,
        [
            FakeGPU("GPU-1111", "NVIDIA A100-SXM4-80GB", 81920, minor=4),
            FakeGPU("GPU-6666", "NVIDIA RTX A5000", 24564, minor=None),
        ],
    )
    checks = _checks(tmp_path, gpu_source="nvml")
    nvml = _by_name(checks, "NVIDIA driver / NVML")
    assert nvml.ok
    assert nvml.detail.splitlines() == [
        "2 GPUs, driver 550.54.15, CUDA 12.4",
        "GPU 0: NVIDIA A100-SXM4-80GB, 80.0 GiB, GPU-1111, /dev/nvidia4",
        "GPU 1: NVIDIA RTX A5000, 24.0 GiB, GPU-6666, no minor number (Not Supported)",
    ]
    gpus = _by_name(checks, "GPUs usable")
    assert (gpus.ok, gpus.required, gpus.detail) == (True, True, "2 GPUs via NVML")
    assert fake.lifecycle == ["init", "shutdown"]  # read once, for every row


def test_main_with_gpus_prints_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, [FakeGPU("GPU-a", "NVIDIA RTX A5000", 24564)], cuda=11080)
    code, output = _main(tmp_path, gpu_source="nvml")
    assert code == 0, output
    assert "1 GPU, driver 550.54.15, CUDA 11.8" in output
    assert "NVIDIA RTX A5000, 24.0 GiB" in output
    assert _row(output, "GPUs usable").startswith("OK")


def test_nvml_error_mid_probe_still_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _install(monkeypatch, H100S)
    fake.fail_on["nvmlDeviceGetName"] = "GPU is lost"
    checks = _checks(tmp_path, gpu_source="nvml")
    assert _by_name(checks, "NVIDIA driver / NVML").detail == "NVML not available: GPU is lost"
    gpus = _by_name(checks, "GPUs usable")
    assert (gpus.ok, gpus.detail) == (False, "NVML not available: GPU is lost")
    assert fake.lifecycle == ["init", "shutdown"]
    assert doctor.exit_code(checks) == 1


def test_nvml_that_sees_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, [])
    # The hub uses NVML's (empty) answer even with gpus.devices set: so does the doctor.
    checks = _checks(tmp_path, gpu_source="auto", gpu_devices=["0", "1"])
    gpus = _by_name(checks, "GPUs usable")
    assert (gpus.ok, gpus.detail, gpus.fix) == (
        False,
        "no GPUs found (NVML sees none)",
        doctor.NO_GPUS_FIX,
    )
    assert _by_name(checks, "GPU fence").detail == "no GPUs: nothing to fence"


@pytest.mark.parametrize(
    ("source", "devices", "fake_gpus"),
    [
        ("auto", ["0", "1"], H100S),
        ("auto", ["0", "1"], None),
        ("config", ["0", "GPU-x", "2"], H100S),
        ("nvml", [], H100S[:2]),
        ("auto", [], None),
    ],
)
def test_gpus_row_counts_what_the_hub_would_lease(
    source: str,
    devices: list[str],
    fake_gpus: list[FakeGPU] | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if fake_gpus is None:
        _install(monkeypatch, [], init_error="NVML Shared Library Not Found")
    else:
        _install(monkeypatch, fake_gpus)
    hub = load_inventory(source, devices)
    row = _by_name(_checks(tmp_path, gpu_source=source, gpu_devices=devices), "GPUs usable")
    if hub.gpus:
        assert row.ok
        assert row.detail.startswith(f"{len(hub.gpus)} GPU")
    else:
        assert (row.ok, row.detail) == (False, "no GPUs found")


# --- GPU fence ---------------------------------------------------------------------------------


def test_fence_ok_when_every_gpu_has_a_minor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v1_devices: Path
) -> None:
    _install(monkeypatch, H100S)
    fence = _by_name(_checks(tmp_path, cgroup_root=v1_devices), "GPU fence")
    assert (fence.ok, fence.required, fence.status) == (True, False, "OK")
    assert fence.detail == "GPUs leased to others are denied (cgroup v1 devices)"


def test_fence_names_the_gpu_whose_minor_nvml_did_not_give(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    v1_devices: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpus = [H100S[0], FakeGPU(H100S[1].uuid, minor=None), *H100S[2:]]
    _install(monkeypatch, gpus)
    with caplog.at_level(logging.WARNING):
        code, output = _main(tmp_path, cgroup_root=v1_devices)
    assert code == 0, output  # not required: leases still work
    checks = _checks(tmp_path, cgroup_root=v1_devices)
    fence = _by_name(checks, "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail.splitlines() == [
        "GPUs leased to others are denied (cgroup v1 devices), except 1 GPU with no known "
        "device node:",
        f"GPU 1 ({gpus[1].uuid}): NVML gave no minor number (Not Supported)",
    ]
    assert f"fix: {doctor.FENCE_NVML_MINOR_FIX}" in output.splitlines()
    assert _by_name(checks, "GPUs usable").detail == "4 GPUs via NVML"  # still leasable
    assert caplog.records == []  # named in the table, not logged on top of it


def test_fence_names_uuids_in_gpus_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v1_devices: Path
) -> None:
    _install(monkeypatch, [], init_error="NVML Shared Library Not Found")
    checks = _checks(
        tmp_path, gpu_source="auto", gpu_devices=["0", "GPU-8f2a", "3"], cgroup_root=v1_devices
    )
    fence = _by_name(checks, "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail.splitlines()[1:] == [
        "GPU-8f2a: gpus.devices gives no /dev/nvidiaN number for it"
    ]
    assert fence.fix == doctor.FENCE_UUID_FIX


def test_fence_on_cgroup_v2_is_advisory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, H100S)
    root = _tree(_v2, tmp_path, monkeypatch)
    code, output = _main(tmp_path, cgroup_root=root)
    assert code == 0, output
    fence = _by_name(_checks(tmp_path, cgroup_root=root), "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail.startswith(f"cgroup v2 only (at {root}): fencing devices needs eBPF")
    assert "eBPF, which MLRP does not do" in fence.detail
    assert fence.detail.endswith("CUDA_VISIBLE_DEVICES is advisory")
    assert f"fix: {doctor.FENCE_V2_FIX}" in output.splitlines()


def test_fence_without_a_devices_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(monkeypatch, H100S)
    root = _tree(_v1, tmp_path, monkeypatch)
    fence = _by_name(_checks(tmp_path, cgroup_root=root), "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail == (
        f"no writable cgroup v1 devices controller at {root / 'devices'} (uid {os.geteuid()}): "
        "CUDA_VISIBLE_DEVICES is advisory"
    )
    assert fence.fix == doctor.FENCE_DEVICES_FIX


def test_fence_without_writable_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, H100S)
    root = _tree(_v1_read_only, tmp_path, monkeypatch)
    fence = _by_name(_checks(tmp_path, cgroup_root=root), "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail.startswith("no server cgroups (cgroups not writable")
    assert fence.fix == doctor.FENCE_NO_CGROUPS_FIX


@pytest.mark.parametrize("tree", [_v1_devices, _v2, _nothing], ids=["v1", "v2", "none"])
def test_no_gpus_nothing_to_fence(
    tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(monkeypatch, [])
    root = _tree(tree, tmp_path, monkeypatch)
    fence = _by_name(_checks(tmp_path, cgroup_root=root), "GPU fence")
    assert (fence.status, fence.detail) == ("OK", "no GPUs: nothing to fence")


def test_fence_is_not_judged_when_the_hub_would_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, v1_devices: Path
) -> None:
    _install(monkeypatch, H100S, init_error="Driver Not Loaded")
    checks = _checks(tmp_path, gpu_source="nvml", cgroup_root=v1_devices)
    assert _by_name(checks, "GPUs usable").status == "MISSING"
    fence = _by_name(checks, "GPU fence")
    assert fence.status == "WARN"
    assert fence.detail.startswith("not judged")
    assert fence.fix == ""  # the GPUs usable row says what to do


# --- `mlrp doctor --config FILE`: the config's gpus section ----------------------------------


def _doctor_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpus: dict[str, object]
) -> tuple[int, str]:
    config = tmp_path / "mlrp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"data_dir": str(tmp_path / "data"), "proxy_command": ["/bin/true"]},
                "accounts": {"mode": "single-user"},
                "gpus": gpus,
                "profiles": [{"slug": "cpu", "name": "CPU"}],
            }
        )
    )
    code = cli.main(["doctor", "--config", str(config)])
    return code, capsys.readouterr().out


def test_cli_doctor_judges_the_configs_gpu_devices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(monkeypatch, [], init_error="NVML Shared Library Not Found")
    code, output = _doctor_cli(tmp_path, capsys, {"source": "config", "devices": [0, "GPU-8f2a"]})
    assert code == 0, output
    assert "2 GPUs from config (no NVML on this node)" in _row(output, "GPUs usable")
    expected = doctor.check_fence(
        load_inventory("config", ["0", "GPU-8f2a"]), read_nvml(), cgroups.probe_fence()
    )
    # This machine's real cgroups decide the fence; the CLI must say what the hub would do.
    assert _row(output, "GPU fence").endswith(expected.detail.splitlines()[0])
    assert all(line in output for line in expected.detail.splitlines())
    assert not expected.fix or f"fix: {expected.fix}" in output.splitlines()


def test_cli_doctor_uses_nvml_as_the_hub_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _install(monkeypatch, H100S)
    code, output = _doctor_cli(tmp_path, capsys, {"source": "nvml"})
    assert code == 0, output
    assert "4 GPUs via NVML" in _row(output, "GPUs usable")
    assert "GPU 3: NVIDIA H100 80GB HBM3, 79.6 GiB" in output
    assert fake.lifecycle == ["init", "shutdown"]
    assert not (tmp_path / "data").exists()  # doctor only looks


# --- the hub: its pid file and its URL ---------------------------------------------------------
# The boundary: these rows read a pid file and ask a URL; a real hub writing and answering them
# is started by the integration tests. Here the "hub" is a process whose command line is a
# script called jupyterhub (the shape `mlrp up` execs), and the URL a small HTTP server.


@pytest.fixture
def fake_hub(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = tmp_path / "bin" / "jupyterhub"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(120)\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), "-f", "jupyterhub_config.py"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the interpreter has replaced the fork's cmdline
        if str(script).encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            break
        time.sleep(0.02)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def hub_api() -> Iterator[str]:
    """An HTTP server on loopback answering /hub/api/ as JupyterHub does, without auth."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            ok = self.path == "/hub/api/"
            body = b'{"version": "5.3.0"}' if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hub/api/"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_file(data_dir: Path, text: str) -> None:
    (data_dir / "jupyterhub.pid").write_text(text)


def test_hub_not_running_without_a_pid_file(tmp_path: Path) -> None:
    row = _by_name(_checks(tmp_path), "Hub")
    assert (row.status, row.detail) == ("WARN", f"not running (no {tmp_path}/jupyterhub.pid)")
    assert row.fix == doctor.HUB_START_FIX
    assert not row.required


def test_hub_running_and_answering(
    tmp_path: Path, fake_hub: subprocess.Popen[bytes], hub_api: str
) -> None:
    _pid_file(tmp_path, f"{fake_hub.pid}\n")
    row = _by_name(_checks(tmp_path, hub_url=hub_api), "Hub")
    assert row.status == "OK", row
    assert row.detail == f"running (pid {fake_hub.pid}); {hub_api} answers (HTTP 200)"


def test_hub_running_but_not_answering(tmp_path: Path, fake_hub: subprocess.Popen[bytes]) -> None:
    _pid_file(tmp_path, str(fake_hub.pid))
    url = f"http://127.0.0.1:{_free_port()}/hub/api/"
    row = _by_name(_checks(tmp_path, hub_url=url), "Hub")
    assert row.status == "WARN"
    assert row.detail.startswith(f"running (pid {fake_hub.pid}); {url} does not answer (")
    assert row.fix == doctor.HUB_SILENT_FIX


def test_hub_stale_pid_file_of_an_ended_process(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    _pid_file(tmp_path, str(ended.pid))
    row = _by_name(_checks(tmp_path, hub_url="http://127.0.0.1:9/hub/api/"), "Hub")
    assert row.status == "WARN"
    assert row.detail == (
        f"not running: {tmp_path}/jupyterhub.pid names process {ended.pid}, which has ended "
        "(stale pid file)"
    )
    assert row.fix == doctor.HUB_STALE_FIX


def test_hub_stale_pid_file_naming_another_program(tmp_path: Path) -> None:
    _pid_file(tmp_path, str(os.getpid()))  # pytest: alive, but no jupyterhub
    row = _by_name(_checks(tmp_path), "Hub")
    assert row.status == "WARN"
    assert f"names process {os.getpid()}, which is now `" in row.detail
    assert row.detail.endswith("not jupyterhub (stale pid file)")
    assert row.fix == doctor.HUB_STALE_FIX


def test_hub_pid_file_with_garbage(tmp_path: Path) -> None:
    _pid_file(tmp_path, "<html>")
    row = _by_name(_checks(tmp_path), "Hub")
    assert (
        row.detail == f"{tmp_path}/jupyterhub.pid holds '<html>', not a process id (stale pid file)"
    )


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:8000/hub/api/"),
        ("0.0.0.0", "http://127.0.0.1:8000/hub/api/"),
        ("::", "http://[::1]:8000/hub/api/"),
        ("10.1.2.3", "http://127.0.0.1:8081/hub/api/"),  # never off this node: the hub API port
    ],
)
def test_hub_is_asked_on_loopback_only(ip: str, expected: str) -> None:
    assert hub_state.probe_url(ip, 8000, "http", 8081) == expected


def test_a_url_off_loopback_is_never_asked() -> None:
    assert hub_state.answers("http://192.0.2.1:8000/hub/api/") == (
        False,
        "http://192.0.2.1:8000/hub/api/ is not a loopback address; not asked",
    )


def test_cli_doctor_asks_the_configs_hub(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_hub: subprocess.Popen[bytes]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _pid_file(data, str(fake_hub.pid))
    port = _free_port()
    config = tmp_path / "mlrp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"data_dir": str(data), "port": port, "proxy_command": ["/bin/true"]},
                "accounts": {"mode": "single-user"},
                "profiles": [{"slug": "cpu", "name": "CPU"}],
            }
        )
    )
    code = cli.main(["doctor", "--config", str(config)])
    output = capsys.readouterr().out
    assert code == 0, output
    row = _row(output, "Hub")
    assert f"running (pid {fake_hub.pid}); http://127.0.0.1:{port}/hub/api/ does not answer" in row
    assert not (data / "mlrp.sqlite").exists()  # doctor only looks


# --- GPU leases held now -----------------------------------------------------------------------


def _leases(tmp_path: Path) -> SQLRecords:
    records = SQLRecords.from_url(sqlite_url(tmp_path))
    assert records.lease_gpus("alice/", "node1", ["0", "1", "2"], 1) == ["0"]
    assert records.lease_gpus("bob/lab", "node1", ["0", "1", "2"], 1) == ["1"]
    assert records.lease_gpus(held_owner("mlrp-carol"), "node1", ["0", "1", "2"], 1) == ["2"]
    assert records.lease_gpus("dave/", "node2", ["0"], 1) == ["0"]  # another node's
    return records


def test_no_database_means_no_leases_and_none_is_made(tmp_path: Path) -> None:
    row = _by_name(_checks(tmp_path), "GPU leases")
    assert (row.status, row.detail) == (
        "OK",
        "no MLRP database yet (the hub has not run with this data_dir)",
    )
    assert not (tmp_path / "mlrp.sqlite").exists()


def test_leases_of_this_node_are_listed_and_a_hold_warns(tmp_path: Path) -> None:
    _leases(tmp_path)
    row = _by_name(_checks(tmp_path, node="node1"), "GPU leases")
    assert row.status == "WARN"
    lines = row.detail.splitlines()
    assert lines[0] == "3 GPUs leased, 1 of them held for a stopped server's leftovers"
    assert re.fullmatch(r"GPU 0: alice, since \d{4}-\d\d-\d\d \d\d:\d\d UTC", lines[1])
    assert lines[2].startswith("GPU 1: bob/lab, since ")
    assert lines[3].startswith("GPU 2: held: leftovers of mlrp-carol, since ")
    assert lines[3].endswith("; its processes have ended (freed at the hub's next spawn)")
    assert "dave" not in row.detail
    assert row.fix == doctor.HELD_FIX


def test_leases_without_holds_are_ok(tmp_path: Path) -> None:
    records = SQLRecords.from_url(sqlite_url(tmp_path))
    records.lease_gpus("alice/", "node1", ["0"], 1)
    row = _by_name(_checks(tmp_path, node="node1"), "GPU leases")
    assert row.status == "OK"
    assert row.detail.splitlines()[0] == "1 GPU leased"
    assert _by_name(_checks(tmp_path, node="elsewhere"), "GPU leases").detail == "none held"


def test_a_hold_names_the_processes_still_in_its_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found as Platform.sweep_held finds them: the stopped server's cgroup lists them."""
    _leases(tmp_path)
    root = _tree(_v1, tmp_path, monkeypatch)
    group = ServerCgroup.create("mlrp-carol", Limits(cpus=1, memory_bytes=None), root=root)
    assert group is not None
    group.join(os.getpid())  # alive: a process that survived SIGKILL
    row = _by_name(_checks(tmp_path, node="node1", cgroup_root=root), "GPU leases")
    carol = next(line for line in row.detail.splitlines() if "mlrp-carol" in line)
    assert carol.endswith(f"; processes {os.getpid()} still there")
    assert doctor.held_processes("mlrp-carol", root, probe_kill(root)) == [os.getpid()]


def test_unreadable_leases_say_so(tmp_path: Path) -> None:
    (tmp_path / "mlrp.sqlite").write_text("not a database")
    row = _by_name(_checks(tmp_path), "GPU leases")
    assert row.status == "WARN"
    assert row.detail.startswith("cannot read the leases: ")
    assert row.fix == doctor.LEASES_UNREADABLE_FIX

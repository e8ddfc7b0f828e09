"""`mlrp doctor` on this machine (no GPU, no NVML library) and, for the GPU rows, with a stand-in
`pynvml` module, since no GPU is here to report on."""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from hub import doctor
from hub.doctor import Check

pytestmark = pytest.mark.unit

GIB = 1024**3


def _nvml_loads() -> bool:
    return doctor.probe_nvml().available


needs_no_nvml = pytest.mark.skipif(
    _nvml_loads(), reason="NVML works on this machine; these tests cover a node without it"
)


def _checks(tmp_path: Path, **overrides: object) -> list[Check]:
    kwargs: dict[str, object] = {
        "data_dir": tmp_path,
        "proxy_command": ["/bin/true"],
        "gpu_source": "auto",
        "configured_gpus": 0,
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
        "configured_gpus": 0,
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
    gpus = _by_name(_checks(tmp_path, gpu_source="config", configured_gpus=4), "GPUs usable")
    assert gpus.ok
    assert gpus.detail == "4 GPUs from config (no NVML on this node)"


@needs_no_nvml
def test_auto_source_falls_back_to_configured_gpus(tmp_path: Path) -> None:
    gpus = _by_name(_checks(tmp_path, gpu_source="auto", configured_gpus=2), "GPUs usable")
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
    code, output = _main(tmp_path, slurm_configured=True, configured_gpus=1, gpu_source="config")
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


# --- cgroups -----------------------------------------------------------------------------------


def test_cgroup_v2_with_memory_and_cpu(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    check = doctor.check_cgroups(tmp_path)
    assert (check.ok, check.required, check.detail) == (True, False, "cgroup v2 (memory, cpu)")


def test_cgroup_v2_without_memory_controller_is_advisory(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io pids\n")
    check = doctor.check_cgroups(tmp_path)
    assert (check.ok, check.detail) == (False, "not available: limits are advisory")
    assert check.status == "WARN"


def test_cgroup_v1_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu").mkdir()
    check = doctor.check_cgroups(tmp_path)
    assert (check.ok, check.detail) == (True, "cgroup v1 (memory, cpu)")


def test_cgroup_v1_needs_both_hierarchies(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    assert not doctor.check_cgroups(tmp_path).ok


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


# --- GPU present: a stand-in pynvml, since this machine has no GPU ------------------------------


class FakeNVMLError(Exception):
    pass


def _fake_pynvml(*, fail_on_name: bool = False) -> tuple[ModuleType, list[str]]:
    """Two GPUs, driver 550.54.15, CUDA 12.4; records nvmlInit/nvmlShutdown calls."""
    calls: list[str] = []
    gpus = [
        ("NVIDIA A100-SXM4-80GB", "GPU-11111111-2222-3333-4444-555555555555", 80 * GIB),
        ("NVIDIA RTX A5000", "GPU-66666666-7777-8888-9999-000000000000", 24 * GIB),
    ]

    def name(handle: int) -> str:
        if fail_on_name:
            raise FakeNVMLError("GPU is lost")
        return gpus[handle][0]

    fake = ModuleType("pynvml")
    fake.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlSystemGetDriverVersion = lambda: "550.54.15"  # type: ignore[attr-defined]
    fake.nvmlSystemGetCudaDriverVersion_v2 = lambda: 12040  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda index: index  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = name  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda handle: gpus[handle][1].encode()  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = (  # type: ignore[attr-defined]
        lambda handle: SimpleNamespace(total=gpus[handle][2], free=0, used=0)
    )
    return fake, calls


def test_nvml_detail_lists_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    checks = _checks(tmp_path, gpu_source="nvml")
    nvml = _by_name(checks, "NVIDIA driver / NVML")
    assert nvml.ok
    assert nvml.detail.splitlines() == [
        "2 GPUs, driver 550.54.15, CUDA 12.4",
        "GPU 0: NVIDIA A100-SXM4-80GB, 80.0 GiB, GPU-11111111-2222-3333-4444-555555555555",
        "GPU 1: NVIDIA RTX A5000, 24.0 GiB, GPU-66666666-7777-8888-9999-000000000000",
    ]
    gpus = _by_name(checks, "GPUs usable")
    assert (gpus.ok, gpus.required, gpus.detail) == (True, True, "2 GPUs via NVML")
    assert calls == ["init", "shutdown"]


def test_main_with_gpus_prints_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, _ = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    code, output = _main(tmp_path, gpu_source="nvml")
    assert code == 0, output
    assert "CUDA 12.4" in output
    assert "NVIDIA RTX A5000, 24.0 GiB" in output
    assert _row(output, "GPUs usable").startswith("OK")


def test_nvml_error_mid_probe_still_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, calls = _fake_pynvml(fail_on_name=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    checks = _checks(tmp_path, gpu_source="nvml")
    assert _by_name(checks, "NVIDIA driver / NVML").detail == "NVML not available: GPU is lost"
    assert not _by_name(checks, "GPUs usable").ok
    assert calls == ["init", "shutdown"]
    assert doctor.exit_code(checks) == 1


def test_cuda_version_formatting() -> None:
    assert doctor.format_cuda_version(12040) == "12.4"
    assert doctor.format_cuda_version(11080) == "11.8"
    assert doctor.format_cuda_version(12010) == "12.1"

"""Profile resources reach the running server: cgroup CPU and memory limits (where the node
allows them), the empty GPU set of a CPU profile, the per-profile idle timeout, and the hub-wide
idle culler service."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Hub

from spawners.cgroups import probe

pytestmark = [pytest.mark.e2e]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def test_cpu_profile_limits_idle_timeout_and_no_gpus(hub: Hub) -> None:
    r = hub.start_server("alice", profile="cpu")
    assert r.status_code in (201, 202), r.text
    try:
        pid = hub.server_pid("alice")
        account = hub.unix_accounts()["alice"]
        env = _environ(pid)
        assert env["CUDA_VISIBLE_DEVICES"] == "", "a CPU profile sees no GPU"
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert env["USER"] == account and env["HOME"] == f"/home/{account}"
        assert "JUPYTERHUB_API_TOKEN" in env
        assert "/root/" not in env["PATH"]
        # The hub runs the checkout through PYTHONPATH here; the server must not inherit it.
        assert "PYTHONPATH" not in env and "VIRTUAL_ENV" not in env
        assert Path(f"/proc/{pid}").stat().st_uid != 0
        assert "alice/" not in hub.leases().values()

        args = _cmdline(pid)
        assert "--ServerApp.shutdown_no_activity_timeout=600" in args
        assert "--MappingKernelManager.cull_idle_timeout=600" in args

        support = probe()
        if not support.enforced:
            pytest.skip(f"cgroup limits not enforceable on this node: {support.detail}")
        mem = Path(f"/sys/fs/cgroup/memory/mlrp/{account}")
        cpu = Path(f"/sys/fs/cgroup/cpu/mlrp/{account}")
        if support.kind == "v1":
            assert int((mem / "memory.limit_in_bytes").read_text()) == 2 * 1024**3
            assert int((cpu / "cpu.cfs_quota_us").read_text()) == 100000
            assert str(pid) in (mem / "cgroup.procs").read_text().split()
            assert f"mlrp/{account}" in Path(f"/proc/{pid}/cgroup").read_text()
    finally:
        hub.stop_server("alice")
    if probe().kind == "v1":
        assert not Path(f"/sys/fs/cgroup/memory/mlrp/{account}").exists(), "cgroup removed on stop"


def test_idle_culler_runs_as_a_hub_service(hub: Hub) -> None:
    services = hub.api("GET", "/services").json()
    culler = services["idle-culler"]
    assert any("--timeout=3600" in part for part in culler["command"])
    assert culler.get("pid"), "the hub started the culler process"

"""`mlrp doctor` beside a real running hub (issue 14): the hub row finds it through the pid file
JupyterHub writes and asks its URL; the lease row lists the GPU a running server holds."""

from __future__ import annotations

import re

import pytest
from harness import Hub

pytestmark = [pytest.mark.e2e]  # `hub`: conftest.py's module hub (4 GPUs, alice and bob)


def _row(output: str, name: str) -> str:
    (row,) = [
        line for line in output.splitlines() if re.match(rf"^\S+\s+{re.escape(name)}\s", line)
    ]
    return row


def test_doctor_sees_the_running_hub_and_its_leases(hub: Hub) -> None:
    r = hub.start_server("alice", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    (gpu,) = [d for d, owner in hub.leases().items() if owner == "alice/"]
    try:
        out = hub.mlrp("doctor", "--config", str(hub.config_path))
        assert "Traceback" not in out.stderr
        pid = int((hub.data_dir / "jupyterhub.pid").read_text())
        hub_row = _row(out.stdout, "Hub")
        assert hub_row.startswith("OK"), out.stdout
        assert hub_row.endswith(f"running (pid {pid}); {hub.url}/hub/api/ answers (HTTP 200)")
        assert _row(out.stdout, "GPU leases").startswith("OK"), out.stdout
        assert re.search(rf"GPU {gpu}: alice, profile gpu1, since [-\d]+ [:\d]+ UTC", out.stdout)
    finally:
        hub.stop_server("alice")

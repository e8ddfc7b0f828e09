"""Who holds which GPU (issue 14): `mlrp gpus` and the admin page /hub/mlrp/gpus list the
holder, profile and start of each leased (configured) GPU; anyone else gets 403.
"""

from __future__ import annotations

import pytest
import requests
from harness import Hub

pytestmark = [pytest.mark.e2e]  # `hub`: conftest.py's module hub (4 GPUs, alice and bob)


def test_mlrp_gpus_and_the_admin_page_show_the_holders(hub: Hub) -> None:
    r = hub.start_server("alice", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice")
    (gpu,) = [d for d, owner in hub.leases().items() if owner == "alice/"]
    try:
        out = hub.mlrp("gpus", "--config", str(hub.config_path))
        assert out.returncode == 0, out.stderr
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:-1]}
        assert rows[gpu][1:3] == ["alice", "gpu1"], out.stdout
        assert all(rows[d][1] == "free" for d in rows if d != gpu), out.stdout
        assert out.stdout.splitlines()[-1] == "1 of 4 GPU(s) leased"

        admin = hub.login_session("admin", hub.admin_password)
        page = admin.get(f"{hub.url}/hub/mlrp/gpus", timeout=30)
        assert page.status_code == 200
        assert f"<td>{gpu}</td><td>alice</td><td>gpu1</td>" in page.text

        bob = hub.login_session("bob", hub.passwords["bob"])
        refused = bob.get(f"{hub.url}/hub/mlrp/gpus", timeout=30)
        assert refused.status_code == 403 and "alice" not in refused.text
        anonymous = requests.get(f"{hub.url}/hub/mlrp/gpus", allow_redirects=False, timeout=30)
        assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]
    finally:
        hub.stop_server("alice")
    out = hub.mlrp("gpus", "--config", str(hub.config_path))
    assert out.stdout.splitlines()[-1] == "0 of 4 GPU(s) leased"

"""Without root: `mlrp up` refuses multi-user mode with a clear message, and the labelled
single-user (developer) mode runs servers as the invoking account."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Hub, new_hub, remove_accounts, run_prefix

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]


@pytest.fixture()
def developer() -> Iterator[str]:
    """An ordinary Unix account playing the developer who starts the hub."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create the ordinary account that plays the developer")
    prefix = run_prefix()
    name = f"{prefix}dev"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    try:
        yield name
    finally:
        remove_accounts(prefix)


def _hub_for(developer: str, mode: str) -> Hub:
    hub = new_hub()
    home = Path(f"/home/{developer}")
    hub.config["hub"]["data_dir"] = str(home / "mlrp-data")
    hub.config["accounts"]["mode"] = mode
    hub.config["login"]["admin_users"] = [developer]
    hub.config["groups"] = {}
    for p in hub.config["profiles"]:
        p.pop("groups", None)
    hub.run_as = developer
    hub.workdir.chmod(0o777)
    shutil.chown(hub.workdir, developer)
    return hub


def test_multi_user_mode_needs_root(developer: str) -> None:
    hub = _hub_for(developer, "system")
    try:
        hub.write_config()
        r = hub.mlrp("up", "--config", str(hub.config_path))
        assert r.returncode == 2
        assert "mlrp up must run as root" in r.stderr
        assert "accounts.mode: single-user" in r.stderr
        assert "Traceback" not in r.stderr
        assert not (Path(hub.config["hub"]["data_dir"]) / "jupyterhub.sqlite").exists()
    finally:
        shutil.rmtree(hub.workdir, ignore_errors=True)


def test_single_user_mode_runs_servers_as_the_invoking_account(developer: str) -> None:
    hub = _hub_for(developer, "single-user")
    try:
        hub.start()
        assert "DEVELOPER MODE" in hub.log()
        assert hub.admin_password, "the developer's own login is printed"
        s = hub.login_session(developer, hub.admin_password)
        xsrf = s.cookies.get("_xsrf", "")
        r = s.post(f"{hub.url}/hub/spawn", params={"_xsrf": xsrf}, data={"profile": "gpu1"})
        assert r.status_code == 200, r.text[:300]
        pid = 0
        deadline = time.monotonic() + 60
        while not pid and time.monotonic() < deadline:
            pid = hub.server_pid(developer)
            time.sleep(0.1)
        assert pid, hub.log()[-2000:]
        uid = Path(f"/proc/{pid}").stat().st_uid
        assert pwd.getpwuid(uid).pw_name == developer
        assert hub.unix_accounts() == {}, "no accounts are created in single-user mode"
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"CUDA_VISIBLE_DEVICES=0\0" in environ or b"CUDA_VISIBLE_DEVICES=1\0" in environ
    finally:
        pid = hub.server_pid(developer)
        hub.stop()
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        remove_accounts(hub.config["accounts"]["prefix"])
        shutil.rmtree(hub.workdir, ignore_errors=True)

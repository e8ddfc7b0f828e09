"""The README's first command, run as a root admin runs it: from a clone in a directory nobody
else can enter, into a fresh prefix. Then the clone is deleted, and the installed platform must
still start, pass `mlrp doctor` and spawn a user's server.

Everything goes under temporary directories (MLRP_PREFIX, MLRP_BIN_DIR): the machine's own
/opt/mlrp and /usr/local/bin are not touched. The pip install takes about a minute with a warm
pip cache (the test command filled it moments before).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from harness import (
    REPO,
    Hub,
    base_config,
    remove_accounts,
    remove_cgroups,
    run_prefix,
    shared_dir,
)

pytestmark = [pytest.mark.e2e, pytest.mark.install]

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALL_TIMEOUT = 900  # a cold pip cache downloads ~120 packages


def checkout_files() -> list[str]:
    """What a clone of this checkout holds: tracked files plus new ones git does not ignore."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]


def private_clone(where: Path) -> Path:
    """The checkout as it is now (uncommitted changes too), in a directory only root can enter."""
    where.chmod(0o700)
    clone = where / "mlrp"
    for name in checkout_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return clone


@pytest.fixture(scope="module")
def site() -> Iterator[dict[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the bootstrap installs Debian packages and creates accounts")
    if not (REPO / ".git").exists():
        pytest.skip("needs a git checkout: the test clones it as an admin would")
    root_dir = Path(tempfile.mkdtemp(prefix="mlrp-admin-", dir="/root"))
    prefix = shared_dir("mlrp-prefix-")
    work = shared_dir("mlrp-install-")
    work.chmod(0o755)
    paths = {"admin": root_dir, "prefix": prefix, "bin": prefix / "bin-links", "work": work}
    try:
        yield paths
    finally:
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)


def hub_for(site: dict[str, Path], command: list[str]) -> Hub:
    """A hub configured like a small site: no image and no proxy named, so the defaults (the
    environment MLRP is installed in, the proxy beside it) must be right on their own."""
    config = base_config(site["work"] / "data", run_prefix(), gpus=2)
    del config["images"], config["hub"]["proxy_command"]
    config["profiles"] = [p for p in config["profiles"] if p["slug"] in ("cpu", "gpu1")]
    env = {"MLRP_PREFIX": str(site["prefix"]), "MLRP_BIN_DIR": str(site["bin"]), "PATH": CLEAN_PATH}
    return Hub(site["work"], config, command=command, code=None, extra_env=env)


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def test_up_from_a_private_clone_survives_deleting_the_clone(site: dict[str, Path]) -> None:
    clone = private_clone(site["admin"])
    assert stat.S_IMODE(site["admin"].stat().st_mode) == 0o700
    venv = site["prefix"] / "venv"

    # 1. The README's first command, from the clone.
    first = hub_for(site, ["bash", str(clone / "hub" / "bootstrap.sh")])
    try:
        first.start(timeout=INSTALL_TIMEOUT)
        assert first.admin_password, "the first start prints the admin's password"
    finally:
        first.stop()
    installed = site_packages(venv)
    assert (installed / "hub" / "cli.py").is_file(), "a copy, not a link back to the clone"
    assert not list(installed.glob("__editable__*")), "no editable install"
    for pth in installed.glob("*.pth"):
        assert str(site["admin"]) not in pth.read_text(), f"{pth} points into the clone"
    assert (site["bin"] / "mlrp").resolve() == venv / "bin" / "mlrp"

    # 2. Again, unchanged: nothing is reinstalled.
    again = subprocess.run(
        ["bash", str(clone / "hub" / "bootstrap.sh"), "install"],
        env={**os.environ, **first.extra_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr, again.stderr

    # 3. The admin deletes the clone. The platform runs on from what was installed.
    shutil.rmtree(clone)
    mlrp = [str(site["bin"] / "mlrp")]
    second = hub_for(site, mlrp)
    second.config, second.admin_password = first.config, first.admin_password
    doctor = second.mlrp("doctor", "--config", str(second.config_path))
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    proxy = site["prefix"] / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
    proxy_row = next(line for line in doctor.stdout.splitlines() if "Proxy binary" in line)
    assert proxy_row.startswith("OK") and str(proxy) in proxy_row, doctor.stdout
    # What config errors point to exists without the clone: the example is package data.
    example = second.mlrp("config", "example")
    assert example.returncode == 0 and "\nprofiles:\n" in example.stdout, example.stderr
    try:
        second.start()
        second.add_user("alice")
        second.login_session("alice", second.passwords["alice"])  # makes the hub user
        r = second.start_server("alice", profile="gpu1")
        assert r.status_code in (201, 202), r.text
        pid = second.server_pid("alice")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert str(venv / "bin" / "jupyterhub-singleuser").encode() in cmdline
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert str(site["admin"]).encode() not in environ
        token = second.user_token("alice")
        api = requests.get(
            f"{second.url}/user/alice/api/status",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        assert api.status_code == 200, api.text
        second.stop_server("alice")
        deadline = time.monotonic() + 10
        while second.leases() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.leases() == {}
    finally:
        second.stop()
        remove_accounts(second.config["accounts"]["prefix"])
        remove_cgroups(second.config["accounts"]["prefix"])

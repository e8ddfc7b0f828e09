"""Starts and stops a real MLRP hub (JupyterHub + configurable-http-proxy + real user servers)
for tests and benchmarks. Everything listens on 127.0.0.1 on free ports; every Unix account the
hub creates carries a per-run prefix and is removed, with its processes (by PID), afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

# The code under test is this checkout's, never an installed copy: the pytest process imports it
# (pytest's `pythonpath` setting) and every `mlrp` the tests start runs it through PYTHONPATH.
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "spawners", "config", "images")
# The environment the tests run in: dependencies only (hub/bootstrap.sh test), so user servers
# started from it can import nothing of ours.
VENV = Path(sys.executable).parent.parent
# Where hub/bootstrap.sh installed the proxy and the test environments ($MLRP_PREFIX).
PREFIX = Path(os.environ.get("MLRP_PREFIX", "/opt/mlrp"))
PROXY = PREFIX / "node/node_modules/.bin"
PROXY_CMD = str(PROXY / "configurable-http-proxy")
MLRP = [sys.executable, "-m", "hub.cli"]
# Where tests put what user servers must see (images, device nodes, installs): not /tmp or
# /var/tmp, which every server sees as its own private, empty directory.
TEST_ROOT = Path("/var/lib/mlrp-tests")


def shared_dir(prefix: str) -> Path:
    """A fresh directory under TEST_ROOT, readable by every account (the caller removes it)."""
    TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TEST_ROOT))
    path.chmod(0o755)
    return path


def code_env(code: Path = REPO, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which `python -m hub.cli` runs the code at `code` (the checkout)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(code)
    return env


def readable_copy(dest: Path) -> Path:
    """A copy of the code under test that any account can read, for processes run as another
    account: the checkout may sit in a directory only root can enter (/root/mlrp)."""
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    # The placement backends' entry points: an uninstalled checkout reads them from here.
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def run_mlrp(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`mlrp ARGS` from the checkout, as root, in a subprocess."""
    return subprocess.run(
        [*MLRP, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=code_env(base=env),
        check=False,
    )


def wait_for_hub(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout: float,
    log: Callable[[], str],
    what: str,
    verify: str | bool = True,
) -> None:
    """Until the JupyterHub at `url` answers its API; RuntimeError with its log if it exits
    or does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log()}")
        try:
            if requests.get(f"{url}/hub/api", timeout=1, verify=verify).status_code == 200:
                return
        except OSError:  # not listening yet; or, with TLS, its certificate not made yet
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout} s:\n{log()[-3000:]}")


def stop_hub(proc: subprocess.Popen[bytes] | None, proxy_pid_file: Path) -> None:
    """SIGTERM to a hub by PID (it stops its proxy); one that does not stop within 30 s is
    killed, and its proxy, which a killed hub cannot stop, gets SIGTERM by its recorded PID."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    _stop_orphaned_proxy(proxy_pid_file)


def _stop_orphaned_proxy(proxy_pid_file: Path) -> None:
    """A hub that died or was killed leaves its proxy running: SIGTERM it by its recorded PID,
    if that PID is still a configurable-http-proxy (a stale file may name a reused PID)."""
    try:
        pid = int(proxy_pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return  # no pid file, or the proxy is gone already
    if b"configurable-http-proxy" in cmdline:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_prefix() -> str:
    """A Unix-account prefix unique to this run, e.g. 'tqzkx-'."""
    return "t" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(4)) + "-"


def broken_env(data_dir: Path) -> Path:
    """An 'image' whose jupyterhub-singleuser prints a line and exits 3, like a broken env."""
    env = data_dir.parent / "broken-env"
    (env / "bin").mkdir(parents=True, exist_ok=True)
    script = env / "bin" / "jupyterhub-singleuser"
    script.write_text("#!/bin/sh\necho 'ImportError: no module named jupyterlab' >&2\nexit 3\n")
    script.chmod(0o755)
    return env


def gated_env(data_dir: Path) -> Path:
    """An 'image' whose server waits until the test creates `gate_path(data_dir)`, then runs the
    real jupyterhub-singleuser: a start that is provably still under way while a test looks."""
    env = data_dir.parent / "gated-env"
    (env / "bin").mkdir(parents=True, exist_ok=True)
    script = env / "bin" / "jupyterhub-singleuser"
    script.write_text(
        "#!/bin/sh\n"
        f"while [ ! -e {gate_path(data_dir)} ]; do sleep 0.05; done\n"
        f'exec {VENV}/bin/jupyterhub-singleuser "$@"\n'
    )
    script.chmod(0o755)
    return env


def gate_path(data_dir: Path) -> Path:
    return data_dir.parent / "gate-open"


def base_config(data_dir: Path, prefix: str, gpus: int = 4) -> dict[str, Any]:
    return {
        "hub": {
            "ip": "127.0.0.1",
            "port": free_port(),
            "hub_port": free_port(),
            "proxy_api_port": free_port(),
            "data_dir": str(data_dir),
            "proxy_command": [PROXY_CMD],
            "poll_interval": 2,
            "start_timeout": 60,
        },
        "login": {"admin_users": ["admin"]},
        "accounts": {"mode": "system", "prefix": prefix},
        "gpus": {"source": "config", "devices": [str(i) for i in range(gpus)]},
        "images": {
            "default": {"env": str(VENV)},
            "broken": {"env": str(broken_env(data_dir))},
            "gated": {"env": str(gated_env(data_dir))},
        },
        "groups": {"staff": ["admin"], "students": ["alice", "bob"]},
        "profiles": [
            {
                "slug": "cpu",
                "name": "CPU only",
                "gpus": 0,
                "cpus": 1,
                "memory": "2G",
                "idle_timeout": 600,
            },
            {
                "slug": "gpu1",
                "name": "1 GPU, PyTorch",
                "gpus": 1,
                "cpus": 1,
                "memory": "2G",
                "groups": ["students", "staff"],
            },
            {
                "slug": "broken",
                "name": "Broken image (staff)",
                "image": "broken",
                "gpus": 1,
                "groups": ["staff"],
            },
            {
                "slug": "gated",
                "name": "Waits for the test (staff)",
                "image": "gated",
                "gpus": 1,
                "groups": ["staff"],
            },
            {
                "slug": "multi",
                "name": "Several GPUs (staff)",
                "gpus": {"choices": [2, 4], "default": 2},
                "groups": ["staff"],
            },
        ],
        "idle_culler": {"enabled": True, "timeout": 3600, "interval": 300},
    }


@dataclass
class Hub:
    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    admin_password: str = ""
    passwords: dict[str, str] = field(default_factory=dict)
    run_as: str | None = None  # run `mlrp` as this Unix account instead of root
    sigint_ignored: bool = False  # start `mlrp up` as a shell's background job would
    # How to run `mlrp`: the checkout's code by default; an installed platform's `mlrp` (or the
    # bootstrap) with `code=None`, which keeps PYTHONPATH from pointing anywhere.
    command: list[str] = field(default_factory=lambda: list(MLRP))
    code: Path | None = REPO
    extra_env: dict[str, str] = field(default_factory=dict)
    # Python that jupyterhub_config.py runs before and after it loads the MLRP configuration
    # (e.g. importing a third-party package): the hub then runs a copy of the code carrying it.
    config_before: str = ""
    config_after: str = ""
    _admin_token: str = ""

    @property
    def url(self) -> str:
        scheme = "https" if self.config["hub"].get("tls") else "http"
        return f"{scheme}://127.0.0.1:{self.config['hub']['port']}"

    @property
    def verify(self) -> str | bool:
        """What requests should trust: the hub's certificate when it has TLS."""
        tls = self.config["hub"].get("tls")
        if not tls:
            return True
        if tls.get("self_signed"):
            return str(self.data_dir / "tls" / "mlrp-selfsigned.crt")
        return str(tls["cert"])

    @property
    def data_dir(self) -> Path:
        return Path(self.config["hub"]["data_dir"])

    @property
    def config_path(self) -> Path:
        return self.workdir / "mlrp.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "hub.log"

    def _as_user(self) -> dict[str, Any]:
        """Popen arguments that run `mlrp` (self.command) as `run_as` (default root)."""
        base = {**os.environ, **self.extra_env}
        if self.code is None:
            base.pop("PYTHONPATH", None)
            base.pop("VIRTUAL_ENV", None)
        if self.run_as is None:
            return {"env": base if self.code is None else code_env(self.code, base)}
        pw = pwd.getpwnam(self.run_as)
        base.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        if self.code is not None:
            code = self.workdir / "code"
            if not code.exists():
                readable_copy(code)
            base = code_env(code, base)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": base}

    def mlrp(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            **self._as_user(),
        )

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))

    def _wrap_jupyterhub_config(self) -> None:
        """Give the hub a copy of the code whose jupyterhub_config.py carries config_before
        and config_after around the MLRP configuration."""
        if not (self.config_before or self.config_after) or self.code is None:
            return
        code = self.workdir / "code"
        if not code.exists():
            readable_copy(code)
        path = code / "config" / "jupyterhub_config.py"
        original = (REPO / "config" / "jupyterhub_config.py").read_text()
        path.write_text(f"{self.config_before}\n{original}\n{self.config_after}\n")
        self.code = code

    def start(self, timeout: float = 60) -> None:
        self.write_config()
        self._wrap_jupyterhub_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, "up", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_ignore_sigint if self.sigint_ignored else None,
            # `python -m` looks in the working directory first: the copy, when there is one
            cwd=self.code if self.code not in (None, REPO) else None,
            **self._as_user(),
        )
        log.close()
        wait_for_hub(self.proc, self.url, timeout, self.log, "hub", verify=self.verify)
        m = re.search(r"password:\s+(\S+)", self.log())
        if m and not self.admin_password:
            self.admin_password = m.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the hub (and its proxy) by PID; user servers keep running (cleanup_servers off)."""
        stop_hub(self.proc, self.data_dir / "proxy.pid")

    def kill(self) -> None:
        """SIGKILL the hub (no clean-up of its own), then stop by PID what it started and
        left behind: its managed services (the idle culler, which would otherwise outlive the
        test) and its proxy. User servers and jobs stay, as after a real crash."""
        assert self.proc is not None
        children = [pid for pid in child_pids(self.proc.pid) if _is_service(pid)]
        self.proc.kill()
        self.proc.wait(timeout=10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.stop()  # the proxy, by its pid file

    # -- accounts and API ----------------------------------------------------------------------
    def add_user(self, name: str) -> str:
        password = "pw-" + secrets.token_hex(8)
        r = self.mlrp(
            "user",
            "add",
            name,
            "--config",
            str(self.config_path),
            "--password-stdin",
            stdin=password + "\n",
        )
        assert r.returncode == 0, r.stderr
        self.passwords[name] = password
        return password

    def admin_token(self) -> str:
        if not self._admin_token:
            s = self.login_session("admin", self.admin_password)
            r = s.post(
                f"{self.url}/hub/api/users/admin/tokens",
                json={"note": "tests", "expires_in": 3600},
                headers={"X-XSRFToken": s.cookies.get("_xsrf", "")},
            )
            assert r.status_code == 201, r.text
            self._admin_token = r.json()["token"]
        return self._admin_token

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token()}"}
        kw.setdefault("verify", self.verify)
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=60, **kw
        )

    def login_session(self, name: str, password: str) -> requests.Session:
        s = requests.Session()
        r = s.get(f"{self.url}/hub/login")
        xsrf = s.cookies.get("_xsrf", "")
        r = s.post(
            f"{self.url}/hub/login",
            data={"username": name, "password": password, "_xsrf": xsrf},
            allow_redirects=False,
        )
        assert r.status_code == 302, f"login of {name} failed: {r.status_code} {r.text[:300]}"
        return s

    def user_token(self, name: str) -> str:
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "tests", "expires_in": 3600})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def start_server(self, name: str, timeout: float = 60, **options: Any) -> requests.Response:
        r = self.api("POST", f"/users/{name}/server", json=options)
        if r.status_code not in (201, 202):
            return r
        self.wait_ready(name, timeout)
        return r

    def wait_ready(self, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{name}").json()
            server = model.get("servers", {}).get("", {})
            if server.get("ready"):
                return dict(server)
            if not server.get("pending") and not server:
                raise AssertionError(
                    f"server of {name} is not starting: {model}\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"server of {name} not ready in {timeout} s")

    def stop_server(self, name: str) -> None:
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            servers = self.api("GET", f"/users/{name}").json().get("servers", {})
            if "" not in servers:
                return
            time.sleep(0.1)
        raise AssertionError(f"server of {name} did not stop")

    # -- what the hub recorded -----------------------------------------------------------------
    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "mlrp.sqlite")

    def leases(self) -> dict[str, str]:
        with self.db() as c:
            return dict(c.execute("SELECT device, owner FROM gpu_leases").fetchall())

    def unix_accounts(self) -> dict[str, str]:
        with self.db() as c:
            return dict(c.execute("SELECT hub_user, unix_name FROM unix_accounts").fetchall())

    def spawner_state(self, name: str) -> dict[str, Any]:
        """What the spawner of the user's default server saved in JupyterHub's database."""
        with sqlite3.connect(self.data_dir / "jupyterhub.sqlite") as c:
            row = c.execute(
                "SELECT spawners.state FROM spawners JOIN users ON users.id = spawners.user_id "
                "WHERE users.name = ? AND spawners.name = ''",
                (name,),
            ).fetchone()
        return dict(json.loads(row[0])) if row and row[0] else {}

    def placement_state(self, name: str) -> dict[str, Any]:
        """What MLRPSpawner saved for the user's default server (pid, port, gpus…)."""
        return dict(self.spawner_state(name).get("mlrp", {}).get("placement", {}))

    def server_pid(self, name: str) -> int:
        return int(self.placement_state(name).get("pid", 0))

    def server_port(self, name: str) -> int:
        return int(self.placement_state(name).get("port", 0))

    # -- teardown ------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Stop servers, the hub, and remove this run's Unix accounts and their processes."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                for user in self.api("GET", "/users").json():
                    if user.get("servers"):
                        self.stop_server(user["name"])
            except (requests.RequestException, AssertionError, ValueError):
                pass
        self.stop()
        remove_accounts(self.config["accounts"]["prefix"])
        remove_cgroups(self.config["accounts"]["prefix"])
        self._keep_log()
        if not os.environ.get("MLRP_KEEP_TEST_DIRS"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _keep_log(self) -> None:
        """Copy the hub log out of the work directory before it goes, so a failure seen in a
        CI run can still be read: to $MLRP_TEST_LOGS (default /tmp/mlrp-test-logs)."""
        logs = Path(os.environ.get("MLRP_TEST_LOGS", "/tmp/mlrp-test-logs"))
        try:
            logs.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copyfile(self.log_path, logs / f"{self.workdir.name}.log")
        except OSError:
            pass


def remove_cgroups(prefix: str) -> None:
    """Groups the hub left (a server killed with the hub down); empty once processes are gone."""
    stem = prefix.rstrip("-")
    for parent in Path("/sys/fs/cgroup").glob("*/mlrp"):
        for group in parent.iterdir():
            if group.is_dir() and group.name.startswith((prefix, stem + "_")):
                try:
                    group.rmdir()
                except OSError:
                    pass


def new_hub(gpus: int = 4) -> Hub:
    """A Hub (not started) in a fresh work directory, with this run's account prefix."""
    workdir = shared_dir("mlrp-test-")
    return Hub(workdir, base_config(workdir / "data", run_prefix(), gpus=gpus))


@contextmanager
def running_hub(
    gpus: int = 4,
    users: tuple[str, ...] = ("alice", "bob"),
    configure: Callable[[Hub], None] | None = None,
) -> Iterator[Hub]:
    """A started hub (after `configure` adjusted it) with these users; cleaned up after."""
    h = new_hub(gpus=gpus)
    try:
        if configure is not None:
            configure(h)
        h.start()
        for name in users:
            h.add_user(name)
        yield h
    finally:
        h.cleanup()


def child_pids(parent: int) -> list[int]:
    """The pids of `parent`'s direct children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(entry.name))
    return found


def _is_service(pid: int) -> bool:
    """A JupyterHub-managed service (its environment names it), not a user's server."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"JUPYTERHUB_SERVICE_NAME=" in environ


def pids_of_uid(uid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    yield int(entry.name)
            except FileNotFoundError:
                continue


def remove_accounts(prefix: str) -> None:
    stem = prefix.rstrip("-")
    for pw in pwd.getpwall():
        if pw.pw_name.startswith(prefix) or pw.pw_name.startswith(stem + "_"):
            for pid in pids_of_uid(pw.pw_uid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
            subprocess.run(["userdel", "-r", pw.pw_name], capture_output=True, check=False)

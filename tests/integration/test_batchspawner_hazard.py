"""batchspawner's callback hazard, closed (hub/callback_api.py), through a real hub and proxy.

Importing batchspawner registers `/hub/api/batchspawner`, whose handler sets every attribute a
JSON body names on the server's spawner, authenticated only by the server's own token. Here the
hub imports batchspawner before our configuration runs ("before": alice's server is MLRP's local
one) or after it ("after": vanilla batchspawner is the spawner class). Alice's server token is
read from her server's process environment, as anyone on her account could, and used to post
what would make the hub run a command: each is refused with our sentence and changes nothing.

Stand-in, named: in "after" the batch system is this machine's process table (submit starts
`sleep` and prints its PID, query is `ps`, cancel is `kill`), run by vanilla batchspawner's own
BatchSpawnerRegexStates; its commands are exactly the ones a hostile body would replace.
"""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from harness import Hub, free_port, running_hub

from hub.callback_api import ALREADY_REPORTED, HOST_REFUSED, NOT_A_SERVER_TOKEN

pytestmark = [pytest.mark.e2e, pytest.mark.hub_versions]

ONLY_PORT = "Only the port may be reported here"
BATCHSPAWNERS_ANSWER = "BatchSpawner data configured"


def vanilla_batchspawner(workdir: Path) -> str:
    """Config that imports batchspawner after ours and makes it the spawner class, with a
    local 'batch system' (see the module docstring)."""
    return f"""
import batchspawner  # after MLRP's configuration ran: its route is appended behind ours
from traitlets import Unicode


class LocalBatchSpawner(batchspawner.BatchSpawnerRegexStates):
    req_homedir = Unicode("/")  # not read from /etc/passwd: alice has no Unix account here


c.JupyterHub.spawner_class = LocalBatchSpawner
b = c.BatchSpawnerRegexStates
b.exec_prefix = ""
b.batch_script = "#!/bin/sh\\n{{cmd}}\\n"
b.batch_submit_cmd = (
    "cat >/dev/null; sleep 600 </dev/null >/dev/null 2>&1 & "
    "echo $! | tee {workdir}/job-$JUPYTERHUB_USER.pid"
)
b.batch_query_cmd = "ps -o stat= -p {{job_id}}"
b.batch_cancel_cmd = "kill {{job_id}}"
b.state_running_re = r"^\\s*[RSD]"
b.state_pending_re = r"^PENDING$"
b.state_exechost_re = r"()"
b.state_exechost_exp = "127.0.0.1"
b.start_timeout = 120
print("TEST: batchspawner imported after", flush=True)
"""


@dataclass
class Alice:
    hub: Hub
    order: str  # "before" or "after": where batchspawner is imported
    token: str  # her server's JUPYTERHUB_API_TOKEN, from its process environment
    pid: int  # her server's process (local) or batch job (vanilla batchspawner)

    @property
    def markers(self) -> Path:
        return self.hub.workdir / "markers"

    def post(self, body: Any, token: str | None = None, raw: bytes | None = None) -> Any:
        return requests.post(
            f"{self.hub.url}/hub/api/batchspawner",
            headers={"Authorization": f"token {token or self.token}"},
            **({"data": raw} if raw is not None else {"json": body}),
            timeout=30,
        )

    def hubs_view(self) -> dict[str, Any]:
        """What the hub says and saved about her server (activity times aside)."""
        model = self.hub.api("GET", "/users/alice").json()["servers"].get("", {})
        model.pop("last_activity", None)
        return {"model": model, "state": self.hub.spawner_state("alice")}


def token_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        if entry.startswith(b"JUPYTERHUB_API_TOKEN="):
            return entry.split(b"=", 1)[1].decode()
    raise AssertionError(f"process {pid} has no JUPYTERHUB_API_TOKEN")


def wait_for_file(path: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear in {timeout} s")


@pytest.fixture(scope="module", params=["before", "after"])
def alice(request: pytest.FixtureRequest) -> Iterator[Alice]:
    """Alice's server: running (local, "before") or a submitted job waiting for its port
    (vanilla batchspawner, "after")."""
    order = str(request.param)

    def configure(h: Hub) -> None:
        if order == "before":
            h.config_before = (
                "import batchspawner  # registers its route before ours\n"
                "print('TEST: batchspawner imported before', flush=True)\n"
            )
        else:
            h.config_after = vanilla_batchspawner(h.workdir)

    with running_hub(configure=configure) as h:
        assert f"TEST: batchspawner imported {order}" in h.log()
        (h.workdir / "markers").mkdir()
        if order == "before":
            r = h.start_server("alice", profile="cpu")
            assert r.status_code in (201, 202), r.text
            pid = h.server_pid("alice")
        else:
            r = h.api("POST", "/users/alice/server", json={})
            assert r.status_code == 202, r.text
            pid = int(wait_for_file(h.workdir / "job-alice.pid"))
        try:
            yield Alice(h, order, token_of(pid), pid)
        finally:  # the hub's cleanup stops her server; a stand-in job it lost is ended here
            cmdline = Path(f"/proc/{pid}/cmdline")
            if order == "after" and cmdline.exists() and cmdline.read_bytes().startswith(b"sleep"):
                os.kill(pid, signal.SIGKILL)


def hostile_bodies(markers: Path) -> list[tuple[str, dict[str, Any]]]:
    """Each would make the hub run `touch` (batchspawner runs exec_prefix and batch_cancel_cmd
    through a shell on every query and on stop, and cmd inside the next job)."""
    cancel = {"batch_cancel_cmd": f"touch {markers}/cancel"}
    prefix = {"exec_prefix": f"touch {markers}/prefix;"}
    cmd = {"cmd": ["/bin/sh", "-c", f"touch {markers}/cmd"]}
    return [
        ("batch_cancel_cmd", cancel),
        ("exec_prefix", prefix),
        ("cmd", cmd),
        ("all three", {**cancel, **prefix, **cmd}),
        ("batch_cancel_cmd + port", {"port": 8080, **cancel}),
        ("exec_prefix + port", {"port": 8080, **prefix}),
        ("cmd + port", {"port": 8080, **cmd}),
        ("ip + port", {"port": 8080, "ip": "10.9.9.9"}),
    ]


HOSTILE_NAMES = [name for name, _ in hostile_bodies(Path("/x"))]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_keys_the_hub_would_run_are_refused_and_change_nothing(alice: Alice, name: str) -> None:
    body = dict(hostile_bodies(alice.markers))[name]
    before = alice.hubs_view()
    r = alice.post(body)
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert ONLY_PORT in message, f"not our handler: {r.text}"
    assert BATCHSPAWNERS_ANSWER not in r.text
    assert "Traceback" not in r.text
    time.sleep(0.5)  # a query batchspawner would run with a hostile exec_prefix
    assert alice.hubs_view() == before
    assert list(alice.markers.iterdir()) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"port": 8080, "host": "10.9.9.9"}, HOST_REFUSED),
        ({"port": "8080"}, "port must be a whole number, not a JSON string"),
        ({"port": True}, "port must be a whole number, not a JSON boolean"),
        ([8080], "not an object"),
        ({"port": 70000}, "between 1 and 65535"),
    ],
)
def test_bad_port_reports_are_refused_with_a_sentence(
    alice: Alice, body: Any, expected: str
) -> None:
    before = alice.hubs_view()
    r = alice.post(body)
    assert (r.status_code, expected in r.json()["message"]) == (400, True), r.text
    assert alice.hubs_view() == before


def test_a_huge_body_is_refused(alice: Alice) -> None:
    before = alice.hubs_view()
    r = alice.post(None, raw=b'{"port": 8080, "pad": "' + b"x" * 1_000_000 + b'"}')
    assert r.status_code == 400, r.text[:300]
    assert "a port report is at most" in r.json()["message"]
    assert alice.hubs_view() == before


def test_no_other_token_reports_alices_port(alice: Alice) -> None:
    hub = alice.hub
    before = alice.hubs_view()
    for token in [hub.user_token("bob"), hub.user_token("alice"), hub.admin_token()]:
        r = alice.post({"port": 8080}, token=token)
        assert r.status_code == 403, r.text
        assert r.json()["message"] == NOT_A_SERVER_TOKEN
    r = requests.post(f"{hub.url}/hub/api/batchspawner", json={"port": 8080}, timeout=30)
    assert r.status_code == 403, r.text
    assert alice.hubs_view() == before


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_her_job_reports_its_port_once_while_starting(alice: Alice) -> None:
    hub = alice.hub
    if alice.order == "before":
        # MLRP's local server is running: it chose no port of its own to report.
        r = alice.post({"port": 8080})
        assert r.status_code == 409, r.text
        assert "is not starting (it is running)" in r.json()["message"]
        return
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Answers)  # stands in for JupyterLab
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = alice.post({"port": port})
        assert r.status_code == 200, r.text
        r = alice.post({"port": port + 1})
        assert (r.status_code, r.json()["message"]) == (409, ALREADY_REPORTED)
        hub.wait_ready("alice", timeout=60)
        routes = hub.api("GET", "/proxy").json()
        assert routes["/user/alice/"]["target"] == f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def test_stopping_her_server_runs_nothing_hostile(alice: Alice) -> None:
    alice.hub.stop_server("alice")
    assert list(alice.markers.iterdir()) == []
    deadline = time.monotonic() + 10
    while Path(f"/proc/{alice.pid}/status").exists() and "Z" not in _state(alice.pid):
        assert time.monotonic() < deadline, "her server's process outlived the stop"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except FileNotFoundError:
        pass
    return "Z"

"""The port-report endpoint that replaces batchspawner's (hub/callback_api.py): which bodies it
takes, whose token, in which state, and that JupyterHub 5 and 6 route /hub/api/batchspawner to
it whichever side of our configuration batchspawner is imported on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import PREFIX, REPO

from hub.callback_api import (
    ALREADY_REPORTED,
    DOES_NOT_REPORT,
    HOST_REFUSED,
    MAX_BODY,
    NOT_A_SERVER_TOKEN,
    Refusal,
    apply_port,
    own_spawner,
    parse_port_report,
)

pytestmark = pytest.mark.unit

# The JupyterHub 5 test environment bootstrap made; it runs the checkout's code (PYTHONPATH).
JUPYTERHUB5 = PREFIX / "venv-jupyterhub5" / "bin" / "python"


@pytest.mark.parametrize(
    ("body", "port"),
    [
        (b'{"port": 8080}', 8080),
        (b'{"port":1}', 1),
        (b' {"port" : 65535}\n', 65535),
    ],
)
def test_a_port_alone_is_taken(body: bytes, port: int) -> None:
    assert parse_port_report(body) == port


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"batch_cancel_cmd": "touch /tmp/x"}', "refused key(s): 'batch_cancel_cmd'"),
        (b'{"exec_prefix": "touch /tmp/x;"}', "refused key(s): 'exec_prefix'"),
        (b'{"cmd": ["/bin/sh"]}', "refused key(s): 'cmd'"),
        (b'{"port": 8080, "cmd": ["/bin/sh"]}', "refused key(s): 'cmd'"),
        (b'{"port": 8080, "ip": "10.0.0.1"}', "refused key(s): 'ip'"),
        (
            b'{"port": 8080, "exec_prefix": "", "batch_cancel_cmd": "", "cmd": []}',
            "refused key(s): 'batch_cancel_cmd', 'cmd', 'exec_prefix'",
        ),
        (b'{"port": 8080, "host": "10.0.0.1"}', HOST_REFUSED),
        (b'{"host": "node1"}', HOST_REFUSED),
        (b'{"port": "8080"}', "port must be a whole number, not a JSON string"),
        (b'{"port": true}', "port must be a whole number, not a JSON boolean"),
        (b'{"port": 8080.0}', "not a JSON number with a fraction or exponent"),
        (b'{"port": 8e3}', "not a JSON number with a fraction or exponent"),
        (b'{"port": NaN}', "not a JSON number with a fraction or exponent"),
        (b'{"port": null}', "not a JSON null"),
        (b'{"port": [8080]}', "not a JSON array"),
        (b'{"port": {"n": 8080}}', "not a JSON object"),
        (b'{"port": 0}', "between 1 and 65535; got 0"),
        (b'{"port": -1}', "between 1 and 65535; got -1"),
        (b'{"port": 65536}', "between 1 and 65535; got 65536"),
        (b'{"port": 1, "port": 2}', "names a key twice"),
        (b"{}", "The body has no port"),
        (b"[8080]", "The body is a JSON list, not an object"),
        (b'"8080"', "The body is a JSON str, not an object"),
        (b"8080", "The body is a JSON int, not an object"),
        (b"null", "The body is a JSON NoneType, not an object"),
        (b"", "The body is not JSON"),
        (b"port=8080", "The body is not JSON"),
        (b'{"port": 80', "The body is not JSON"),
        (b'{"port": 8080}\xff', "The body is not JSON"),
        (b'{"port": ' + b"9" * 200 + b"}", "between 1 and 65535"),
        (b'{"port": 8080, "x": "' + b"a" * MAX_BODY + b'"}', "a port report is at most 256"),
        (b" " * 10_000_000, "The body is 10000000 bytes"),
    ],
)
def test_anything_else_is_refused_with_a_sentence(body: bytes, expected: str) -> None:
    with pytest.raises(Refusal) as e:
        parse_port_report(body)
    assert e.value.status == 400
    assert expected in e.value.sentence
    assert e.value.sentence.endswith("."), "a sentence"


def test_many_refused_keys_are_cut_short() -> None:
    body = b"{" + b", ".join(b'"k%d": 1' % i for i in range(12)) + b"}"
    with pytest.raises(Refusal) as e:
        parse_port_report(body)
    assert "and 7 more" in e.value.sentence


class FakeSpawner:
    """Stands in for a JupyterHub Spawner: only what apply_port and own_spawner read."""

    def __init__(self, token: str = "", pending: str | None = "spawn", ready: bool = False):
        self.api_token = token
        self.pending = pending
        self.ready = ready


class Reporting(FakeSpawner):
    def __init__(self, raises: Exception | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.raises = raises
        self.reported: list[int] = []

    def report_port(self, port: int) -> None:
        if self.raises is not None:
            raise self.raises
        self.reported.append(port)


def test_only_a_server_of_the_tokens_owner_is_found() -> None:
    mine, other = FakeSpawner("tok-a"), FakeSpawner("tok-b")
    assert own_spawner([mine, other], "tok-b") is other
    for token in ["tok-c", "", None, "tok-", "tok-aa"]:
        with pytest.raises(Refusal) as e:
            own_spawner([mine, other], token)
        assert (e.value.status, e.value.sentence) == (403, NOT_A_SERVER_TOKEN)


def test_a_stopped_spawner_without_a_token_matches_no_empty_token() -> None:
    with pytest.raises(Refusal):
        own_spawner([FakeSpawner("")], "")


def test_report_port_gets_the_port() -> None:
    s = Reporting()
    apply_port(s, 8080)
    assert s.reported == [8080]


@pytest.mark.parametrize(
    ("raises", "status", "sentence"),
    [
        (LookupError("this server does not report its port"), 404, "does not report its port"),
        (LookupError(), 404, DOES_NOT_REPORT),
        (ValueError("port 22 is not one this job may use"), 400, "port 22 is not one"),
    ],
)
def test_what_report_port_refuses_becomes_a_sentence(
    raises: Exception, status: int, sentence: str
) -> None:
    with pytest.raises(Refusal) as e:
        apply_port(Reporting(raises=raises), 22)
    assert (e.value.status, sentence in e.value.sentence) == (status, True)


@pytest.mark.parametrize(
    ("pending", "ready", "state"),
    [(None, True, "running"), (None, False, "stopped"), ("stop", False, "stop pending")],
)
def test_a_server_that_is_not_starting_takes_no_port(
    pending: str | None, ready: bool, state: str
) -> None:
    s = Reporting(pending=pending, ready=ready)
    with pytest.raises(Refusal) as e:
        apply_port(s, 8080)
    assert e.value.status == 409
    assert f"(it is {state})" in e.value.sentence
    assert s.reported == []


def test_a_spawner_that_neither_reports_nor_is_batchspawner_gets_404() -> None:
    s = FakeSpawner()
    with pytest.raises(Refusal) as e:
        apply_port(s, 8080)
    assert (e.value.status, e.value.sentence) == (404, DOES_NOT_REPORT)
    assert not hasattr(s, "port")


def test_vanilla_batchspawner_gets_only_its_port_and_only_once() -> None:
    batchspawner = pytest.importorskip("batchspawner")
    s = batchspawner.BatchSpawnerRegexStates()
    before = {name: getattr(s, name) for name in s.trait_names(config=True) if name != "port"}
    with pytest.raises(Refusal) as e:
        apply_port(s, 8080)  # not starting yet
    assert e.value.status == 409
    s._spawn_pending = True
    apply_port(s, 8080)
    assert s.port == 8080
    with pytest.raises(Refusal) as e:
        apply_port(s, 9090)
    assert (e.value.status, e.value.sentence, s.port) == (409, ALREADY_REPORTED, 8080)
    assert {
        name: getattr(s, name) for name in s.trait_names(config=True) if name != "port"
    } == before


# Builds JupyterHub's routes exactly as the hub does (JupyterHub.init_handlers, our
# authenticator's handlers first) and names the class that /hub/api/batchspawner reaches.
ROUTE_PROBE = """
import sys, warnings
warnings.simplefilter("ignore")
order = sys.argv[1]
if order == "before":
    import batchspawner
from hub.callback_api import close_batchspawner_hazard
close_batchspawner_hazard()
close_batchspawner_hazard()  # configure() may run twice in one process
if order == "after":
    import batchspawner
from jupyterhub.app import JupyterHub
from tornado import httputil, web
from hub.auth import NativeAuthenticator
app = JupyterHub()
app.authenticator = NativeAuthenticator()
app.init_handlers()
request = httputil.HTTPServerRequest(method="POST", uri="/hub/api/batchspawner")
found = web.Application(app.handlers).find_handler(request).handler_class
ours = [h for h in app.handlers if h[1].__name__ == "PortReportHandler"]
print(found.__module__ + "." + found.__name__, len(ours), flush=True)
import os
os._exit(0)  # skip interpreter teardown: this sandbox's Python has crashed there (SIGSEGV)
"""


@pytest.mark.parametrize("order", ["before", "after", "never"])
@pytest.mark.parametrize("python", [Path(sys.executable), JUPYTERHUB5], ids=["jh6", "jh5"])
def test_the_route_reaches_our_handler_in_any_import_order(python: Path, order: str) -> None:
    if not python.exists():
        pytest.skip(f"{python} is not installed (hub/bootstrap.sh test makes it)")
    done = subprocess.run(
        [str(python), "-c", ROUTE_PROBE, order],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    if order != "never" and "No module named 'batchspawner'" in done.stderr:
        pytest.skip(f"batchspawner is not installed for {python}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hub.callback_api.PortReportHandler", "1"]

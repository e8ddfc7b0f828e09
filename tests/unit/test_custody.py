"""Tests for spawners.custody: the hub checks who listens on a server's port, holds the socket,
and hears of the server's exit at once. Real sockets and processes; the "other account" is
nobody (the tests need root to run a listener as another account and to duplicate its fd).
"""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from spawners.custody import CustodyError, ExitWatcher, listening_socket, take_listening_socket

pytestmark = pytest.mark.unit

NOBODY = pwd.getpwnam("nobody")
root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason=f"needs root to run a listener as nobody (uid {os.geteuid()})"
)

LISTEN = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(120)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY.pw_gid)
    os.setuid(NOBODY.pw_uid)


Listener = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Start a process listening on a port (as nobody by default); killed, by PID, after."""
    started: list[subprocess.Popen[str]] = []

    def start(port: int, preexec: Callable[[], None] | None = as_nobody) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", LISTEN, str(port)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,
            cwd="/",
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "listening\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            assert e.errno == errno.EADDRINUSE
            return False
        return True


@root_only
def test_the_hub_holds_the_port_after_the_server_dies(listener: Listener) -> None:
    port = free_port()
    server = listener(port)
    assert listening_socket(port) is not None

    held = take_listening_socket(server.pid, port, NOBODY.pw_uid)
    try:
        server.kill()
        server.wait()
        # The server is gone, yet its port is not free: nobody else can bind it and answer.
        assert not can_bind(port)
        # A request sent there now is queued, never answered, and never reaches another process.
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.settimeout(0.3)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(TimeoutError):
                c.recv(10)
    finally:
        os.close(held)
    assert can_bind(port), "let go: the port is free again"


@root_only
def test_a_listener_of_another_account_is_refused(listener: Listener) -> None:
    port = free_port()
    server = listener(port)  # as nobody
    with pytest.raises(CustodyError, match=rf"held by uid {NOBODY.pw_uid}, not by the server's"):
        take_listening_socket(server.pid, port, NOBODY.pw_uid - 1)


@root_only
def test_a_listener_that_is_not_the_server_process_is_refused(listener: Listener) -> None:
    """Same account, another process (e.g. a person's own program raced the server to its
    port): not the server, so not routed to."""
    port = free_port()
    listener(port)
    decoy = subprocess.Popen(["sleep", "30"], preexec_fn=as_nobody)
    try:
        with pytest.raises(CustodyError, match="is not the server's"):
            take_listening_socket(decoy.pid, port, NOBODY.pw_uid)
    finally:
        decoy.kill()
        decoy.wait()


def test_nothing_listening_is_refused() -> None:
    with pytest.raises(CustodyError, match="nothing listens on 127.0.0.1:"):
        take_listening_socket(os.getpid(), free_port(), None)


async def test_the_exit_is_heard_at_once() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    heard = asyncio.Event()
    watcher = ExitWatcher(proc.pid, heard.set)
    try:
        await asyncio.sleep(0.2)
        assert not heard.is_set()
        killed = time.monotonic()
        proc.kill()
        await asyncio.wait_for(heard.wait(), timeout=2)
        assert time.monotonic() - killed < 0.5
    finally:
        watcher.close()
        proc.wait()

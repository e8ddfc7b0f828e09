"""Session containment (issue 13): a stopped server leaves nothing behind, and no server can
reach into another's temp files, shared memory, address or process table.

Checked end to end on a real hub with one GPU, using only what any placement backend offers:
the hub's REST API, kernels reached through the proxy, the hub log and /proc. Nothing here looks
at how the local backend does it (cgroups, mount namespaces, sockets it holds), so the same file
can later run against the container and Slurm backends.

The hub's work directory is not under /tmp (tests/harness.py puts it under /var/lib/mlrp-tests):
a server's private /tmp hides whatever the node has there, and test b needs the node's path of
alice's temp directory to be visible from bob's server, as it is in production.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from harness import Hub, pids_of_uid, running_hub
from kernel import Kernel, KernelDied, NoReply

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
GONE_WITHIN = 5.0  # seconds from a stop (or a kill) until every process of the server is gone
ROUTE_GONE_WITHIN = 1.0  # seconds from a server's death until the proxy no longer routes to it
PROXY_PAUSED = 0.3  # seconds the proxy is held still across a server's death (test d)
PIDS_LIMIT = 64

PROFILES = [
    # 3G: its /dev/shm (half the memory limit) takes the 1 GiB of test c.
    {"slug": "cpu", "name": "CPU only", "gpus": 0, "cpus": 1, "memory": "3G"},
    {
        "slug": "gpu1",
        "name": "1 GPU",
        "gpus": 1,
        "cpus": 1,
        "memory": "2G",
        "groups": ["students", "staff"],
    },
    {"slug": "small", "name": "Small memory", "gpus": 0, "cpus": 1, "memory": "512M"},
    {
        "slug": "pids64",
        "name": "Few processes",
        "gpus": 0,
        "cpus": 1,
        "memory": "2G",
        "max_processes": PIDS_LIMIT,
    },
]


@pytest.fixture(scope="module")
def chub() -> Iterator[Hub]:
    """One hub for the whole file: exactly one GPU, the profiles above, alice and bob."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts and setuid()s to them")
    with running_hub(gpus=1, configure=lambda h: h.config.update(profiles=PROFILES)) as h:
        yield h


@pytest.fixture(scope="module")
def tokens(chub: Hub) -> dict[str, str]:
    return {name: chub.user_token(name) for name in ("alice", "bob")}


@pytest.fixture(autouse=True)
def no_servers_left(chub: Hub) -> Iterator[None]:
    """Each test starts with alice and bob stopped and the GPU free, whatever the last one did."""
    yield
    for name in ("alice", "bob"):
        if has_server(chub, name):
            chub.stop_server(name)
    wait_for(lambda: not chub.leases(), 15, "the GPU to be free between tests")


# -- helpers -----------------------------------------------------------------------------------
def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> float:
    """Seconds until `cond()` is true; AssertionError naming `what` after `timeout`."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - start


def has_server(hub: Hub, name: str) -> bool:
    return "" in hub.api("GET", f"/users/{name}").json().get("servers", {})


def start(hub: Hub, name: str, profile: str) -> None:
    r = hub.start_server(name, profile=profile)
    assert r.status_code in (201, 202), f"{name} on {profile}: {r.status_code} {r.text}"


def stop_with(hub: Hub, name: str, token: str) -> None:
    """DELETE the server with `token` (the REST call a person, an admin or the culler makes)."""
    r = hub.api("DELETE", f"/users/{name}/server", token=token)
    assert r.status_code in (202, 204), f"stop of {name}: {r.status_code} {r.text}"


def status_of(hub: Hub, name: str, token: str, timeout: float = 10) -> int:
    r = requests.get(
        f"{hub.url}/user/{name}/api/status",
        headers={"Authorization": f"token {token}"},
        allow_redirects=False,
        timeout=timeout,
    )
    return r.status_code


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie has ended; only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def live_pids_of_uid(uid: int) -> list[int]:
    return [pid for pid in pids_of_uid(uid) if alive(pid)]


def account_uid(hub: Hub, name: str) -> int:
    """The uid of `name`'s Unix account; the hub makes it at the first start."""
    if name not in hub.unix_accounts():
        start(hub, name, "cpu")
        hub.stop_server(name)
    return pwd.getpwnam(hub.unix_accounts()[name]).pw_uid


def shmem_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem line in /proc/meminfo")


def log_lines_since(hub: Hub, offset: int) -> list[str]:
    return hub.log()[offset:].splitlines()


def culler_token(hub: Hub) -> str:
    """The idle culler's own service token, from its process environment."""
    pid = hub.api("GET", "/services").json()["idle-culler"].get("pid")
    assert pid, "the idle culler runs as a hub service"
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"JUPYTERHUB_API_TOKEN="):
            return item.split(b"=", 1)[1].decode()
    raise AssertionError("the idle culler has no JUPYTERHUB_API_TOKEN")


# -- a. stopping a server ends everything it started -------------------------------------------
DETACHED = """
import json, os, subprocess, sys
pids = {}
# 1. a new session, as a "background job" started from a notebook would be
pids["new_session"] = subprocess.Popen(
    ["sleep", "900"], start_new_session=True,
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
).pid
# 2. nohup ... & from a shell that then exits
sh = subprocess.run(
    ["sh", "-c", "nohup sleep 901 >/dev/null 2>&1 & echo $!"],
    capture_output=True, text=True, check=True,
)
pids["nohup"] = int(sh.stdout.strip())
# 3. a classic daemon (fork, setsid, fork, the middle process exits), out of reach of the
# kernel's own clean-up at shutdown, and slow to die: SIGKILL frees its 768 MiB as it exits
DAEMON = '''
import os, time
ready_r, ready_w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    daemon = os.fork()
    if daemon == 0:
        fd = os.open(os.devnull, os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        ballast = b"x" * (768 << 20)
        os.write(ready_w, b"1")
        time.sleep(902)
        os._exit(0)
    os.read(ready_r, 1)
    print(daemon, flush=True)
    os._exit(0)
os.waitpid(middle, 0)
'''
d = subprocess.run([sys.executable, "-c", DAEMON], capture_output=True, text=True, check=True)
pids["daemon"] = int(d.stdout.strip())
print(json.dumps(pids))
"""

STOPPERS = ["own-token", "admin-token", "culler-token", "found-dead"]


@pytest.mark.parametrize("stopper", STOPPERS)
def test_a_stop_ends_every_process_then_frees_the_gpu(
    chub: Hub, tokens: dict[str, str], stopper: str
) -> None:
    """Guarantee 1: however the server is stopped (by its owner, an admin, the idle culler, or
    the hub finding its main process dead), every process it started is gone within seconds,
    detached ones included (new session, nohup, double-forked daemon); only then is its GPU
    lease released (the log says `Released GPU(s)` for alice/), and bob can have the GPU."""
    hub = chub
    log_offset = len(hub.log())
    start(hub, "alice", "gpu1")
    assert hub.leases() == {"0": "alice/"}
    alice_uid = account_uid(hub, "alice")
    # The kernel stays open through the stop: shutting it down first would have ipykernel end
    # its own children, and the stop would have less to do than a real one.
    k = Kernel(hub, "alice", tokens["alice"])
    try:
        pids: dict[str, int] = k.run_json(DETACHED)
        # They run, and as alice: were they to outlive the stop, the checks below would see them.
        for what, pid in pids.items():
            assert alive(pid), f"{what} ({pid}) is not running"
            assert uid_of(pid) == alice_uid, f"{what} ({pid}) does not run as alice's account"

        # The stop runs beside the watch below: the hub answers a DELETE only once the stop is
        # done (if it is quick), and the watch must see what happens meanwhile.
        main_pid = hub.server_pid("alice")
        assert alive(main_pid) and uid_of(main_pid) == alice_uid
        token = {
            "own-token": tokens["alice"],
            "admin-token": hub.admin_token(),
            "culler-token": culler_token(hub),
        }.get(stopper, "")
        stopping: list[Exception] = []

        def run_stop() -> None:
            try:
                if stopper == "found-dead":
                    os.kill(main_pid, signal.SIGKILL)
                else:
                    stop_with(hub, "alice", token)
            except Exception as e:  # re-raised in the test's thread below
                stopping.append(e)

        stopper_thread = threading.Thread(target=run_stop, daemon=True)
        stopped_at = time.monotonic()
        stopper_thread.start()
        while True:
            gpu_held = "0" in hub.leases()  # read first: a process alive after it was alive then
            left = {what: pid for what, pid in pids.items() if alive(pid)}
            if not left:
                break
            assert gpu_held, f"the GPU was freed while alice's {left} still ran"
            assert time.monotonic() - stopped_at < GONE_WITHIN, (
                f"still running {GONE_WITHIN} s after the stop ({stopper}): {left}"
            )
            time.sleep(0.005)
        stopper_thread.join(timeout=30)
        if stopping:
            raise stopping[0]
    finally:
        k.close()
    wait_for(lambda: not has_server(hub, "alice"), 15, "the hub to see alice's server gone")

    # The GPU: bob's start is refused while alice's lease is held and succeeds once it is freed.
    deadline = time.monotonic() + 15
    while True:
        r = hub.api("POST", "/users/bob/server", json={"profile": "gpu1"})
        if r.status_code in (201, 202):
            break
        assert r.status_code == 400 and "in use" in r.text, f"bob's start: {r.status_code} {r.text}"
        assert time.monotonic() < deadline, f"alice's GPU never freed: {hub.leases()}"
        time.sleep(0.2)
    hub.wait_ready("bob")
    assert hub.leases() == {"0": "bob/"}
    bob_env = Path(f"/proc/{hub.server_pid('bob')}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=0" in bob_env, "bob's server got the GPU alice had"

    lines = log_lines_since(hub, log_offset)
    released = [i for i, line in enumerate(lines) if re.search(r"Released GPU\(s\).*alice/", line)]
    leased = [i for i, line in enumerate(lines) if re.search(r"Leased GPU\(s\).*bob/", line)]
    assert released, "no `Released GPU(s)` line for alice/ in the hub log:\n" + "\n".join(
        lines[-40:]
    )
    assert not leased or released[0] < leased[-1], "bob's lease was logged before alice's release"
    assert not any("stay fenced off" in line for line in lines), "\n".join(lines[-40:])
    hub.stop_server("bob")


# -- b. private temp directories and a private umask ------------------------------------------
def mount_root(pid: int, mount_point: str) -> Path:
    """The node's path of the directory mounted at `mount_point` in `pid`'s mount namespace
    (mountinfo's 4th field: the root of the mount within its filesystem, here the node's /)."""
    found = None
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == mount_point:
            found = fields[3]  # the last one is on top
    assert found is not None, f"nothing is mounted at {mount_point} for {pid}: no private temp"
    return Path(found.replace("\\040", " "))


def test_b_temp_files_are_private_and_umask_is_077(chub: Hub, tokens: dict[str, str]) -> None:
    """Guarantee 2: each server has its own /tmp and /var/tmp, in a 0700 directory of its owner
    that nobody else can list or write, deleted when the server stops; and what people create
    is theirs alone (umask 077: files 0600, directories 0700), also from a subprocess."""
    hub = chub
    secret = f"secret-{secrets.token_hex(6)}"
    start(hub, "alice", "cpu")
    start(hub, "bob", "cpu")
    alice_uid = account_uid(hub, "alice")
    with Kernel(hub, "alice", tokens["alice"]) as ka, Kernel(hub, "bob", tokens["bob"]) as kb:
        mine = ka.run_json(
            f"""
import json, os, subprocess
for d in ("/tmp", "/var/tmp"):
    with open(os.path.join(d, {secret!r}), "w") as f:
        f.write("alice's")
home = os.path.expanduser("~")
with open(os.path.join(home, {secret!r} + ".txt"), "w") as f:
    f.write("x")
os.mkdir(os.path.join(home, {secret!r} + ".d"))
subprocess.run(["touch", os.path.join(home, {secret!r} + ".touched")], check=True)
mask = os.umask(0); os.umask(mask)
mode = lambda p: oct(os.stat(os.path.join(home, p)).st_mode & 0o777)
print(json.dumps({{
    "umask": oct(mask),
    "file": mode({secret!r} + ".txt"),
    "dir": mode({secret!r} + ".d"),
    "touched": mode({secret!r} + ".touched"),
    "sees_own": [os.path.exists(os.path.join(d, {secret!r})) for d in ("/tmp", "/var/tmp")],
}}))
"""
        )
        assert mine["sees_own"] == [True, True]
        seen = kb.run_json(
            f"""
import json, os
print(json.dumps({{
    d: [os.path.exists(os.path.join(d, {secret!r})), {secret!r} in os.listdir(d)]
    for d in ("/tmp", "/var/tmp")
}}))
"""
        )
        assert seen == {"/tmp": [False, False], "/var/tmp": [False, False]}, (
            f"bob sees alice's temp files: {seen}"
        )

        # Where alice's /tmp lives on the node: only she may enter it.
        host_tmp = mount_root(hub.server_pid("alice"), "/tmp")
        assert (host_tmp / secret).read_text() == "alice's", f"{host_tmp} is not alice's /tmp"
        st = host_tmp.stat()
        assert st.st_uid == alice_uid and st.st_mode & 0o777 == 0o700, (
            f"{host_tmp}: uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}"
        )
        attempts = kb.run_json(
            f"""
import json, os
result = {{}}
for what, act in (("list", lambda: os.listdir({str(host_tmp)!r})),
                  ("create", lambda: open({str(host_tmp / "bob-was-here")!r}, "w").close()),
                  ("read", lambda: open({str(host_tmp / secret)!r}).read())):
    try:
        act()
        result[what] = "allowed"
    except OSError as e:
        result[what] = type(e).__name__
print(json.dumps(result))
"""
        )
        assert attempts == {
            "list": "PermissionError",
            "create": "PermissionError",
            "read": "PermissionError",
        }, f"bob on alice's temp directory {host_tmp}: {attempts}"
        assert not (host_tmp / "bob-was-here").exists()

        assert mine["umask"] == "0o77", mine
        assert (mine["file"], mine["dir"], mine["touched"]) == ("0o600", "0o700", "0o600"), mine

    hub.stop_server("alice")
    wait_for(lambda: not host_tmp.exists(), GONE_WITHIN, f"{host_tmp} to be removed")
    assert has_server(hub, "bob")
    assert status_of(hub, "bob", tokens["bob"]) == 200, "stopping alice left bob's server alone"


# -- c. a private /dev/shm, sized and charged to the server's memory ---------------------------
def shm_writer(name: str, total: int, chunk: int) -> str:
    return f"""
import errno, json, os
written, error = 0, None
buf = bytes({chunk})
try:
    with open(os.path.join("/dev/shm", {name!r}), "wb", buffering=0) as f:
        while written < {total}:
            written += f.write(buf)
except OSError as e:
    error = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps({{"written": written, "error": error}}))
"""


@pytest.fixture()
def shm_name() -> Iterator[str]:
    """A file name for /dev/shm; removed from the node's /dev/shm afterwards, should a server
    have written it there (no private /dev/shm)."""
    name = f"mlrp-test-{secrets.token_hex(6)}"
    yield name
    Path("/dev/shm", name).unlink(missing_ok=True)


def test_c_shared_memory_goes_with_the_server(
    chub: Hub, tokens: dict[str, str], shm_name: str
) -> None:
    """Guarantee 2: /dev/shm is the server's own tmpfs: 1 GiB written there is released when the
    server stops (the node's Shmem drops), not left on the node's /dev/shm."""
    hub = chub
    start(hub, "alice", "cpu")
    before = shmem_bytes()
    with Kernel(hub, "alice", tokens["alice"]) as k:
        got = k.run_json(shm_writer(shm_name, 1024 * MiB, 64 * MiB), timeout=120)
    assert got == {"written": 1024 * MiB, "error": None}, got
    held = shmem_bytes()
    assert held - before >= 900 * MiB, f"Shmem rose by {(held - before) // MiB} MiB only"
    stopped_at = time.monotonic()
    hub.stop_server("alice")
    try:
        wait_for(lambda: held - shmem_bytes() >= 900 * MiB, GONE_WITHIN, "Shmem to drop", 0.1)
    except AssertionError:
        raise AssertionError(
            f"{(held - shmem_bytes()) // MiB} MiB of alice's 1 GiB in /dev/shm freed "
            f"{time.monotonic() - stopped_at:.1f} s after her server stopped"
        ) from None


def test_c_shared_memory_is_bounded_by_the_profile(
    chub: Hub, tokens: dict[str, str], shm_name: str
) -> None:
    """Guarantee 2: on a 512M profile, /dev/shm is a tmpfs of at most 512M and cannot take
    1 GiB: the write is refused (ENOSPC/ENOMEM) or only alice's own kernel/server dies; bob's
    server carries on. (The local backend sizes /dev/shm at half the memory limit, so there
    the write is refused and her server lives on.)"""
    hub = chub
    start(hub, "bob", "cpu")
    bob_pid = hub.server_pid("bob")
    start(hub, "alice", "small")
    k = Kernel(hub, "alice", tokens["alice"])
    try:
        size = k.run_json("import os; v = os.statvfs('/dev/shm'); print(v.f_blocks * v.f_frsize)")
        assert 0 < size <= 512 * MiB, f"alice's /dev/shm holds {size // MiB} MiB, not 512M"
        try:
            got = k.run_json(shm_writer(shm_name, 1024 * MiB, 8 * MiB), timeout=60)
        except KernelDied as e:  # the memory limit ended her kernel or server
            got = {"died": str(e)}
        except NoReply as e:  # ...without a word on the channel
            got = {"no reply": str(e)}
    finally:
        k.close()
    if "written" in got:
        assert got["written"] < 1024 * MiB, f"1 GiB fit in /dev/shm on a 512M profile: {got}"
        assert got["error"] in ("ENOSPC", "ENOMEM"), got
    assert hub.server_pid("bob") == bob_pid
    assert status_of(hub, "bob", tokens["bob"]) == 200, f"bob's server hurt by alice's {got}"


# -- d. a dead server's port cannot be taken over ----------------------------------------------
LISTENER = """
import socket, sys, time
port = int(sys.argv[1])
print("started", flush=True)
deadline = time.monotonic() + 60
while True:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        break
    except OSError:
        s.close()
        if time.monotonic() > deadline:
            print("never bound", flush=True)
            sys.exit(0)
s.listen(64)
print("bound", time.monotonic(), flush=True)
while True:
    conn, _ = s.accept()
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    print("request", data.split(b"\\r\\n", 1)[0].decode(errors="replace"), flush=True)
    body = b'{"started": "alice", "kernels": 0}'
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                 + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
    conn.close()
"""


@dataclass
class Listener:
    """LISTENER, run as another account; its output lines with the time each arrived."""

    proc: subprocess.Popen[str]
    lines: list[tuple[float, str]] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.strip()))

    def saw(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, line) for t, line in self.lines if line.startswith(prefix)]


@pytest.fixture()
def listener_as_alice(chub: Hub) -> Iterator[Callable[[int], Listener]]:
    started: list[Listener] = []
    uid = account_uid(chub, "alice")

    def run(port: int) -> Listener:
        proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(port)],
            user=uid,
            group=uid,  # the account's user group has the same number (useradd --user-group)
            extra_groups=[],
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        listener = Listener(proc)
        started.append(listener)
        threading.Thread(target=listener.read, daemon=True).start()
        wait_for(lambda: listener.saw("started"), 10, "alice's listener to start")
        assert uid_of(proc.pid) == uid != 0
        return listener

    yield run
    for listener in started:
        if listener.proc.poll() is None:
            os.kill(listener.proc.pid, signal.SIGKILL)
        listener.proc.wait(timeout=10)


def proxy_pid(hub: Hub) -> int:
    """The hub's configurable-http-proxy, from the pid file the hub writes for it."""
    pid = int((hub.data_dir / "proxy.pid").read_text().strip())
    assert b"configurable-http-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


def bob_routed(hub: Hub) -> bool:
    routes = hub.api("GET", "/proxy").json()
    return any(spec.rstrip("/").endswith("/user/bob") for spec in routes)


@dataclass
class Hammer:
    """Threads sending bob's requests back to back through the proxy, as his open browser tabs
    would: each answer (status, or the error's name) with the time its request was sent. The
    window between a server's death and its route's removal may be milliseconds; a steady
    stream of requests is what finds it."""

    hub: Hub
    token: str
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _send(self) -> None:
        while not self.done.is_set():
            sent = time.monotonic()
            try:
                answer: int | str = status_of(self.hub, "bob", self.token, timeout=1)
            except requests.RequestException as e:
                answer = type(e).__name__
            self.answers.append((sent, answer))

    def start(self, threads: int = 4) -> None:
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(timeout=10)


def test_d_a_dead_servers_port_cannot_be_taken_over(
    chub: Hub, tokens: dict[str, str], listener_as_alice: Callable[[int], Listener]
) -> None:
    """Guarantee 4: when bob's server dies, its route is gone within a second, and until then
    the port stays out of reach: alice, racing to bind it, never receives a request meant for
    bob; the hub answers them. Once the route is gone, the port is free again."""
    hub = chub
    start(hub, "bob", "cpu")
    port, pid = hub.server_port("bob"), hub.server_pid("bob")
    listener = listener_as_alice(port)
    assert bob_routed(hub)
    hammer = Hammer(hub, tokens["bob"])
    hammer.start()
    try:
        wait_for(
            lambda: sum(status == 200 for _, status in hammer.answers) >= 10,
            10,
            f"bob's server to answer: {hammer.answers[-5:]}",
        )
        assert not listener.saw("bound"), "alice bound the port of bob's running server"

        # The proxy is paused across the kill, so bob's route surely outlives his server for
        # PROXY_PAUSED seconds, however quick the hub: alice must not get the port meanwhile.
        proxy = proxy_pid(hub)
        os.kill(proxy, signal.SIGSTOP)
        try:
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            time.sleep(PROXY_PAUSED)
            bound_while_routed = listener.saw("bound")
        finally:
            os.kill(proxy, signal.SIGCONT)
        route_gone_at: float | None = None
        routed_at = killed_at  # when a look at the routes, still showing bob's, was sent
        while time.monotonic() - killed_at < 2:
            asked = time.monotonic()
            if route_gone_at is None:
                if bob_routed(hub):
                    routed_at = asked
                else:
                    route_gone_at = time.monotonic() - killed_at
            time.sleep(0.002 if route_gone_at is None else 0.05)
    finally:
        hammer.stop()
    after = sorted((t - killed_at, status) for t, status in hammer.answers if t >= killed_at)

    assert not bound_while_routed, (
        f"alice bound bob's port {bound_while_routed} while the proxy still routed there"
    )
    assert not listener.saw("request"), f"alice's listener got bob's requests: {listener.lines}"
    assert route_gone_at is not None and route_gone_at <= ROUTE_GONE_WITHIN, (
        f"bob's route still there {route_gone_at or '2+'} s after his server died"
    )
    # The port itself, however few requests came in between: alice bound it before a look at
    # the routes that still found bob's was even sent, so she could have had his requests.
    for _, line in listener.saw("bound"):
        bound_at = float(line.split()[1])
        assert bound_at > routed_at, (
            f"alice bound bob's port {bound_at - killed_at:.3f} s after the kill, while his "
            f"route was still there ({routed_at - killed_at:.3f} s after the kill)"
        )
    assert all(status != 200 for _, status in after), f"a 200 after the kill: {after}"
    late = [(t, status) for t, status in after if t >= ROUTE_GONE_WITHIN]
    assert late and all(isinstance(status, int) for _, status in late), (
        f"the hub must answer for the dead server: {after}"
    )

    # Once the hub has let go, the port is an ordinary free port: alice's loop gets it (so it
    # really was trying all along), and requests for bob still never reach her.
    wait_for(lambda: not has_server(hub, "bob"), 10, "the hub to see bob's server gone")
    wait_for(lambda: listener.saw("bound"), 10, "alice to bind the freed port")
    assert status_of(hub, "bob", tokens["bob"]) != 200
    time.sleep(0.2)
    assert not listener.saw("request"), f"alice's listener got bob's requests: {listener.lines}"


# -- e. a fork bomb stays in its own server ----------------------------------------------------
FORK_BOMB = """
import errno, json, os, time
forks, error, started = 0, None, time.monotonic()
while forks < 2000 and time.monotonic() - started < 10:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        os.setsid()  # out of the kernel's process group, which its shutdown would kill
        fd = os.open(os.devnull, os.O_RDWR)
        for i in (0, 1, 2):
            os.dup2(fd, i)
        time.sleep(30)
        os._exit(0)
    forks += 1
print(json.dumps({"forks": forks, "error": error}))
"""


THREAD_BOMB = """
import json, threading
stop, started, error = threading.Event(), [], None
while len(started) < 500:
    t = threading.Thread(target=stop.wait)
    try:
        t.start()
    except RuntimeError:  # "can't start new thread": the limit counts threads too
        error = "RuntimeError"
        break
    started.append(t)
stop.set()
for t in started:
    t.join()
print(json.dumps({"threads": len(started), "error": error}))
"""


def test_e_a_fork_bomb_hits_the_profiles_process_limit(chub: Hub, tokens: dict[str, str]) -> None:
    """Guarantee 3: on a profile with max_processes 64, threads count against the limit, a fork
    bomb gets no further than that (fork fails with EAGAIN), bob can start and use his server
    meanwhile, and stopping alice's server takes the whole bombed server down."""
    hub = chub
    start(hub, "alice", "pids64")
    alice_uid = account_uid(hub, "alice")
    with Kernel(hub, "alice", tokens["alice"]) as k:
        threads = k.run_json(THREAD_BOMB, timeout=60)
        assert threads["error"] == "RuntimeError", f"threads are not counted: {threads}"
        assert 0 < threads["threads"] < PIDS_LIMIT, threads
        got = k.run_json(
            f"""
import json, subprocess, sys
r = subprocess.run([sys.executable, "-c", {FORK_BOMB!r}], capture_output=True, text=True)
print(r.stdout.strip() or json.dumps({{"rc": r.returncode, "stderr": r.stderr[-500:]}}))
""",
            timeout=90,
        )
        eagain = errno.errorcode[errno.EAGAIN]
        assert got.get("error") == eagain, f"the fork bomb was not stopped: {got}"
        assert 0 < got["forks"] <= PIDS_LIMIT, got
        assert len(live_pids_of_uid(alice_uid)) >= got["forks"]

        start(hub, "bob", "cpu")
        assert status_of(hub, "bob", tokens["bob"]) == 200
        bombed = len(live_pids_of_uid(alice_uid))
        assert bombed >= got["forks"], f"{bombed} processes: the bomb was over before bob came"

    stopped_at = time.monotonic()
    hub.stop_server("alice")
    while left := live_pids_of_uid(alice_uid):
        assert time.monotonic() - stopped_at < GONE_WITHIN, (
            f"{len(left)} processes of alice's still there {GONE_WITHIN} s after the stop"
        )
        time.sleep(0.05)

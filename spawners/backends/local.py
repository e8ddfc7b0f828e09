"""Local placement: the server runs on the hub's node as the user's own Unix account.

Reuses JupyterHub's LocalProcessSpawner for the process mechanics (Popen with setuid, signals,
pid-based poll that survives a hub restart) and adds what it lacks: GPU leases with
CUDA_VISIBLE_DEVICES, one Unix account per hub user, cgroup limits, a log file per server, and
readiness by watching the port (returning the moment the server listens instead of letting the
hub poll with back-off, and failing fast with the log's tail when the process dies).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from jupyterhub.utils import random_port
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Enum, Float, Int, List, Unicode, default

from images.compat import Node, host_platform
from spawners.accounts import server_tag
from spawners.affinity import Placement, placer_for, preexec_pin, thread_count
from spawners.backends.base import (
    Backend,
    Capacity,
    Emit,
    PlacedServer,
    Poll,
    log_tail,
    server_account,
)
from spawners.cgroups import (
    CgroupSupport,
    KillSupport,
    Limits,
    ServerCgroup,
    probe,
    probe_fence,
    probe_kill,
)
from spawners.custody import CustodyError, ExitWatcher, take_listening_socket
from spawners.errors import PlacementError
from spawners.gpus import GPUAllocator, Inventory, NoFreeGPUs, load_inventory
from spawners.isolation import PrivateTmp, private_tmp_works, shm_size
from spawners.profiles import DISPLAY_ARGS, Profile, SpawnRequest, idle_args
from spawners.records import Checkpoint, held_owner, held_tag

if TYPE_CHECKING:
    from spawners.platform import Platform
    from spawners.spawner import MLRPSpawner

# Readiness checks: (shortest step, longest step, share of the time waited so far), while CPUs
# are free and while more tasks want one than there are (see _wait_listening).
PORT_CHECK_STEPS = {False: (0.02, 0.25, 0.01), True: (0.1, 1.0, 0.05)}


class LocalServerSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with the launch spec handed in by the backend (no config of its own)."""

    unix_name = Unicode(help="Account the server runs as; empty = the hub's own account.")
    launch_env = Dict(help="Complete environment of the server process.")
    launch_args = List(Unicode(), help="Arguments after cmd.")
    root_steps = List(
        AnyTrait(),
        help="Callables run in the child as root, in order, before it drops to unix_name "
        "(join the cgroup, make the mount namespace).",
    )
    umask = Int(0o077, help="umask of the server and everything it starts")

    async def start(self) -> tuple[str, int]:
        """LocalProcessSpawner.start, with the fork moved off the hub's event loop.

        preexec_fn forces a full fork(), ~80 ms under load; done inline it stalls every other
        request to the hub while 20 people start at once.
        """
        cmd = [*self.cmd, *self.get_args()]
        self.log.info("Spawning %s as %s", " ".join(cmd), self.unix_name or "the hub's account")
        kwargs: dict[str, Any] = {
            "preexec_fn": self.make_preexec_fn(self.user.name),
            "start_new_session": True,  # signals to the hub are not forwarded to servers
            **self.popen_kwargs,
            "env": self.get_env(),
        }
        self.proc = await asyncio.to_thread(lambda: subprocess.Popen(cmd, **kwargs))
        self.pid = self.proc.pid
        return (self.ip, self.port)

    def get_env(self) -> dict[str, str]:
        return dict(self.launch_env)

    def get_args(self) -> list[str]:
        return list(self.launch_args)

    def make_preexec_fn(self, name: str) -> Any:
        setuid = set_user_setuid(self.unix_name) if self.unix_name else None
        steps: tuple[Callable[[], None], ...] = tuple(cast(list[Any], self.root_steps))
        mask = self.umask

        def preexec() -> None:
            # A hub started as a shell's background job ignores SIGINT, and an ignored signal
            # survives exec: the server would then sit out JupyterHub's SIGINT at every stop
            # (its interrupt_timeout) until SIGTERM. It gets the default back.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for step in steps:
                step()  # as root, before dropping privileges
            os.umask(mask)
            if setuid is not None:
                setuid()
            else:
                os.chdir(os.path.expanduser("~"))

        return preexec


def _listening(sock: socket.socket, port: int) -> bool:
    """Does something accept connections on 127.0.0.1:port? Asked with `sock`, non-blocking.

    A bare connect, not asyncio.open_connection: the readiness loop asks hundreds of times per
    spawn (20 servers starting at once: thousands a second), and open_connection builds a
    task, transport, protocol and streams each time, ~5x the CPU. The caller reuses one socket
    for all checks of a spawn (Linux lets a refused TCP socket connect again), which halves
    the cost again. On loopback the answer (refused, or connected) is there as soon as the
    first connect returns EINPROGRESS, so a second connect reads it; a late answer (busy
    kernel, full listen backlog) is read by the next check.
    """
    address = ("127.0.0.1", port)
    err = sock.connect_ex(address)
    if err == errno.EINPROGRESS:
        err = sock.connect_ex(address)
    return err in (0, errno.EISCONN)  # else ECONNREFUSED (nothing yet) or EALREADY (no answer)


class _RunQueue:
    """Whether more tasks want a CPU right now than there are CPUs: the 4th field of
    /proc/loadavg counts the runnable tasks (read with pread on one open file, ~2 us)."""

    def __init__(self) -> None:
        try:
            self._fd = os.open("/proc/loadavg", os.O_RDONLY)
        except OSError:
            self._fd = -1  # never oversubscribed, then
        self._cpus = os.cpu_count() or 1

    def oversubscribed(self) -> bool:
        try:
            return int(os.pread(self._fd, 64, 0).split()[3].split(b"/")[0]) > self._cpus
        except (OSError, ValueError, IndexError):
            return False

    def __enter__(self) -> _RunQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)


# Read by OpenMP (and so PyTorch), MKL, OpenBLAS, NumExpr, Apple Accelerate and Rust's rayon;
# Python 3.13+ reads PYTHON_CPU_COUNT for os.cpu_count() (and multiprocessing's pool sizes).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",
    "PYTHON_CPU_COUNT",
)


def thread_env(cpus: float | None, node_cpus: int) -> dict[str, str]:
    """Thread counts for numerical libraries from the profile's CPU limit: by default they start
    one thread per host core, and on a shared 64-core node a 2-CPU server would then run 64
    threads in 2 CPUs' time. Capped at the node's CPUs. No limit: the libraries' defaults."""
    count = thread_count(cpus, node_cpus)
    if count is None:
        return {}
    return dict.fromkeys(THREAD_VARIABLES, str(count))


def display_env(cpus: float | None, memory_bytes: int | None) -> dict[str, str]:
    """The limits JupyterLab's resource display (jupyter-resource-usage) shows: MEM_LIMIT in
    bytes and CPU_LIMIT in CPUs, the variables JupyterHub's own spawners set. Unset: no limit
    (the display then shows use alone)."""
    env = {}
    if memory_bytes is not None:
        env["MEM_LIMIT"] = str(memory_bytes)
    if cpus is not None:
        env["CPU_LIMIT"] = repr(float(cpus))
    return env


class LocalBackend(Backend):
    """Servers on the hub's own node. Owns the node's GPU allocator, what the node allows for
    containment (cgroups, mount namespaces), and the sweep of GPUs held for leftovers."""

    name = "local"

    gpu_source = Enum(
        ["auto", "nvml", "config"],
        "auto",
        config=True,
        help="Where the node's GPUs come from: auto (NVML if present, else gpu_devices), nvml "
        "(required) or config (gpu_devices only).",
    )
    gpu_devices = List(
        Unicode(),
        config=True,
        help="GPU ids or UUIDs used when NVML is absent or gpu_source is 'config'. "
        "Example: ['0', '1', '2', '3'].",
    )
    enforce_limits = Bool(
        True,
        config=True,
        help="Enforce profile CPU and memory limits with cgroups where the node allows it.",
    )
    cgroup_root = Unicode(
        "/sys/fs/cgroup",
        config=True,
        help="Where the cgroup filesystem is mounted (v1: one directory per controller below "
        "it; v2: the unified hierarchy). Servers' groups are made under <root>/.../mlrp/.",
    )
    private_tmp = Bool(
        True,
        config=True,
        help="Give each server its own /tmp, /var/tmp and /dev/shm (a mount namespace; needs "
        "root), removed when it stops. False: servers share the node's, with TMPDIR pointing "
        "to a private directory.",
    )
    tmp_dir = Unicode(
        "/var/lib/mlrp/tmp",
        config=True,
        help="Where servers' private temp directories live on disk (root-only, 0700).",
    )
    kill_timeout = Float(
        10.0,
        config=True,
        help="Seconds a stop waits for every process of the server to end (they are sent "
        "SIGKILL through its cgroup). Processes still there after that keep the server's GPUs "
        "held, and the hub log names them.",
    )

    @default("node_platform")
    def _this_host(self) -> str:
        return host_platform()

    def node(self) -> Node:
        """This host: the driver NVML reported, else `nvidia_driver` (gpus.driver); without
        either, a node with GPUs listed by hand has a driver nobody told us, one with no GPU at
        all has none."""
        if self.nvidia_driver.strip():
            return super().node()
        inventory = self.allocator.inventory
        if inventory.driver:
            return Node(self.node_platform, inventory.driver)
        return Node(self.node_platform, None, driver_known=inventory.source == "none")

    def __init__(self, platform: Platform, **kwargs: Any) -> None:
        super().__init__(platform, **kwargs)
        inventory = load_inventory(self.gpu_source, self.gpu_devices)
        self.allocator = GPUAllocator(platform.records, inventory)
        self.cgroup_root_path = root = Path(self.cgroup_root)
        self.cgroups = (
            probe(root) if self.enforce_limits else CgroupSupport(False, "none", "disabled")
        )
        self.containment = (
            probe_kill(root)
            if self.enforce_limits
            else KillSupport(False, "none", "cgroups are disabled (enforce_limits)")
        )
        self.private_mounts, mounts_detail = (
            private_tmp_works() if self.private_tmp else (False, "disabled (private_tmp)")
        )
        self.tmp_root = Path(self.tmp_dir)
        self.log.info(
            "MLRP local placement: %d GPU(s) from %s, accounts=%s, limits: %s",
            len(inventory.gpus),
            inventory.source,
            platform.accounts_mode,
            self.cgroups.detail,
        )
        _log_fence(self.log, inventory, root if self.enforce_limits else None)
        _log_containment(self.log, self.containment, mounts_detail)
        self.sweep_held()

    # -- capacity & fail-fast ----------------------------------------------------------------
    def capacity(self, profile: Profile) -> Capacity:
        self.sweep_held()
        alloc = self.allocator
        return Capacity(
            gpus_total=alloc.total,
            gpus_free=len(alloc.free()),
            limits_enforced=self.cgroups.enforced,
            limits_note=self.cgroups.detail,
        )

    def precheck(self, request: SpawnRequest) -> None:
        if request.gpus:
            self.sweep_held()
        try:
            self.allocator.check(request.gpus)
        except NoFreeGPUs as e:
            raise PlacementError(str(e), reason="no-gpus") from None

    def server(self, spawner: MLRPSpawner) -> LocalServer:
        return LocalServer(self, spawner)

    def sweep_held(self) -> list[str]:
        """Free GPUs kept for stopped servers whose leftover processes have ended since.

        A stop that cannot kill every process of a server keeps its GPUs under a hold
        (:func:`held_owner`) instead of handing them to the next person. Called before GPUs
        are counted or leased, so a hold lasts exactly as long as its processes.
        """
        freed: list[str] = []
        for owner in {lease.owner for lease in self.allocator.leases()}:
            tag = held_tag(owner)
            if tag is None:
                continue
            enforced = self.containment.enforced
            group = ServerCgroup.find(tag, self.cgroup_root_path) if enforced else None
            left = group.pids() if group is not None else []
            if left:
                continue
            if group is not None:
                group.remove()
            gpus = self.allocator.release(owner)
            freed.extend(gpus)
            self.log.warning(
                "Released GPU(s) %s held for server %s: its leftover processes are gone now",
                ",".join(gpus),
                tag,
            )
        return freed

    # -- reconciliation ----------------------------------------------------------------------
    async def clean(self, placement: Checkpoint) -> str:
        """A server the hub no longer runs (it was killed mid-start): end its processes through
        its cgroup, then free its GPUs, CPUs and temp files, as a stop would have."""
        server = LocalServer(self, _Orphan(placement.owner))
        server.load_holdings(placement.state)
        if server.cgroup is None:
            _kill_own_process(placement.state, self.log)
        await server.teardown()
        return "ended its processes and freed what it held"

    async def reconcile(self, live_owners: set[str]) -> list[str]:
        self.sweep_held()
        stale = self.allocator.release_all_except(live_owners)
        return [
            f"freed GPU {lease.device} held by {lease.owner}, which has no server"
            for lease in stale
        ]

    def forget(self, owner: str) -> list[str]:
        """Free GPUs `owner` holds though it has no placed server (state lost)."""
        return self.allocator.release(owner)


def _kill_own_process(state: dict[str, Any], log: logging.Logger) -> None:
    """Without a cgroup, the checkpointed server's main process is found by pid: killed only
    if that pid still runs as the server's account (a pid is reused once the process ends)."""
    pid, uid = state.get("pid"), state.get("uid")
    if not pid:
        return
    try:
        owner_uid = os.stat(f"/proc/{int(pid)}").st_uid
    except OSError:
        return  # gone
    if uid is not None and owner_uid != uid:
        return
    try:
        os.kill(int(pid), signal.SIGKILL)
        log.info("Killed process %s of a server the hub no longer runs", pid)
    except OSError:
        pass


@dataclass
class _Orphan:
    """Stands in for the spawner of a checkpointed server the hub no longer knows: what
    LocalServer.teardown reads of it (owner, log, name)."""

    owner: str
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))
    name: str = ""


class LocalServer(PlacedServer):
    backend: LocalBackend

    def __init__(self, backend: LocalBackend, spawner: MLRPSpawner | _Orphan) -> None:
        super().__init__(backend, spawner)  # type: ignore[arg-type]  # an _Orphan only tears down
        self.child: LocalServerSpawner | None = None
        self.leased: list[str] = []
        self.unix_name = ""
        self.uid: int | None = None  # the server's account; None in developer mode
        self.tag = ""  # names this server's cgroup, temp directory and log file (server_tag)
        self.cgroup: ServerCgroup | None = None
        self.tmp: PrivateTmp | None = None
        self.port_fd = -1  # the hub's duplicate of the server's listening socket (custody)
        self.watcher: ExitWatcher | None = None
        self.pinned: Placement | None = None  # the CPUs the server runs on (spawners.affinity)
        self._teardown: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def owner(self) -> str:
        return self.spawner.owner

    @property
    def gpus(self) -> list[str]:
        return list(self.leased)

    @property
    def url(self) -> str | None:
        port = self.child.port if self.child is not None else 0
        return f"http://127.0.0.1:{port}" if port else None

    async def start(self, request: SpawnRequest, emit: Emit) -> str:
        p, b = self.platform, self.backend
        if request.gpus:
            try:
                self.leased = b.allocator.lease(self.owner, request.gpus)
            except NoFreeGPUs as e:
                raise PlacementError(str(e), reason="no-gpus") from None
            await emit(20, f"Leased GPU {', '.join(self.leased)} on this server.")
        account = await server_account(self, emit)
        self.unix_name = account.name if p.multi_user else ""
        self.uid = account.uid if p.multi_user else None
        self.tag = server_tag(account.name, self.spawner.name or "")
        self._make_cgroup(request)
        memory = request.profile.memory_bytes
        self.tmp = PrivateTmp(b.tmp_root, self.tag, account.uid, account.gid, shm_size(memory))
        await asyncio.to_thread(self.tmp.prepare)  # may delete a large leftover tree
        steps = [self.cgroup.preexec_join()] if self.cgroup else []
        if b.private_mounts:
            steps.append(self.tmp.preexec_mounts())
        placer = placer_for(b)
        self.pinned = placer.place(self.owner, request.profile.cpus)
        if self.pinned is not None:
            steps.append(preexec_pin(self.pinned.cpus))
            cpus = ",".join(map(str, self.pinned.cpus))
            self.spawner.log.info("Server %s runs on CPU(s) %s", self.owner, cpus)

        port = random_port()
        sp = self.spawner
        sp.port = port
        env = sp.get_env()
        env.update(self._gpu_env())
        env.update(thread_env(request.profile.cpus, len(placer.node)))
        env.update(display_env(request.profile.cpus, memory))
        env.update(HOME=str(account.home), USER=account.name, LOGNAME=account.name)
        env.setdefault("SHELL", "/bin/bash")
        if not b.private_mounts:
            env.update(self.tmp.env())
        log_path = p.log_dir / f"{self.tag}.log"
        self.child = child = LocalServerSpawner(
            user=sp.user,
            hub=sp.hub,
            orm_spawner=sp.orm_spawner,  # for .name and log names only
            unix_name=self.unix_name,
            launch_env=env,
            launch_args=[*sp.get_args(), *idle_args(request.profile.idle_timeout), *DISPLAY_ARGS],
            cmd=[str(Path(request.profile.image_env) / "bin" / "jupyterhub-singleuser")],
            root_steps=steps,
            umask=p.umask,
            port=port,
            ip="127.0.0.1",
        )
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            child.popen_kwargs = {"stdout": fd, "stderr": fd}
            await child.start()
        finally:
            os.close(fd)
        await self.spawner.checkpoint()  # a hub killed from here on finds the process again
        await emit(50, f"JupyterLab started (pid {child.pid}); waiting for it to listen.")
        await self._wait_listening(child, port, log_path)
        self._take_port(child.pid, port)
        self._watch(child.pid)
        await emit(90, "JupyterLab is listening.")
        return f"http://127.0.0.1:{port}"

    def _take_port(self, pid: int, port: int) -> None:
        """Check the port is the server's and hold on to it (spawners.custody)."""
        try:
            self.port_fd = take_listening_socket(pid, port, self.uid)
        except CustodyError as e:
            raise PlacementError(
                "Your server started, but another program answered on its address, so you "
                "were not sent there. Try again; if it happens again, tell your administrator.",
                reason="port",
                detail=f"{self.owner}: {e}",
                status_code=500,
            ) from None
        except OSError as e:
            self.spawner.log.warning(
                "Cannot hold the port of %s (%s): after a crash, another account could answer "
                "on it until the route is removed",
                self.owner,
                e,
            )

    def _watch(self, pid: int) -> None:
        """Have the hub notice the server's exit at once, so its route goes at once."""
        try:
            self.watcher = ExitWatcher(pid, self._exited)
        except OSError:
            pass  # gone already: the next poll sees it

    def _exited(self) -> None:
        if getattr(self.spawner, "_stop_pending", False):
            return  # a stop is under way; it removes the route itself
        self.spawner.log.warning("Server of %s exited; removing its route", self.owner)
        # poll_and_notify runs JupyterHub's stop callbacks: remove the route, stop the server.
        self.spawner._background(self.spawner.poll_and_notify())

    def _gpu_env(self) -> dict[str, str]:
        visible = ",".join(self.leased)
        # No GPUs leased: hide every GPU (an empty CUDA_VISIBLE_DEVICES means "none").
        return {
            "CUDA_VISIBLE_DEVICES": visible,
            "NVIDIA_VISIBLE_DEVICES": visible or "void",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "MLRP_GPUS": visible,
        }

    def _make_cgroup(self, request: SpawnRequest) -> None:
        """Every server gets a cgroup where the node allows: it bounds the server's resources,
        and it is how a stop finds every process the server started, however detached."""
        b, prof = self.backend, request.profile
        if not (b.containment.enforced or b.cgroups.enforced):
            return
        others = [g for g in b.allocator.inventory.gpus if g.id not in self.leased]
        denied = tuple(rule for g in others if (rule := g.device_rule) is not None)
        limits = Limits(
            cpus=prof.cpus,
            memory_bytes=prof.memory_bytes,
            max_processes=prof.max_processes,
            denied_devices=denied,
        )
        self.cgroup = ServerCgroup.create(self.tag, limits, root=b.cgroup_root_path)

    async def _wait_listening(self, child: LocalServerSpawner, port: int, log_path: Path) -> None:
        """Return once the server accepts connections; fail fast if it exits, or at the timeout.

        Checks are cheap (a non-blocking connect on one socket) and get sparser as the wait
        grows: 1 % of the time waited so far (20 ms to 0.25 s), so a lone start is noticed
        within 0.5 % of its own time on average. When more tasks want a CPU than there are
        (20 people starting at once), every check takes CPU from the servers we wait for, whose
        starts are slow anyway: then 5 % (0.1 s to 1 s), about 75 checks for a 28 s wait
        instead of 366 (measured by tests/benchmarks in a 20-user burst).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.spawner.start_timeout
        with _RunQueue() as run_queue, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            while True:
                status = child.proc.poll()
                if status is not None:
                    raise PlacementError(
                        f"JupyterLab exited during start-up (exit status {status}). Last lines "
                        f"of its log:\n{log_tail(log_path)[-800:]}",
                        reason="exited",
                        detail=f"server of {self.owner} exited with {status}; log {log_path}",
                        status_code=500,
                    )
                if _listening(sock, port):
                    return
                now = loop.time()
                if now >= deadline:
                    raise PlacementError(
                        f"JupyterLab did not start listening within "
                        f"{self.spawner.start_timeout} s.",
                        reason="timeout",
                        status_code=500,
                    )
                shortest, longest, share = PORT_CHECK_STEPS[run_queue.oversubscribed()]
                await asyncio.sleep(min(longest, max(shortest, (now - started) * share)))

    async def poll(self) -> Poll:
        """Whether the process runs: a local, exact answer (never unknown). The hub hears of
        an exit at once through the ExitWatcher; this is JupyterHub's periodic check."""
        if self.child is None:
            return Poll.gone()
        status = await self.child.poll()
        if status is None:
            if self.watcher is None and self.child.pid:
                self._readopt()
            return Poll.running()
        return Poll.gone(status)

    def _readopt(self) -> None:
        """After a hub restart: hold the running server's port again and watch its exit."""
        child = self.child
        assert child is not None
        if self.port_fd < 0 and child.port:
            self._take_port_quietly(child.pid, child.port)
        self._watch(child.pid)

    def _take_port_quietly(self, pid: int, port: int) -> None:
        try:
            self.port_fd = take_listening_socket(pid, port, self.uid)
        except (CustodyError, OSError) as e:
            self.spawner.log.warning("Cannot hold the port of %s again: %s", self.owner, e)

    async def stop(self, now: bool = False) -> None:
        if self.watcher is not None:
            self.watcher.close()  # this exit is expected: the hub is stopping the server
        if self.child is not None:
            await self.child.stop(now=now)

    async def teardown(self) -> None:
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._end_everything())
        await asyncio.shield(self._teardown)

    async def _end_everything(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        left = await self._end_processes()
        b, log = self.backend, self.spawner.log
        # Leftovers stuck in the kernel use no CPU: the CPUs go back either way.
        self._unpin()
        if left:
            held = b.allocator.hold(self.owner, held_owner(self.tag)) if self.leased else []
            log.error(
                "Server %s left processes %s that did not end within %.1f s of SIGKILL (stuck "
                "in the kernel?). GPU(s) %s stay fenced off until they end; its cgroup %s and "
                "temp files stay too.",
                self.owner,
                ", ".join(map(str, left)),
                b.kill_timeout,
                ",".join(held) or "(none)",
                self.tag,
            )
            self.leased = []
            return
        if self.leased:
            freed = b.allocator.release(self.owner)
            log.info(
                "Released GPU(s) %s of %s: none of its server's processes is left",
                ",".join(freed),
                self.owner,
            )
        self.leased = []
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        if self.tmp is not None:
            await asyncio.to_thread(self.tmp.remove)  # off the event loop: it can be large
            self.tmp = None

    def _unpin(self) -> None:
        if self.pinned is not None:
            placer_for(self.backend).release(self.owner, self.pinned)
            self.pinned = None

    async def _end_processes(self) -> list[int]:
        """SIGKILL, through the cgroup, whatever of the server is still running; return the
        pids left when the kill timeout runs out ([] once the group is empty)."""
        group = self.cgroup
        if group is None:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.backend.kill_timeout
        pause = 0.01
        while True:
            try:
                killed = group.kill()
            except OSError as e:  # CgroupError: a freezer or kill file refused the write
                self.spawner.log.error("Killing the processes of %s: %s", self.owner, e)
                killed = group.pids()
            if not killed:
                return []
            if loop.time() >= deadline:
                return group.pids()
            self.spawner.log.info(
                "Ended %d leftover process(es) of %s: %s",
                len(killed),
                self.owner,
                " ".join(map(str, killed[:20])),
            )
            await asyncio.sleep(pause)
            pause = min(0.5, pause * 2)

    def drop_port(self) -> None:
        if self.port_fd >= 0:
            os.close(self.port_fd)
            self.port_fd = -1

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "pid": self.child.pid if self.child else 0,
            "port": self.child.port if self.child else 0,
            "unix_name": self.unix_name,
            "gpus": self.leased,
            "cgroup": [self.cgroup.name, self.cgroup.kind, [str(p) for p in self.cgroup.paths]]
            if self.cgroup
            else None,
            "tag": self.tag,
            "uid": self.uid,
            "affinity": self.pinned.as_state() if self.pinned else None,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.load_holdings(state)
        if state.get("pid"):
            child = LocalServerSpawner(
                user=self.spawner.user,
                hub=self.spawner.hub,
                orm_spawner=self.spawner.orm_spawner,
                unix_name=self.unix_name,
            )
            child.pid = int(state["pid"])
            child.port = int(state.get("port") or 0)
            self.child = child

    def load_holdings(self, state: dict[str, Any]) -> None:
        """What the server holds (GPUs, CPUs, cgroup, temp files), without its process: all a
        teardown needs."""
        self.leased = list(state.get("gpus", []))
        self.unix_name = state.get("unix_name", "")
        self.uid = state.get("uid")
        self.tag = state.get("tag", "")
        if self.tag:  # only removed after a restart: ids and size no longer matter
            self.tmp = PrivateTmp(self.backend.tmp_root, self.tag, -1, -1, None)
        self.pinned = Placement.from_state(state.get("affinity"))
        if self.pinned is not None:
            placer_for(self.backend).adopt(self.owner, self.pinned)
        saved_cgroup = state.get("cgroup")
        if saved_cgroup:
            name, kind, paths = saved_cgroup
            self.cgroup = ServerCgroup(name, kind, tuple(Path(p) for p in paths))


def _log_containment(log: logging.Logger, containment: KillSupport, mounts_detail: str) -> None:
    if containment.enforced:
        log.info("Stopped servers' processes are ended with %s", containment.detail)
    else:
        log.warning(
            "Containment off: %s; a GPU is handed on when its server's main process ends.",
            containment.detail,
        )
    log.info("Temp files: %s", mounts_detail)


def _log_fence(log: logging.Logger, inventory: Inventory, cgroup_root: Path | None) -> None:
    """Say once, at start, whether GPUs leased to others are denied or only hidden. (GPUs
    whose device node is unknown were named by load_inventory already.)"""
    if not inventory.gpus:
        return
    fence = probe_fence(cgroup_root) if cgroup_root is not None else None
    if fence is not None and fence.enforced:
        log.info("GPU fence: %s denies each server the GPUs leased to others", fence.detail)
        return
    why = fence.detail if fence is not None else "limits are disabled (enforce_limits)"
    log.warning(
        "GPU fence off: %s. A server is only told its GPUs (CUDA_VISIBLE_DEVICES) and can still "
        "open the others' device nodes; `mlrp doctor` says what to do.",
        why,
    )

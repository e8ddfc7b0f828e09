"""Fakes for unit tests of the spawner's guarantees, without a hub.

- `MemoryRecords`: the `spawners.records.Records` interface in memory, with the same rules the
  database enforces (a device is leased to one owner at a time; a Unix account belongs to one hub
  user), and a log of calls so a test can say *when* a lease was released.
- `scripted_backend(...)`: a `Backend` whose servers' start succeeds or fails at a chosen point
  after it took its GPU lease, and whose server is alive until the test says it died (or the
  scheduler cannot tell: `unknown()`).
- `make_spawner(...)`: an `MLRPSpawner` wired to these, as JupyterHub would construct it.

The boundary: no JupyterHub process, proxy or database; what is tested is MLRPSpawner and the
backend contract (start/poll/stop/release/state) that JupyterHub drives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from jupyterhub.objects import Hub
from traitlets.config import Config

from spawners.backends.base import Capacity, Emit, PlacedServer, Poll
from spawners.backends.local import LocalBackend
from spawners.errors import PlacementError
from spawners.gpus import NoFreeGPUs
from spawners.profiles import Profile, SpawnRequest
from spawners.records import AccountClash, Checkpoint, Event, Lease
from spawners.spawner import MLRPSpawner


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class MemoryRecords:
    """spawners.records.Records in memory. `calls` lists (method, owner-or-user) in order."""

    leased: dict[tuple[str, str], Lease] = field(default_factory=dict)  # (node, device) → lease
    event_log: list[Event] = field(default_factory=list)
    accounts: dict[str, str] = field(default_factory=dict)  # hub user → Unix account
    retired: set[str] = field(default_factory=set)  # Unix accounts of removed people
    saved: dict[str, Checkpoint] = field(default_factory=dict)  # owner → checkpoint
    calls: list[tuple[str, str]] = field(default_factory=list)

    def save_checkpoint(self, owner: str, backend: str, state: dict[str, Any]) -> None:
        self.calls.append(("save_checkpoint", owner))
        self.saved[owner] = Checkpoint(owner, backend, state, _now())

    def checkpoints(self) -> list[Checkpoint]:
        return list(self.saved.values())

    def drop_checkpoint(self, owner: str) -> None:
        self.calls.append(("drop_checkpoint", owner))
        self.saved.pop(owner, None)

    def lease_gpus(self, owner: str, node: str, candidates: list[str], count: int) -> list[str]:
        self.calls.append(("lease_gpus", owner))
        free = [d for d in candidates if (node, d) not in self.leased]
        if count <= 0 or len(free) < count:
            return []
        for device in free[:count]:
            self.leased[(node, device)] = Lease(node, device, owner, _now())
        return free[:count]

    def release_gpus(self, owner: str) -> list[str]:
        self.calls.append(("release_gpus", owner))
        mine = [key for key, lease in self.leased.items() if lease.owner == owner]
        for key in mine:
            del self.leased[key]
        return [device for _, device in mine]

    def leases(self, node: str) -> list[Lease]:
        return [lease for (n, _), lease in self.leased.items() if n == node]

    def held_by(self, owner: str) -> list[str]:
        return sorted(lease.device for lease in self.leased.values() if lease.owner == owner)

    def add_event(self, event: Event) -> None:
        self.event_log.append(event)

    def events(self, owner: str, spawn_id: str | None = None) -> list[Event]:
        mine = [e for e in self.event_log if e.owner == owner]
        if spawn_id is None:
            if not mine:
                return []
            spawn_id = mine[-1].spawn_id
        return [e for e in mine if e.spawn_id == spawn_id]

    def unix_account(self, hub_user: str) -> str | None:
        return self.accounts.get(hub_user)

    def claim_unix_account(self, hub_user: str, unix_name: str) -> None:
        self.calls.append(("claim_unix_account", hub_user))
        mine = self.accounts.get(hub_user)
        if mine is not None and mine != unix_name:
            raise AccountClash(f"{hub_user!r} already runs as {mine}")
        holder = next((u for u, n in self.accounts.items() if n == unix_name), None)
        if holder is not None and holder != hub_user:
            raise AccountClash(f"Unix account {unix_name} already belongs to {holder!r}")
        self.accounts[hub_user] = unix_name

    def unix_name_retired(self, unix_name: str) -> bool:
        return unix_name in self.retired


class ScriptedBackend(LocalBackend):
    """The local backend's allocator and fail-fast, with servers (`ScriptedServer`) that do
    what `outcome` says: "ok" (the server runs until `die()`), "refused" (PlacementError, a
    400), "crash" (RuntimeError: an internal error), "hang" (never returns; the hub cancels
    it)."""

    name = "scripted"
    outcome: ClassVar[str] = "ok"
    instances: ClassVar[list[ScriptedServer]] = []

    def capacity(self, profile: Profile) -> Capacity:
        alloc = self.allocator
        return Capacity(alloc.total, len(alloc.free()), False, "scripted")

    def server(self, spawner: MLRPSpawner) -> ScriptedServer:  # type: ignore[override]
        server = ScriptedServer(self, spawner)
        self.instances.append(server)
        return server

    async def clean(self, placement: Checkpoint) -> str:
        server = self.server(SimpleNamespace(owner=placement.owner))  # type: ignore[arg-type]
        server.load_state(placement.state)
        await server.teardown()
        return "tore it down"


class ScriptedServer(PlacedServer):
    backend: ScriptedBackend

    def __init__(self, backend: ScriptedBackend, spawner: MLRPSpawner) -> None:
        super().__init__(backend, spawner)
        self.leased: list[str] = []
        self.alive = False
        self.doubt = ""  # set by unknown(): polls cannot tell
        self.stops = 0
        self.teardowns = 0

    async def start(self, request: SpawnRequest, emit: Emit) -> str:
        try:
            self.leased = self.backend.allocator.lease(self.spawner.owner, request.gpus)
        except NoFreeGPUs as e:
            raise PlacementError(str(e), reason="no-gpus") from None
        await emit(20, f"Leased GPU {', '.join(self.leased)}.")
        await self.spawner.checkpoint()
        outcome = self.backend.outcome
        if outcome == "refused":
            raise PlacementError("The server could not be placed.", reason="exited")
        if outcome == "crash":
            raise RuntimeError("a bug in the backend")
        if outcome == "hang":
            await asyncio.Event().wait()
        self.alive = True
        return "http://127.0.0.1:1"

    def die(self) -> None:
        """The server's process ended on its own (killed, crashed, out of memory)."""
        self.alive = False

    def unknown(self, why: str = "the scheduler did not answer") -> None:
        self.doubt = why

    async def poll(self) -> Poll:
        if self.doubt:
            return Poll.unknown(self.doubt)
        return Poll.running() if self.alive else Poll.gone()

    async def stop(self, now: bool = False) -> None:
        self.stops += 1
        self.alive = False

    async def teardown(self) -> None:
        self.teardowns += 1
        self.backend.allocator.release(self.spawner.owner)
        self.leased = []

    def get_state(self) -> dict[str, Any]:
        return {"gpus": self.leased, "alive": self.alive}

    def load_state(self, state: dict[str, Any]) -> None:
        self.leased = list(state.get("gpus", []))
        self.alive = bool(state.get("alive"))

    @property
    def gpus(self) -> list[str]:
        return list(self.leased)


def scripted_backend(outcome: str) -> type[ScriptedBackend]:
    """A ScriptedBackend class with its own name, outcome and list of instances."""
    name = f"scripted-{outcome}"
    attrs = {"name": name, "outcome": outcome, "instances": []}
    return type(f"ScriptedBackend_{outcome}", (ScriptedBackend,), attrs)


LOCAL_TRAITS = frozenset(LocalBackend.class_trait_names(config=True))


def make_spawner(
    records: Any,
    profiles: list[dict[str, Any]],
    tmp_path: Path,
    *,
    user: str = "alice",
    server: str = "",
    gpu_devices: list[str] | None = None,
    **traits: Any,
) -> MLRPSpawner:
    """An MLRPSpawner as JupyterHub makes one: a user, the hub's API address, our traits."""
    hub_user = SimpleNamespace(
        name=user, groups=[], admin=False, url=f"/user/{user}/", escaped_name=user
    )
    local: dict[str, Any] = {
        "gpu_source": "config",
        "gpu_devices": ["0", "1", "2", "3"] if gpu_devices is None else gpu_devices,
        "tmp_dir": str(tmp_path / "server-tmp"),
        # Fake images live in tmp_path, under /tmp, which a private /tmp would hide; the mount
        # namespace has its own tests (test_isolation.py).
        "private_tmp": False,
        "enforce_limits": False,
    }
    local.update({k: v for k, v in traits.items() if k in LOCAL_TRAITS})
    settings: dict[str, Any] = {
        "records": records,
        "profiles": profiles,
        "log_dir": str(tmp_path / "logs"),
        "accounts_mode": "single-user",
        **{k: v for k, v in traits.items() if k not in LOCAL_TRAITS},
    }
    # The backends' traits come from the hub's config, as in a hub (ScriptedBackend is a
    # LocalBackend, so it reads this section too).
    config = Config({"LocalBackend": local})
    return MLRPSpawner(
        user=hub_user,
        hub=Hub(ip="127.0.0.1", port=8081, base_url="/hub/"),
        orm_spawner=SimpleNamespace(name=server, server=None, state=None),  # .name is read here
        config=config,
        **settings,
    )

"""What every placement backend provides to MLRPSpawner.

One backend object exists per user server (like a Spawner), created by MLRPSpawner when it knows
the profile. It may wrap an ecosystem spawner (LocalProcessSpawner, batchspawner, DockerSpawner)
as a *child* and add what that lacks. Shared per-process things (GPU allocator, pollers) live in
`spawners.platform.Platform`, reached through `self.platform`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spawners.platform import Platform
    from spawners.profiles import SpawnRequest
    from spawners.spawner import MLRPSpawner

Emit = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class Capacity:
    """What the spawn form shows next to a profile."""

    gpus_total: int
    gpus_free: int
    limits_enforced: bool
    limits_note: str


class PlacementBackend(ABC):
    name: str = ""

    def __init__(self, spawner: MLRPSpawner, platform: Platform) -> None:
        self.spawner = spawner
        self.platform = platform

    @classmethod
    @abstractmethod
    def capacity(cls, platform: Platform) -> Capacity: ...

    @classmethod
    def precheck(cls, platform: Platform, request: SpawnRequest) -> None:
        """Fail fast (raise PlacementError) before a spawn starts; must not take anything."""
        return None

    @abstractmethod
    async def start(self, request: SpawnRequest, emit: Emit) -> str:
        """Place and start the server; return its URL once it accepts connections."""

    @abstractmethod
    async def poll(self) -> int | None: ...

    @abstractmethod
    async def stop(self, now: bool = False) -> None: ...

    @abstractmethod
    async def teardown(self) -> None:
        """After the server's main process has ended: end every process it left, then free
        what it holds (GPU leases, cgroups, temp files). What cannot be ended keeps its GPUs
        from everyone else, and the admin log says why. Idempotent; safe to run concurrently
        (a poll finding the server dead while a stop runs)."""

    def drop_port(self) -> None:
        """Let go of the server's address once the hub no longer routes to it (see
        spawners.custody); until then nobody else may answer there."""
        return None

    @abstractmethod
    def get_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...

    @property
    def gpus(self) -> list[str]:
        return []

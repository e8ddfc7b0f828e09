"""The small storage interface spawners use for shared records.

Spawners run inside the hub process but must not know how records are stored (DESIGN.md:
"reach shared records only through a small storage interface"). `hub.storage.SQLRecords`
implements this Protocol with SQLAlchemy; tests may use any object with these methods.

An *owner* is the string ``"<hub user>/<server name>"`` (server name empty for the default server),
the same key JupyterHub uses for a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


def owner_key(user: str, server: str = "") -> str:
    return f"{user}/{server}"


HELD_PREFIX = "!held/"  # '!' never starts a hub user name, so no owner key can look like this


def held_owner(tag: str) -> str:
    """The lease owner under which a stopped server's GPUs wait for its leftovers to end."""
    return HELD_PREFIX + tag


def held_tag(owner: str) -> str | None:
    return owner[len(HELD_PREFIX) :] if owner.startswith(HELD_PREFIX) else None


@dataclass(frozen=True)
class Lease:
    node: str
    device: str
    owner: str
    since: datetime


@dataclass(frozen=True)
class Event:
    owner: str
    spawn_id: str
    at: datetime
    progress: int
    message: str
    failed: bool = False
    ready: bool = False


@dataclass(frozen=True)
class Checkpoint:
    """What a restarted hub needs to find one server again: written during its start as soon as
    there is something to find (a pid, a Slurm job id), kept until its teardown has finished.
    `state` is MLRPSpawner's versioned state (spawners.state)."""

    owner: str
    backend: str
    state: dict[str, Any]
    updated: datetime


class AccountClash(Exception):
    """A Unix account is already recorded for a different hub user."""


class Records(Protocol):
    # GPU leases: exclusive per (node, device).
    def lease_gpus(self, owner: str, node: str, candidates: list[str], count: int) -> list[str]:
        """Atomically lease `count` free devices out of `candidates`; [] if not enough are free."""
        ...

    def release_gpus(self, owner: str) -> list[str]:
        """Drop every lease `owner` holds; returns the freed devices."""
        ...

    def leases(self, node: str) -> list[Lease]: ...

    # Spawn progress, kept so a reload (or a hub restart) still shows what happened.
    def add_event(self, event: Event) -> None: ...

    def events(self, owner: str, spawn_id: str | None = None) -> list[Event]:
        """Events of `spawn_id`, or of the owner's most recent spawn when None."""
        ...

    # Checkpoints of placed servers, so that reconciliation finds what a killed hub started.
    def save_checkpoint(self, owner: str, backend: str, state: dict[str, Any]) -> None:
        """Insert or replace `owner`'s checkpoint."""
        ...

    def checkpoints(self) -> list[Checkpoint]: ...

    def drop_checkpoint(self, owner: str) -> None: ...

    # The hub-user → Unix-account map, so two hub names can never share an account.
    def unix_account(self, hub_user: str) -> str | None: ...

    def claim_unix_account(self, hub_user: str, unix_name: str) -> None:
        """Record the mapping; raises AccountClash if `unix_name` belongs to another hub user."""
        ...

    def unix_name_retired(self, unix_name: str) -> bool:
        """Whether `unix_name` belonged to a removed person (and so is never handed out)."""
        ...

"""The placement-backend seam: what every backend provides, in two parts.

- `Backend`: ONE object per hub and backend (a traitlets `LoggingConfigurable`). It carries the
  backend's own admin settings as traits (``c.LocalBackend.gpu_devices``, ``c.SlurmBackend.…``),
  validates the backend-specific part of a profile (`ProfileOptions`, a pydantic model: the one
  source of truth for those YAML keys), and owns what its servers share: the GPU allocator, a
  `SharedPoller`, the scheduler's partitions. Found by name through the ``mlrp.backends`` entry
  point group (spawners.backends.backend_class).
- `PlacedServer`: one object per user server, made by `Backend.server(spawner)`. It starts,
  polls, stops and tears down that server, and saves what a restarted hub needs to find it again
  (`get_state`). It may wrap an ecosystem spawner (LocalProcessSpawner, DockerSpawner) as a child.

A poll has three answers (`Poll`): running, gone, or unknown. Unknown (the scheduler did not
answer, a command failed) never stops a server or frees what it holds; MLRPSpawner tells
JupyterHub "still running" and the next poll asks again.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from images.compat import Node
from spawners.accounts import Account, AccountError, current_account, resolve_account
from spawners.errors import PlacementError
from spawners.profiles import no_choices
from spawners.records import AccountClash

if TYPE_CHECKING:
    from spawners.platform import Platform
    from spawners.profiles import Profile, SpawnRequest
    from spawners.records import Checkpoint
    from spawners.spawner import MLRPSpawner

Emit = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True)
class Capacity:
    """What the spawn form shows next to a profile."""

    gpus_total: int
    gpus_free: int
    limits_enforced: bool
    limits_note: str
    queued: bool = False  # a full backend queues the start (Slurm) instead of refusing it
    where: str = "this server"  # what the GPU counts are of, for the form
    summary: str = ""  # more for the form's row, e.g. "walltime 8 h"
    never: str = ""  # why this profile can never start here (beyond a partition's limits)


class PollStatus(Enum):
    RUNNING = "running"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Poll:
    """A backend's answer to "is this server still there?"."""

    status: PollStatus
    exit_code: int = 0  # for GONE: what JupyterHub is told (0 when the backend cannot know)
    why: str = ""  # for GONE and UNKNOWN: a sentence for the log and the person

    @classmethod
    def running(cls) -> Poll:
        return cls(PollStatus.RUNNING)

    @classmethod
    def gone(cls, exit_code: int = 0, why: str = "") -> Poll:
        return cls(PollStatus.GONE, exit_code, why)

    @classmethod
    def unknown(cls, why: str) -> Poll:
        return cls(PollStatus.UNKNOWN, 0, why)


@dataclass(frozen=True)
class FormField:
    """One more input a backend puts on a profile's row of the spawn form, named
    ``<name>-<slug>``: a select (`options`: value, label) or a whole number (`minimum`..
    `maximum`, shown with `unit`)."""

    name: str
    label: str
    value: str
    options: tuple[tuple[str, str], ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""


class NoOptions(BaseModel):
    """A backend whose profiles take no `placement:` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(LoggingConfigurable):
    """Per-hub state and settings of one placement backend. Subclasses set `name` (the YAML's
    ``backend:`` value, also the entry point's name) and may set `ProfileOptions`."""

    name: ClassVar[str] = ""
    ProfileOptions: ClassVar[type[BaseModel]] = NoOptions
    # What a person may choose beyond profile and GPUs (checked by parse_choices): the form's
    # field name → whether it is a whole number (else text).
    choice_fields: ClassVar[dict[str, bool]] = {}

    nvidia_driver = Unicode(
        "",
        help="The oldest NVIDIA driver on the nodes this backend places servers on (e.g. "
        "570.124.06), for the check before every spawn that the profile's catalog image can run "
        "there (images/compat.py). 'none': the nodes have no NVIDIA driver. Empty: not known; "
        "CUDA images are then not checked against a driver (platform and accelerator still are).",
    ).tag(config=True)
    node_words: ClassVar[str] = "this node"  # how refusals name the nodes (images/compat.py)
    node_platform = Unicode(
        "linux-x86_64",
        help="The platform of the nodes this backend places servers on: linux-x86_64, "
        "linux-aarch64 or macos-arm64 (an MLX image runs only on macos-arm64).",
    ).tag(config=True)

    def __init__(self, platform: Platform, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.platform = platform

    def node(self) -> Node:
        """What an image needs to know of the nodes this backend uses (images/compat.py)."""
        driver = self.nvidia_driver.strip()
        if not driver:
            return Node(self.node_platform, None, self.node_words, driver_known=False)
        known = None if driver.lower() == "none" else driver
        return Node(self.node_platform, known, self.node_words)

    @classmethod
    def parse_options(cls, data: Any) -> BaseModel:
        """A profile's `placement:` mapping, validated (pydantic ValidationError if not)."""
        return cls.ProfileOptions.model_validate(data or {})

    @abstractmethod
    def capacity(self, profile: Profile) -> Capacity: ...

    def parse_choices(self, profile: Profile, extra: Mapping[str, Any]) -> Mapping[str, Any]:
        """The person's choices beyond profile and GPUs (an API body's other keys, or the
        form's `choice_fields`), checked: normalised values, or OptionsError with a sentence."""
        return no_choices(profile, extra)

    def form_fields(self, profile: Profile) -> list[FormField]:
        """The inputs for `choice_fields` on `profile`'s row of the spawn form."""
        return []

    def precheck(self, request: SpawnRequest) -> None:
        """Fail fast (raise PlacementError) before a spawn starts; must not take anything."""
        return None

    @abstractmethod
    def server(self, spawner: MLRPSpawner) -> PlacedServer:
        """A fresh handle for one user server (nothing started yet)."""

    async def clean(self, placement: Checkpoint) -> str:
        """End and free what `placement` (a checkpoint of a server JupyterHub no longer runs)
        still holds; return a sentence for the log saying what was done. Idempotent."""
        return "nothing to clean"

    async def reconcile(self, live_owners: set[str]) -> list[str]:
        """Free what no server holds any more (`live_owners`: servers JupyterHub runs or starts,
        plus checkpoints still being cleaned); return sentences for the log."""
        return []

    async def close(self) -> None:
        """Stop background work (pollers) at hub shutdown or in tests."""
        return None


class PlacedServer(ABC):
    """One user server as placed by a backend."""

    def __init__(self, backend: Backend, spawner: MLRPSpawner) -> None:
        self.backend = backend
        self.spawner = spawner

    @property
    def platform(self) -> Platform:
        return self.backend.platform

    @property
    def name(self) -> str:
        return self.backend.name

    @abstractmethod
    async def start(self, request: SpawnRequest, emit: Emit) -> str:
        """Place and start the server; return its URL once it accepts connections. Call
        `self.spawner.checkpoint()` as soon as there is something a restarted hub must find
        again (a pid, a job id)."""

    @abstractmethod
    async def poll(self) -> Poll: ...

    @abstractmethod
    async def stop(self, now: bool = False) -> None: ...

    @abstractmethod
    async def teardown(self) -> None:
        """After the server's main process has ended: end every process it left, then free
        what it holds (GPU leases, cgroups, temp files). What cannot be ended keeps its GPUs
        from everyone else, and the admin log says why. Idempotent; safe to run concurrently
        (a poll finding the server dead while a stop runs)."""

    @property
    def url(self) -> str | None:
        """Where the server answers, if known from the state (a restarted hub asks)."""
        return None

    def drop_port(self) -> None:
        """Let go of the server's address once the hub no longer routes to it (see
        spawners.custody); until then nobody else may answer there."""
        return None

    def report_port(self, port: int) -> None:
        """The server's job told the hub its port (hub/callback_api.py). Backends whose server
        picks its own port override this; the others refuse."""
        raise LookupError("this server does not report its port")

    @abstractmethod
    def get_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state(self, state: dict[str, Any]) -> None: ...

    @property
    def gpus(self) -> list[str]:
        return []

    def session(self) -> dict[str, Any]:
        """What the person is shown of their running session (hub/session_api.py): where it
        runs and, for schedulers, its job and when its walltime ends. JSON values only."""
        return {"backend": self.name, "gpus": self.gpus}


async def server_account(server: PlacedServer, emit: Emit) -> Account:
    """The Unix account `server` runs as (found, or created in system mode), said in progress;
    PlacementError with a sentence for the person when there is none to use."""
    p = server.platform
    if not p.multi_user:
        account = current_account()
        await emit(35, f"Running as {account.name} (developer mode: no separate accounts).")
        return account
    try:
        account, created = await resolve_account(p.records, server.spawner.user.name, p.accounts)
    except (AccountClash, AccountError) as e:
        for_user = getattr(e, "for_user", None)  # a sentence for the person, if any
        raise PlacementError(
            for_user
            or "Your Unix account could not be set up. An administrator has the details "
            "in the hub log.",
            reason="account",
            detail=str(e),
            status_code=403 if for_user else 500,
        ) from None
    verb = "Created your Unix account" if created else "Running as Unix account"
    await emit(35, f"{verb} {account.name}.")
    return account


def log_tail(path: Path, max_bytes: int = 2000) -> str:
    """The last `max_bytes` of a server's log or job output ("" if it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode(errors="replace")
    except OSError:
        return ""

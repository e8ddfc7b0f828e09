"""MLRPSpawner: the one spawner JupyterHub uses. It validates the request against the caller's
profiles, records progress, and delegates placement to the backend the profile names.

Flow of one start: options_from_form (form) or user_options (API) → `parse_request` against the
profiles this user may see → backend precheck (fail fast: e.g. no free GPU) → backend.start (GPU
lease, account, process) → URL. Any failure releases what was taken and is recorded as an event,
so the spawn form still shows it after a reload or a hub restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import Any as AnyTrait
from traitlets import Bool, Dict, Float, List, TraitError, Unicode, default
from traitlets import validate as validate_trait

from spawners.backends import BACKENDS, Capacity, PlacementBackend
from spawners.errors import PlacementError, log_refusal
from spawners.isolation import parse_umask
from spawners.platform import Platform, platform_for
from spawners.profiles import OptionsError, Profile, SpawnRequest, form_to_options, parse_request
from spawners.records import Event, owner_key

STATE_VERSION = 1
PATIENCE_AFTER = 60.0
_BACKGROUND: set[asyncio.Task[None]] = set()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class MLRPSpawner(Spawner):
    profiles = List(
        Dict(),
        config=True,
        help="""Profiles offered on the spawn form, as written by config/render.py from the YAML.

        Each is a dict with slug, name, description, backend, image, image_env, gpu_choices,
        default_gpus, cpus, memory_bytes, idle_timeout and groups (empty = visible to everyone).
        Example: [{"slug": "gpu1", "name": "1 GPU", "backend": "local",
        "image_env": "/opt/mlrp/venv", "gpu_choices": [1]}]
        """,
    )
    records = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="""Object implementing spawners.records.Records (GPU leases, spawn events, Unix
        accounts). config/jupyterhub_config.py sets it to hub.storage.SQLRecords.""",
    )
    gpu_source = Unicode(
        "auto",
        config=True,
        help="auto (NVML if present, else gpu_devices), nvml (required) or config.",
    )
    gpu_devices = List(
        Unicode(),
        config=True,
        help="GPU ids or UUIDs used when NVML is absent or gpu_source is 'config'. "
        "Example: ['0', '1', '2', '3'].",
    )
    accounts_mode = Unicode(
        "system",
        config=True,
        help="system: one Unix account per hub user, created on first spawn (needs root). "
        "single-user: every server runs as the hub's own account (one developer only).",
    )
    account_prefix = Unicode(
        "mlrp-", config=True, help="Prefix of created Unix accounts: alice → mlrp-alice."
    )
    home_root = Unicode("/home", config=True, help="Where created accounts' homes go.")
    account_map = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="accounts_mode 'existing': hub user → their existing Unix account, for people whose "
        "Unix name differs from their hub name, e.g. {'alice': 'asmith'}; anyone not listed "
        "runs as the account of their own name. Accounts are looked up, never created.",
    )
    log_dir = Unicode(
        "/var/lib/mlrp/logs",
        config=True,
        help="One log file per server (stdout and stderr), readable by root only.",
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
    umask = Unicode(
        "077",
        config=True,
        help="umask of every process of a person's server, in octal. 077: files a person "
        "creates are theirs alone (0600), also when copied out of their 0700 home; 027 lets "
        "their group read them.",
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

    @validate_trait("umask")
    def _valid_umask(self, proposal: dict[str, Any]) -> str:
        try:
            parse_umask(proposal["value"])
        except ValueError as e:
            raise TraitError(f"MLRPSpawner.umask: {e}") from None
        return str(proposal["value"])

    form_renderer = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="Callable(spawner) -> HTML of the spawn form; hub.form.render_form by default.",
    )

    backend: PlacementBackend | None = None
    spawn_id: str = ""
    request: SpawnRequest | None = None
    saved_profile: str = ""  # profile slug from saved state, even if the profile was removed

    @default("default_url")
    def _default_url(self) -> str:
        return "/lab"

    # -- profiles & capacity -----------------------------------------------------------------
    @property
    def platform(self) -> Platform:
        return platform_for(self)

    @property
    def owner(self) -> str:
        return owner_key(self.user.name, self.name or "")

    def all_profiles(self) -> list[Profile]:
        return [Profile.from_dict(d) for d in self.profiles]

    def visible_profiles(self) -> list[Profile]:
        groups = [g.name for g in getattr(self.user, "groups", [])]
        admin = bool(getattr(self.user, "admin", False))
        return [p for p in self.all_profiles() if p.visible_to(groups, admin)]

    def capacity(self, profile: Profile) -> Capacity:
        return self._backend_class(profile).capacity(self.platform)

    def last_failure(self) -> Event | None:
        events = self.platform.records.events(self.owner)
        failed = [e for e in events if e.failed]
        return failed[-1] if failed else None

    @staticmethod
    def _backend_class(profile: Profile) -> type[PlacementBackend]:
        cls = BACKENDS.get(profile.backend)
        if cls is None:
            raise PlacementError(
                f"Profile {profile.name!r} uses placement {profile.backend!r}, which this hub "
                "does not have. Tell your administrator.",
                reason="config",
                status_code=500,
            )
        return cls

    # -- the form and its validation ---------------------------------------------------------
    @default("options_form")
    def _options_form(self) -> Callable[[Spawner], str] | str:
        # Without a renderer there is no form: the user's only (or first-asked) profile starts.
        return self._render_form if self.form_renderer is not None else ""

    def _render_form(self, spawner: Spawner) -> str:
        return str(self.form_renderer(self))

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        try:
            try:
                visible = self.visible_profiles()
                options = form_to_options(formdata, [p.slug for p in visible])
                request = parse_request(options, visible)
            except OptionsError as e:
                raise PlacementError(str(e), reason="bad-options") from None
            self._backend_class(request.profile).precheck(self.platform, request)
        except PlacementError as e:
            if e.expected:
                log_refusal(self.log, self._log_name, e)
            raise
        return request.as_user_options()

    @default("apply_user_options")
    def _apply_user_options_default(self) -> Callable[[Spawner, dict[str, Any]], None]:
        # JupyterHub >= 5.3 calls this before start(). Validation happens in start() (it must
        # run on 5.0-5.2 too, and for options reloaded from the database); raising here would
        # only add a traceback to the hub log for every bad request.
        def apply(spawner: Spawner, user_options: dict[str, Any]) -> None:
            return None

        return apply

    def validate(self) -> SpawnRequest:
        try:
            return parse_request(self.user_options, self.visible_profiles())
        except OptionsError as e:
            raise PlacementError(str(e), reason="bad-options") from None

    # -- progress events ---------------------------------------------------------------------
    async def emit(self, progress: int, message: str, *, failed: bool = False) -> None:
        ev = Event(self.owner, self.spawn_id, _now(), progress, message, failed=failed)
        self.platform.records.add_event(ev)
        # Wake every progress() stream waiting on the current flag and hand later waits a fresh
        # one: streams never clear a shared flag, so none can swallow another one's wake-up.
        woken = self._new_event
        self.__dict__["_mlrp_new_event"] = asyncio.Event()
        woken.set()

    @property
    def _new_event(self) -> asyncio.Event:
        ev = self.__dict__.get("_mlrp_new_event")
        if ev is None:
            ev = self.__dict__["_mlrp_new_event"] = asyncio.Event()
        return ev

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """Yield this spawn's recorded events as they happen (JupyterHub stops us when ready).

        The records are read when emit() says there is something new, not on a timer: a
        once-a-second re-read per open stream cost ~7 ms of hub CPU per spawn while 20 people
        started at once (~27 s each). The only timed wake-up left is the patience line.
        """
        sent = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        patience_sent = False
        while True:
            new_event = self._new_event  # taken before reading: an emit after the read sets it
            # No spawn id yet: this start has not reached start(); the events on record belong
            # to an earlier spawn and must not show up in this one's progress.
            events = (
                self.platform.records.events(self.owner, self.spawn_id) if self.spawn_id else []
            )
            for ev in events[sent:]:
                yield {"progress": ev.progress, "message": ev.message}
            sent = len(events)
            elapsed = loop.time() - started
            if not patience_sent and elapsed >= PATIENCE_AFTER:
                patience_sent = True
                yield {"progress": 95, "message": f"Still starting after {int(elapsed)} s…"}
            wait = None if patience_sent else max(0.0, PATIENCE_AFTER - elapsed)
            try:
                await asyncio.wait_for(new_event.wait(), timeout=wait)
            except TimeoutError:
                pass

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> str:
        self.spawn_id = uuid.uuid4().hex
        try:
            request = self.validate()
            await self.emit(0, f"Starting {request.profile.name} with {request.gpus} GPU(s).")
            backend_cls = self._backend_class(request.profile)
            backend_cls.precheck(self.platform, request)
            self.request = request
            self.backend = backend_cls(self, self.platform)
            url = await self.backend.start(request, self.emit)
        except asyncio.CancelledError:
            # The hub gave up on this start: end what it started, then free what it took.
            self._background(self._cleanup_failed())
            raise
        except PlacementError as e:
            if e.expected:
                log_refusal(self.log, self._log_name, e)
            elif e.detail:
                self.log.error(
                    "Start of %s failed (%s): %s", self._log_name, e.failure_reason, e.detail
                )
            await self.emit(100, e.jupyterhub_message, failed=True)
            await self._cleanup_failed()
            raise
        except Exception as e:
            self.log.exception("Start of %s failed", self._log_name)
            await self.emit(
                100, "Your server could not start; the admin log has details.", failed=True
            )
            await self._cleanup_failed()
            raise PlacementError(
                "Your server could not start because of an internal error. "
                "Try again; if it keeps failing, tell your administrator.",
                reason="internal",
                detail=repr(e),
                status_code=500,
            ) from e
        return url

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` to its end even if nobody awaits it (a reference keeps it alive)."""
        task = asyncio.ensure_future(work)
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _cleanup_failed(self) -> None:
        backend = self.backend
        if backend is None:
            self.platform.allocator.release(self.owner)
            return
        try:
            await backend.stop(now=True)
        finally:
            await backend.teardown()
            backend.drop_port()  # never routed: nobody can be sent to its port

    async def poll(self) -> int | None:
        if self.backend is None:
            return 0
        status = await self.backend.poll()
        if status is not None:
            # Died on its own: end whatever it left and free its GPUs now, not at a later stop.
            await self.backend.teardown()
        return status

    async def stop(self, now: bool = False) -> None:
        if self.backend is None:
            self.platform.allocator.release(self.owner)
            return
        try:
            await self.backend.stop(now=now)
        finally:
            await self.backend.teardown()

    # -- state that survives a hub restart ---------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.backend is not None:
            state["mlrp"] = {
                "v": STATE_VERSION,
                "profile": self.request.profile.slug if self.request else self.saved_profile,
                "gpus": self.request.gpus if self.request else len(self.backend.gpus),
                "backend": self.backend.name,
                "spawn_id": self.spawn_id,
                "placement": self.backend.get_state(),
            }
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        saved = state.get("mlrp")
        if not saved or saved.get("v") != STATE_VERSION:
            return
        profiles = {p.slug: p for p in self.all_profiles()}
        profile = profiles.get(saved["profile"])
        backend_cls = BACKENDS.get(saved["backend"])
        if backend_cls is None:
            self.log.error("%s: unknown backend %r in saved state", self._log_name, saved)
            return
        if profile is not None:
            self.request = SpawnRequest(profile, int(saved.get("gpus", 0)))
        self.saved_profile = saved["profile"]
        self.spawn_id = saved.get("spawn_id", "")
        self.backend = backend_cls(self, self.platform)
        self.backend.load_state(saved["placement"])

    def clear_state(self) -> None:
        # JupyterHub clears the state after it has removed the server's route: only now may
        # another process answer on the server's port.
        if self.backend is not None:
            self.backend.drop_port()
        super().clear_state()
        self.backend = None
        self.request = None
        self.spawn_id = ""

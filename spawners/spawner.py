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
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from jupyterhub.spawner import Spawner
from traitlets import Any as AnyTrait
from traitlets import Dict, Enum, Float, List, TraitError, Unicode, default
from traitlets import validate as validate_trait

from images.catalog import shipped
from images.compat import verdict
from spawners import state as saved_state
from spawners.backends import Backend, Capacity, FormField, PlacedServer, PollStatus
from spawners.errors import PlacementError, log_refusal
from spawners.isolation import parse_umask
from spawners.platform import Platform, platform_for
from spawners.profiles import OptionsError, Profile, SpawnRequest, form_to_options, parse_request
from spawners.reconcile import clean_checkpoint
from spawners.records import Checkpoint, Event, owner_key

STATE_VERSION = saved_state.VERSION
PATIENCE_AFTER = 60.0
FORCE_STOP_TIMEOUT = 15.0
_BACKGROUND: set[asyncio.Task[None]] = set()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class MLRPSpawner(Spawner):
    profiles = List(
        Dict(),
        config=True,
        help="""Profiles offered on the spawn form, as written by config/render.py from the YAML.

        Each is a dict with slug, name, description, backend, placement (the backend's own
        options, checked by it), image, image_env, gpu_choices, default_gpus, cpus,
        memory_bytes, idle_timeout, max_processes and groups (empty = visible to everyone).
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
    accounts_mode = Enum(
        ["system", "existing", "single-user"],
        "system",
        config=True,
        help="system: one Unix account per hub user, created on first spawn (needs root). "
        "existing: each hub user runs as their existing Unix account (LDAP/SSSD on a "
        "cluster; account_map renames), never created. single-user: every server runs as the "
        "hub's own account (one developer only).",
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
    umask = Unicode(
        "077",
        config=True,
        help="umask of every process of a person's server, in octal. 077: files a person "
        "creates are theirs alone (0600), also when copied out of their 0700 home; 027 lets "
        "their group read them.",
    )
    reconcile_interval = Float(
        60.0,
        config=True,
        help="Seconds between reconciliation passes inside the hub (hub/reconcile.py): "
        "servers a killed hub left half-started are cleaned, GPUs nobody holds are freed.",
    )
    backend_classes = Dict(
        config=True,
        help="""Placement backends by name beside those installed through the `mlrp.backends`
        entry points: {"name": BackendClass}. For a site's own backend that is not packaged,
        and for tests.""",
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

    placed: PlacedServer | None = None
    spawn_id: str = ""
    request: SpawnRequest | None = None
    saved_request: dict[str, Any] | None = None  # from saved state, even if the profile went
    unreadable_state: dict[str, Any] | None = None  # saved by another MLRP version: kept as is
    _poll_doubt: str = ""  # why the last poll could not tell (logged once per change)

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
        return self.backend_for(profile).capacity(profile)

    def last_failure(self) -> Event | None:
        events = self.platform.records.events(self.owner)
        failed = [e for e in events if e.failed]
        return failed[-1] if failed else None

    def backend_for(self, profile: Profile) -> Backend:
        return self.platform.backend(profile.backend)

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
                extra = {p.slug: self.backend_for(p).choice_fields for p in visible}
                options = form_to_options(formdata, [p.slug for p in visible], extra)
                request = parse_request(options, visible, self._choose, self._offered(visible))
            except OptionsError as e:
                raise PlacementError(str(e), reason="bad-options") from None
            self.backend_for(request.profile).precheck(request)
            self._check_image(request)
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

    def _offered(self, visible: list[Profile]) -> list[str]:
        """The options beyond profile and gpus that any of `visible`'s backends takes."""
        names: dict[str, None] = {}
        for p in visible:
            names.update(dict.fromkeys(self.backend_for(p).choice_fields))
        return list(names)

    def _choose(self, profile: Profile, extra: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.backend_for(profile).parse_choices(profile, extra)

    def form_fields(self, profile: Profile) -> list[FormField]:
        return self.backend_for(profile).form_fields(profile)

    def image_refusal(self, profile: Profile, gpus: int) -> str | None:
        """Why `profile`'s curated image cannot run where its backend places servers (the
        nodes' platform and NVIDIA driver, images/compat.py) with `gpus` GPUs; None if it can
        or the profile names no catalog image."""
        if not profile.catalog:
            return None
        found = verdict(shipped(), profile.catalog, self.backend_for(profile).node(), gpus)
        return None if found.allowed else found.sentence()

    def _check_image(self, request: SpawnRequest) -> None:
        """Before anything starts (the form's post, and start())."""
        refusal = self.image_refusal(request.profile, request.gpus)
        if refusal is not None:
            raise PlacementError(refusal, reason="image")

    def validate(self) -> SpawnRequest:
        try:
            visible = self.visible_profiles()
            return parse_request(self.user_options, visible, self._choose, self._offered(visible))
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
            await self._clean_stale_checkpoint()
            request = self.validate()
            await self.emit(0, f"Starting {request.profile.name} with {request.gpus} GPU(s).")
            backend = self.backend_for(request.profile)
            backend.precheck(request)
            self._check_image(request)
            self.request = request
            self.placed = backend.server(self)
            url = await self.placed.start(request, self.emit)
            await self.checkpoint()
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

    async def _clean_stale_checkpoint(self) -> None:
        """A checkpoint left by an earlier server of this owner that nobody cleaned yet (the hub
        was killed, and reconciliation has not run): clean it before placing a new one, so it
        can never be overwritten and orphaned."""
        stale = self._own_checkpoint()
        if stale is not None:
            self.log.warning("Reconcile: %s", await clean_checkpoint(self.platform, stale))

    async def checkpoint(self) -> None:
        """Record where this server is, so that a hub killed from now on finds it again
        (reconciliation re-adopts or cleans it). Backends call it as soon as there is something
        to find (a pid, a job id); start() again once the server is up."""
        state = self._mlrp_state()
        if state is not None and self.placed is not None:
            self.platform.records.save_checkpoint(self.owner, self.placed.name, state)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` to its end even if nobody awaits it (a reference keeps it alive)."""
        task = asyncio.ensure_future(work)
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _cleanup_failed(self) -> None:
        placed = self.placed
        if placed is None:
            self._forget_holdings()
            return
        try:
            await placed.stop(now=True)
        finally:
            await self._teardown(placed)
            placed.drop_port()  # never routed: nobody can be sent to its port

    async def _teardown(self, placed: PlacedServer) -> None:
        await placed.teardown()
        self.platform.records.drop_checkpoint(self.owner)

    def _forget_holdings(self) -> None:
        """Nothing is placed (or its state was lost): free whatever the owner still holds."""
        for backend in list(self.platform.backends.values()):
            forget = getattr(backend, "forget", None)
            if forget is not None:
                forget(self.owner)

    async def poll(self) -> int | None:
        placed = self.placed
        if placed is None:
            return None if self.unreadable_state is not None else 0
        result = await placed.poll()
        if result.status is PollStatus.UNKNOWN:
            # Never a reason to stop a server or free what it holds: say so once, ask again.
            if result.why != self._poll_doubt:
                self.log.warning(
                    "Cannot tell whether %s still runs (%s); keeping it", self._log_name, result.why
                )
            self._poll_doubt = result.why
            return None
        self._poll_doubt = ""
        if result.status is PollStatus.RUNNING:
            return None
        if result.why:
            self.log.warning("Server %s ended: %s", self._log_name, result.why)
            await self.emit(100, result.why, failed=True)
        # Died on its own: end whatever it left and free its GPUs now, not at a later stop.
        await self._teardown(placed)
        return result.exit_code

    async def stop(self, now: bool = False) -> None:
        placed = self.placed
        if placed is None:
            self._forget_holdings()
            return
        try:
            await placed.stop(now=now)
        finally:
            await self._teardown(placed)

    async def force_clear(self) -> None:
        """An admin forces this server out (hub/servers_api.py): end and free whatever is
        placed, ignoring a backend stop that fails or hangs, then forget it."""
        placed = self.placed
        if placed is not None:
            try:
                await asyncio.wait_for(placed.stop(now=True), timeout=FORCE_STOP_TIMEOUT)
            except Exception as e:  # noqa: BLE001 (forced: carry on to the teardown)
                self.log.error("Forced stop of %s: %r; tearing it down anyway", self._log_name, e)
            await self._teardown(placed)
            placed.drop_port()
        else:
            await self._clean_stale_checkpoint()
            self._forget_holdings()
        self.clear_state()

    async def get_url(self) -> str:
        """Where the server answers. JupyterHub asks after a restart; for a server whose start
        the hub did not live to finish, only the placement knows (from its checkpoint)."""
        url = self.placed.url if self.placed is not None else None
        return url or str(await super().get_url())

    def session(self) -> dict[str, Any]:
        """What the person is shown of this running server (hub/session_api.py); {} when
        nothing is placed."""
        if self.placed is None:
            return {}
        profile = self.request.profile.name if self.request is not None else None
        return {"profile": profile, **self.placed.session()}

    def report_port(self, port: int) -> None:
        """The server's job reports the port it listens on (hub/callback_api.py)."""
        if self.placed is None:
            raise LookupError("this server is not being started")
        self.placed.report_port(port)

    # -- state that survives a hub restart ---------------------------------------------------
    def _mlrp_state(self) -> dict[str, Any] | None:
        if self.placed is None:
            return self.unreadable_state
        return {
            "v": STATE_VERSION,
            "backend": self.placed.name,
            "spawn_id": self.spawn_id,
            "request": self.request.as_user_options() if self.request else self.saved_request,
            "placement": self.placed.get_state(),
        }

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        ours = self._mlrp_state()
        if ours is not None:
            state[saved_state.KEY] = ours
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        saved = state.get(saved_state.KEY) or self._checkpointed_state()
        if not saved:
            return
        try:
            current = saved_state.migrate(saved)
            backend = self.platform.backend(current["backend"])
        except (saved_state.StateError, PlacementError) as e:
            # Keep it as it was (get_state hands it back unchanged) and never call the server
            # gone: an MLRP that can read it, or an admin's `mlrp server clear`, deals with it.
            why = e.detail if isinstance(e, PlacementError) else str(e)
            self.log.error("%s: cannot use its saved state (%s); keeping it", self._log_name, why)
            self.unreadable_state = saved
            return
        self.saved_request = current["request"]
        self.request = self._saved_request(current["request"])
        self.spawn_id = current.get("spawn_id", "")
        self.placed = backend.server(self)
        self.placed.load_state(current["placement"])

    def _checkpointed_state(self) -> dict[str, Any] | None:
        """JupyterHub saves a spawner's state only once its start has returned. A hub killed
        during a start restarts with a server row but no state: the checkpoint written during
        that start is then what finds the server again (poll re-adopts or stops it)."""
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is None or getattr(orm_spawner, "server", None) is None:
            return None
        found = self._own_checkpoint()
        return found.state if found is not None else None

    def _own_checkpoint(self) -> Checkpoint | None:
        return next((c for c in self.platform.records.checkpoints() if c.owner == self.owner), None)

    def _saved_request(self, options: dict[str, Any]) -> SpawnRequest | None:
        """The request a running server was started with, if its profile still exists (an
        admin may have changed or removed it since: the server keeps running regardless)."""
        profiles = {p.slug: p for p in self.all_profiles()}
        profile = profiles.get(str(options.get("profile", "")))
        if profile is None:
            return None
        chosen = {k: v for k, v in options.items() if k not in ("profile", "gpus")}
        return SpawnRequest(profile, int(options.get("gpus", 0)), tuple(sorted(chosen.items())))

    def clear_state(self) -> None:
        # JupyterHub clears the state after it has removed the server's route: only now may
        # another process answer on the server's port.
        if self.placed is not None:
            self.placed.drop_port()
        super().clear_state()
        self.placed = None
        self.request = None
        self.saved_request = None
        self.unreadable_state = None
        self.spawn_id = ""

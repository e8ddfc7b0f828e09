"""Slurm placement: each server is a batch job on a cluster's node, submitted as the person's
own Unix account, next to local profiles on the same hub.

What batchspawner gets right is kept (the scheduler commands are traits; a batch script) and
what it gets wrong is not: every command runs from an argument list (spawners/slurm/run.py),
the script is rendered only from checked values (spawners/slurm/script.py), ``sbatch`` runs as
the user through ``runuser`` with the script on standard input, and the job tells the hub its
port through hub/callback_api.py, which accepts the port and nothing else.

One start: the account → the request checked against the partition Slurm reports (a request
that can never run is refused before anything is submitted, naming the limit) → checkpoint by
job name (a hub killed during sbatch finds the job by name) → ``sbatch`` → checkpoint with the
job id → wait: while the job is pending, progress says why in plain words with the queue
position and Slurm's estimate; once it runs, the job binds a free port on its node and reports
it → the URL is the node's address (NodeAddr) and that port.

All servers of a hub are checked by ONE ``squeue`` per period (`SharedPoller`); a start asks
more often (`start_poll_period`) but still in one batch with every other start. A poll that
cannot tell (squeue failed, slurmctld does not answer) is "unknown" and never ends a session.
"""

from __future__ import annotations

import asyncio
import grp
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from traitlets import Dict, Float, Int, List, Unicode

from spawners.accounts import Account, server_tag
from spawners.backends.base import (
    Backend,
    Capacity,
    Emit,
    FormField,
    PlacedServer,
    Poll,
    PollStatus,
    log_tail,
    server_account,
)
from spawners.errors import PlacementError
from spawners.poller import SharedPoller
from spawners.profiles import (
    DISPLAY_ARGS,
    OptionsError,
    Profile,
    SpawnRequest,
    echo,
    idle_args,
    unknown_options,
)
from spawners.slurm import partitions as slurm_partitions
from spawners.slurm.partitions import Partition, Request, SlurmInfoError, impossible
from spawners.slurm.queue import (
    Job,
    QueueParseError,
    Status,
    find_argv,
    parse_ids,
    parse_squeue,
    pending_argv,
    query,
    queue_position,
)
from spawners.slurm.reasons import describe_pending
from spawners.slurm.run import Outcome, run
from spawners.slurm.script import (
    ENV_NAME,
    LIMITS,
    MAX_WALLTIME_MINUTES,
    PARTITION,
    BatchJob,
    BatchJobError,
    Bind,
    Container,
    render,
)
from spawners.slurm.submit import SubmitError, cancel, submit
from spawners.slurm.values import duration_seconds

if TYPE_CHECKING:
    from spawners.platform import Platform
    from spawners.records import Checkpoint
    from spawners.spawner import MLRPSpawner

# Job states in words, for the sentence saying why a session ended.
ENDINGS = {
    "TIMEOUT": "it reached its walltime",
    "CANCELLED": "it was cancelled",
    "FAILED": "it failed",
    "COMPLETED": "it ended",
    "NODE_FAIL": "its node failed",
    "OUT_OF_MEMORY": "it ran out of memory",
    "PREEMPTED": "it was preempted by a job of higher priority",
    "BOOT_FAIL": "its node did not boot",
    "DEADLINE": "it reached its deadline",
}
# Seconds between connection attempts to a session whose JupyterLab is starting (it listens
# a few seconds after its job reported the port; a refused connect costs microseconds), and
# before asking squeue again for the node of a job that reported its port.
CONNECT_RETRY = 0.05
REPORTED_RECHECK = 0.1
# sbatch refusals (spawners.slurm.submit) → the spawn metrics' failure label.
SUBMIT_REASONS = {"slurm-missing": "config", "slurm-uncertain": "scheduler"}


class SlurmOptions(BaseModel):
    """A Slurm profile's `placement:` keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str = Field(
        pattern=PARTITION.pattern,
        description="The Slurm partition sessions of this profile run in.",
    )
    partitions: tuple[Annotated[str, Field(pattern=PARTITION.pattern)], ...] = Field(
        (),
        description="Other partitions the person may pick on the form instead of `partition`.",
    )
    walltime: int = Field(
        60,
        ge=1,
        le=MAX_WALLTIME_MINUTES,
        description="How long a session may run, in minutes or as Slurm writes it "
        "('8:00:00', '1-00:00:00'); at most the partition's MaxTime.",
    )

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                seconds = duration_seconds(v.strip())
            except ValueError:
                seconds = None
            if seconds is None or seconds <= 0:
                raise ValueError(
                    f"{v!r} is not a walltime; write minutes (90) or Slurm's [D-]HH:MM:SS"
                )
            return math.ceil(seconds / 60)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be minutes (a whole number) or [D-]HH:MM:SS, not {v!r}")
        return v


class SlurmBackend(Backend):
    """Servers as Slurm batch jobs. Owns the one `squeue` poller of all its servers and what
    Slurm says about its partitions (limits, free GPUs), refreshed at most every
    `partitions_max_age` seconds."""

    name = "slurm"
    node_words = "the cluster's nodes"
    ProfileOptions: ClassVar[type[BaseModel]] = SlurmOptions
    # On the form and in API bodies: the partition (among the profile's), the walltime in
    # minutes, CPUs, and memory in GiB; each bounded by what the partition allows.
    choice_fields: ClassVar[dict[str, bool]] = {
        "partition": False,
        "walltime": True,
        "cpus": True,
        "memory": True,
    }

    sbatch_command = List(
        Unicode(), ["sbatch"], config=True, help="sbatch, as an argument list (e.g. a full path)."
    )
    squeue_command = List(Unicode(), ["squeue"], config=True, help="squeue, as an argument list.")
    scancel_command = List(
        Unicode(), ["scancel"], config=True, help="scancel, as an argument list."
    )
    scontrol_command = List(
        Unicode(), ["scontrol"], config=True, help="scontrol, as an argument list."
    )
    runuser_command = List(
        Unicode(),
        ["runuser"],
        config=True,
        help="How the hub (root) runs sbatch as the person's account: `runuser -u USER -- …`.",
    )
    slurm_conf = Unicode(
        "",
        config=True,
        help="SLURM_CONF for the Slurm commands (empty: Slurm's default, /etc/slurm/slurm.conf).",
    )
    command_path = Unicode(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        config=True,
        help="PATH of the Slurm commands the hub runs (nothing else of the hub's environment "
        "reaches them or the jobs).",
    )
    server_ip = Unicode(
        "0.0.0.0",
        config=True,
        help="Address a session's JupyterLab listens on, on its node: one the hub can reach. "
        "0.0.0.0 (every address of the node) by default; the node's address on the cluster's "
        "internal network where there is one.",
    )
    hub_api_url = Unicode(
        "",
        config=True,
        help="The hub's API as compute nodes reach it (e.g. http://login1:8081/hub/api); "
        "empty: the URL JupyterHub gives every server. The hub must listen there.",
    )
    node_addresses = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        config=True,
        help="Node name → address the hub reaches it at, for nodes whose NodeAddr in Slurm is "
        "not reachable from the hub. Example: {'gpu01': '10.0.0.11'}.",
    )
    output_dir = Unicode(
        "{home}/.mlrp/slurm",
        config=True,
        help="Where a session's job writes its output (made, 0700, as the person's own): "
        "{home} and {user} are replaced; it must be on a filesystem the nodes and the hub "
        "share. The file is <job name>-<job id>.log.",
    )
    poll_period = Float(
        10.0,
        config=True,
        help="Seconds between the one squeue that checks every session of the hub.",
    )
    start_poll_period = Float(
        1.0,
        config=True,
        help="Seconds between checks of starting sessions (all of them in one squeue).",
    )
    partitions_max_age = Float(
        30.0,
        config=True,
        help="Seconds Slurm's partition limits and free GPUs are reused before being read "
        "again (scontrol) for the spawn form and the checks before a submission.",
    )
    walltime_warning = Int(
        600,
        config=True,
        help="Seconds before a session's walltime ends at which the hub records a warning "
        "event for it (0: none).",
    )
    connect_timeout = Float(
        30.0,
        config=True,
        help="Seconds the hub tries to connect to a session's address on its node after the "
        "job reported its port. No connection by then: the start fails saying the hub cannot "
        "reach the node (the network requirement in the README).",
    )
    command_timeout = Float(
        30.0, config=True, help="Seconds a Slurm command may take before it counts as failed."
    )
    stop_timeout = Float(
        60.0,
        config=True,
        help="Seconds a stop waits for Slurm to end the job after scancel (Slurm's KillWait "
        "and the job's own exit) before the hub stops waiting.",
    )

    def __init__(self, platform: Platform, **kwargs: Any) -> None:
        super().__init__(platform, **kwargs)
        self.poller: SharedPoller[str] = SharedPoller(self._check, self.poll_period, "squeue")
        self.jobs: dict[str, Job] = {}  # as of the last squeue
        self.partitions: dict[str, Partition] = {}
        self.partitions_error = ""
        self._partitions_at = float("-inf")
        self._partitions_task: asyncio.Task[dict[str, Partition]] | None = None
        self._pending: tuple[float, tuple[str, ...], list[Job]] = (float("-inf"), (), [])
        self.log.info(
            "MLRP Slurm placement: squeue every %.0f s for all sessions, SLURM_CONF=%s",
            self.poll_period,
            self.slurm_conf or "(Slurm's default)",
        )

    # -- commands ----------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = {"PATH": self.command_path}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    async def _run(self, argv: list[str]) -> Outcome:
        """A Slurm command as the hub's own account, with the hub's Slurm environment."""
        return await run(argv, env=self.env, timeout=self.command_timeout)

    async def _check(self, job_ids: list[str]) -> dict[str, Poll] | None:
        seen = await query(
            job_ids, env=self.env, timeout=self.command_timeout, squeue=self.squeue_command
        )
        result: dict[str, Poll] = {}
        for job_id, obs in seen.items():
            if obs.job is not None:
                self.jobs[job_id] = obs.job
            if obs.status is Status.RUNNING:
                result[job_id] = Poll.running()
            elif obs.status is Status.GONE:
                state = obs.job.state if obs.job is not None else ""
                result[job_id] = Poll.gone(0, state)
            else:
                result[job_id] = Poll.unknown(obs.detail)
        return result

    async def refresh_partitions(self, max_age: float | None = None) -> dict[str, Partition]:
        """Slurm's partitions, read again if older than `max_age` (default: the trait). A
        failed read keeps the last ones and says why in `partitions_error`."""
        loop = asyncio.get_running_loop()
        age = self.partitions_max_age if max_age is None else max_age
        if loop.time() - self._partitions_at < age:
            return self.partitions
        scontrol = self.scontrol_command
        parts, nodes = await asyncio.gather(
            self._run(slurm_partitions.partitions_argv(scontrol)),
            self._run(slurm_partitions.nodes_argv(scontrol)),
        )
        if not (parts.ok and nodes.ok):
            self.partitions_error = (parts if not parts.ok else nodes).describe()
            self.log.warning("Cannot read Slurm's partitions: %s", self.partitions_error)
            return self.partitions
        try:
            self.partitions = slurm_partitions.parse_partitions(parts.stdout, nodes.stdout)
        except SlurmInfoError as e:
            self.partitions_error = str(e)
            self.log.warning("Cannot read Slurm's partitions: %s", e)
            return self.partitions
        self.partitions_error = ""
        self._partitions_at = loop.time()
        return self.partitions

    def _refresh_soon(self) -> None:
        """From synchronous callers (the spawn form): read the partitions in the background
        when they are stale; this call answers from what is known now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        stale = loop.time() - self._partitions_at >= self.partitions_max_age
        if stale and (self._partitions_task is None or self._partitions_task.done()):
            self._partitions_task = loop.create_task(self.refresh_partitions())

    async def pending_jobs(self, partitions: tuple[str, ...]) -> list[Job]:
        """Everyone's pending jobs in `partitions` (for queue positions), one squeue for all
        starts asking within `start_poll_period`."""
        loop = asyncio.get_running_loop()
        at, names, jobs = self._pending
        if names == partitions and loop.time() - at < self.start_poll_period:
            return jobs
        outcome = await self._run(pending_argv(partitions, self.squeue_command))
        try:
            found = list(parse_squeue(outcome.stdout).values()) if outcome.ok else []
        except QueueParseError:
            found = []
        self._pending = (loop.time(), partitions, found)
        return found

    async def find_jobs(self, job_name: str, user: str) -> list[str] | None:
        """Ids of `user`'s jobs named `job_name` (None: squeue did not answer)."""
        outcome = await self._run(find_argv(job_name, user, self.squeue_command))
        if not outcome.ok:
            return None
        try:
            return parse_ids(outcome.stdout)
        except QueueParseError:
            return None

    def node_address(self, node: str) -> str:
        """Where the hub reaches `node`: node_addresses, else Slurm's NodeAddr, else its name."""
        if node in self.node_addresses:
            return self.node_addresses[node]
        for p in self.partitions.values():
            for n in p.nodes:
                if n.name == node and n.address:
                    return n.address
        return node

    # -- the seam ----------------------------------------------------------------------------
    def options_of(self, profile: Profile) -> SlurmOptions:
        return SlurmOptions.model_validate(profile.options)

    def capacity(self, profile: Profile) -> Capacity:
        self._refresh_soon()
        options = self.options_of(profile)
        p = self.partitions.get(options.partition)
        note = "Slurm enforces each session's CPUs and memory"
        summary = f"walltime {_minutes(options.walltime)}"
        if p is None:  # not read yet (or Slurm does not answer): sbatch decides
            return Capacity(
                64,
                0,
                True,
                note,
                queued=True,
                where=f"partition {options.partition}",
                summary=summary,
            )
        if not p.up:
            summary += f"; the partition is {p.state.lower()} now, starts wait until it is up"
        smallest = SpawnRequest(profile, min(profile.gpu_choices))
        anyone = replace(p, allow_groups=None, root_only=False)  # groups: checked at start
        never = impossible(self.request_of(smallest), anyone, user_groups=()) or ""
        return Capacity(
            p.max_gpus_per_node if p.nodes else 0,
            p.gpus_free,
            True,
            note,
            queued=True,
            where=f"partition {p.name}",
            summary=summary,
            never=never,
        )

    def precheck(self, request: SpawnRequest) -> None:
        """Fail fast, before the progress page, with what is known now; start() checks again
        with the person's groups and fresh limits before anything is submitted."""
        p = self.partitions.get(self.options_of(request.profile).partition)
        if p is None:
            return
        # The person's groups are known once their account is: start() checks those.
        anyone = replace(p, allow_groups=None, root_only=False)
        why = impossible(self.request_of(request), anyone, user_groups=())
        if why is not None:
            raise PlacementError(why, reason="impossible", detail=f"partition {p.name}")

    def request_of(self, request: SpawnRequest) -> Request:
        """What to ask Slurm for: the person's choices, else the profile's values."""
        profile = request.profile
        options = self.options_of(profile)
        chosen = request.chosen
        memory = profile.memory_bytes
        default_mb = max(1, math.ceil(memory / 2**20)) if memory else 1024
        return Request(
            partition=str(chosen.get("partition", options.partition)),
            gpus=request.gpus,
            cpus=int(chosen.get("cpus", _default_cpus(profile))),
            memory_mb=int(chosen["memory"]) * 1024 if "memory" in chosen else default_mb,
            walltime_minutes=int(chosen.get("walltime", options.walltime)),
        )

    def parse_choices(self, profile: Profile, extra: Mapping[str, Any]) -> Mapping[str, Any]:
        """partition (one of the profile's), walltime (minutes), cpus and memory (GiB), each
        within what the partition allows as last read from Slurm (start() checks again with
        fresh limits before anything is submitted)."""
        unknown = {k: v for k, v in extra.items() if k not in self.choice_fields}
        if unknown:
            raise unknown_options(unknown, self.choice_fields)
        options = self.options_of(profile)
        names = [options.partition, *options.partitions]
        chosen: dict[str, Any] = {}
        if "partition" in extra:
            value = extra["partition"]
            if not isinstance(value, str) or value not in names:
                raise OptionsError(
                    f"partition must be one of {', '.join(names)} for profile {profile.name!r}; "
                    f"not {echo(value)}."
                )
            chosen["partition"] = value
        p = self.partitions.get(chosen.get("partition", options.partition))
        for key, low, high in self._bounds(p):
            if key not in extra:
                continue
            value = extra[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                what = "minutes" if key == "walltime" else "GiB" if key == "memory" else ""
                where = f" on partition {p.name}" if p is not None else ""
                raise OptionsError(
                    f"{key} must be a whole number from {low} to {high}{' ' + what if what else ''}"
                    f"{where}, not {echo(value)}."
                )
            chosen[key] = value
        return chosen

    @staticmethod
    def _bounds(p: Partition | None) -> list[tuple[str, int, int]]:
        """(choice, lowest, highest) on partition `p` (None: not read yet: the script's own
        limits; start() checks the partition's)."""
        wall = MAX_WALLTIME_MINUTES
        cpus, memory_gib = LIMITS["cpus"][1], LIMITS["memory_mb"][1] // 1024
        if p is not None:
            wall = min(wall, p.max_time // 60) if p.max_time else wall
            cpus = max(1, p.max_cpus_per_node)
            memory_gib = max(1, p.max_memory_mb_per_node // 1024)
        return [("walltime", 1, wall), ("cpus", 1, cpus), ("memory", 1, memory_gib)]

    def form_fields(self, profile: Profile) -> list[FormField]:
        options = self.options_of(profile)
        names = [options.partition, *options.partitions]
        fields: list[FormField] = []
        if len(names) > 1:
            labels = []
            for name in names:
                part = self.partitions.get(name)
                free = f" ({part.gpus_free} GPUs free)" if part and part.gpus_total else ""
                labels.append((name, name + free))
            fields.append(FormField("partition", "Partition", options.partition, tuple(labels)))
        p = self.partitions.get(options.partition)
        bounds = {key: (low, high) for key, low, high in self._bounds(p)}
        steps = {30, 60, 120, 240, 480, 720, 1440, 2880, 4320, 10080, options.walltime}
        walls = sorted(m for m in steps if m <= bounds["walltime"][1])
        fields.append(
            FormField(
                "walltime",
                "Walltime",
                str(options.walltime),
                tuple((str(m), _minutes(m)) for m in walls),
            )
        )
        memory = profile.memory_bytes
        fields.append(
            FormField("cpus", "CPUs", str(_default_cpus(profile)), (), 1, bounds["cpus"][1])
        )
        fields.append(
            FormField(
                "memory",
                "Memory",
                str(max(1, math.ceil(memory / 2**30)) if memory else 1),
                (),
                1,
                bounds["memory"][1],
                "GiB",
            )
        )
        return fields

    async def refuse_impossible(self, request: Request, groups: list[str]) -> None:
        """PlacementError naming the limit when `request` can never run (checked against the
        partition as Slurm has it now); a partition Slurm does not list is refused too."""
        parts = await self.refresh_partitions()
        p = parts.get(request.partition)
        if p is None:
            if not parts:  # could not ask: let sbatch decide, it gives its own reason
                return
            raise PlacementError(
                f"Partition {request.partition} does not exist on this cluster. Tell your "
                "administrator.",
                reason="config",
                detail=f"partitions known to Slurm: {', '.join(sorted(parts))}",
            )
        why = impossible(request, p, groups)
        if why is not None:
            raise PlacementError(why, reason="impossible", detail=f"partition {p.name}")

    def server(self, spawner: MLRPSpawner) -> SlurmServer:
        return SlurmServer(self, spawner)

    async def cancel_job(self, job_id: str) -> bool:
        done = await cancel(
            [job_id], env=self.env, timeout=self.command_timeout, scancel=self.scancel_command
        )
        if not done.ok:
            self.log.warning("scancel %s failed: %s", job_id, done.outcome.describe())
        return done.ok

    async def clean(self, placement: Checkpoint) -> str:
        """A session the hub no longer runs (killed mid-start): cancel its job, found by id or,
        if the hub died during sbatch, by its name and account."""
        state = placement.state
        job_id = state.get("job_id") or ""
        ids = [job_id] if job_id else []
        if not ids and state.get("job_name") and state.get("unix_name"):
            found = await self.find_jobs(state["job_name"], state["unix_name"])
            if found is None:
                raise RuntimeError("squeue did not answer; the job is looked for again later")
            ids = found
        if not ids:
            return "no Slurm job had been submitted"
        for i in ids:
            if not await self.cancel_job(i):
                raise RuntimeError(f"scancel {i} failed; tried again at the next reconciliation")
        return f"cancelled Slurm job(s) {', '.join(ids)}"

    async def close(self) -> None:
        await self.poller.close()


class SlurmServer(PlacedServer):
    backend: SlurmBackend

    def __init__(self, backend: SlurmBackend, spawner: MLRPSpawner) -> None:
        super().__init__(backend, spawner)
        self.job_id = ""
        self.job_name = ""
        self.unix_name = ""
        self.partition = ""
        self.port = 0
        self.node = ""
        self.address = ""
        self.log_path = ""
        self.ends_at = ""  # ISO time with its UTC offset: when the walltime ends
        self.warned = False
        self._reported = asyncio.Event()
        self._stopping = False

    @property
    def url(self) -> str | None:
        if not (self.port and self.address):
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    # -- start -------------------------------------------------------------------------------
    async def start(self, request: SpawnRequest, emit: Emit) -> str:
        b = self.backend
        wanted = b.request_of(request)
        account = await server_account(self, emit)
        self.unix_name = account.name
        self.partition = wanted.partition
        await b.refuse_impossible(wanted, _groups(account))
        job = self._batch_job(request, wanted, account)
        self.job_name = job.job_name
        await self.spawner.checkpoint()  # a hub killed during sbatch finds the job by name
        await emit(40, f"Submitting to partition {wanted.partition} of the cluster…")
        self.job_id = await self._submit(job, account)
        self.log_path = job.output.replace("%j", self.job_id)
        await self.spawner.checkpoint()
        await emit(45, f"Submitted Slurm job {self.job_id} to partition {wanted.partition}.")
        b.poller.watch(self.job_id)
        return await self._wait_running(emit)

    def _batch_job(self, request: SpawnRequest, wanted: Request, account: Account) -> BatchJob:
        b, sp = self.backend, self.spawner
        out_dir = self._output_dir(account)
        tag = server_tag(account.name, sp.name or "")
        try:
            return BatchJob(
                tag=tag,
                partition=wanted.partition,
                gpus=wanted.gpus,
                cpus=wanted.cpus,
                memory_mb=wanted.memory_mb,
                walltime_minutes=wanted.walltime_minutes,
                output=str(out_dir / f"mlrp-{tag}-%j.log"),
                workdir=str(account.home),
                env_prefix=request.profile.image_env,
                bind_ip=b.server_ip,
                export=tuple(sorted(self._job_env(account))),
                singleuser_args=(*idle_args(request.profile.idle_timeout), *DISPLAY_ARGS),
                container=_container(request.profile, account),
            )
        except BatchJobError as e:
            raise PlacementError(
                "This profile cannot be submitted to Slurm as configured. Tell your administrator.",
                reason="config",
                detail=f"batch job for {self.spawner._log_name}: {e}",
                status_code=500,
            ) from None

    def _output_dir(self, account: Account) -> Path:
        """The job's output directory. What is missing of it is made by the hub (root), 0700
        and owned by the account: ~/.mlrp/slurm in the home by default, or e.g.
        /scratch/{user}/mlrp. Directories that exist are left as they are."""
        text = self.backend.output_dir.replace("{home}", str(account.home))
        path = Path(text.replace("{user}", account.name))
        try:
            for part in reversed([path, *path.parents]):
                if not part.exists():
                    part.mkdir(mode=0o700)
                    os.chown(part, account.uid, account.gid)
        except OSError as e:
            raise PlacementError(
                "The directory for your session's output could not be made. Tell your "
                "administrator.",
                reason="config",
                detail=f"{path}: {e}",
                status_code=500,
            ) from None
        return path

    def _job_env(self, account: Account) -> dict[str, str]:
        """The job's whole environment (sbatch --export names exactly these)."""
        env = {k: v for k, v in self.spawner.get_env().items() if ENV_NAME.fullmatch(k)}
        # JUPYTERHUB_SERVICE_URL's port is not known yet: the job sets it (script.PORT_REPORT).
        if self.backend.hub_api_url:
            env["JUPYTERHUB_API_URL"] = self.backend.hub_api_url.rstrip("/")
        env.update(self.backend.env)
        env.update(HOME=str(account.home), USER=account.name, LOGNAME=account.name)
        env.setdefault("SHELL", "/bin/bash")
        return env

    async def _submit(self, job: BatchJob, account: Account) -> str:
        b = self.backend
        try:
            return await submit(
                render(job),
                user=account.name,
                partition=job.partition,
                env=self._job_env(account),
                timeout=b.command_timeout,
                sbatch=b.sbatch_command,
                runuser=b.runuser_command,
            )
        except SubmitError as e:
            if e.uncertain:  # sbatch may have submitted it: look for it by name
                found = await b.find_jobs(job.job_name, account.name)
                if found:
                    return found[-1]
            raise PlacementError(
                e.message,
                reason=SUBMIT_REASONS.get(e.reason, "rejected"),
                detail=e.detail,
                status_code=500 if e.reason in SUBMIT_REASONS else 400,
            ) from None

    async def _wait_running(self, emit: Emit) -> str:
        """Say why the job waits while it does; return the URL once it runs and its server
        reported its port. The job ending first fails the start with its output's tail."""
        b, job_id = self.backend, self.job_id
        said = ""
        while True:
            poll = await b.poller.status(job_id, max_age=b.start_poll_period)
            job = b.jobs.get(job_id)
            if poll.status is PollStatus.GONE:
                raise self._died(job)
            if job is not None and job.state == "RUNNING" and job.batch_host:
                self.node = job.batch_host
                if self._reported.is_set():
                    break
                text = f"Job {job_id} runs on node {job.batch_host}; JupyterLab is starting."
                progress = 60
            elif job is not None and job.pending:
                pending = await b.pending_jobs(job.partitions)
                text = describe_pending(job, position=queue_position(job, pending))
                progress = 50
            else:
                text, progress = "", 0
            if text and text != said:
                said = text
                await emit(progress, text)
            if self._reported.is_set():
                # The job reported its port, so it runs: ask squeue now (shared with every
                # other start asking now) for its node, instead of waiting out the period.
                await asyncio.sleep(REPORTED_RECHECK)
                await b.poller.refresh()
                continue
            try:
                await asyncio.wait_for(self._reported.wait(), timeout=b.start_poll_period)
            except TimeoutError:
                pass
        await b.refresh_partitions(max_age=3600)  # NodeAddr of the node, if never read
        self.address = b.node_address(self.node)
        await self._wait_reachable(emit)
        self._note_walltime(job)
        until = self._ends_text()
        await emit(90, f"JupyterLab listens on {self.node}, port {self.port}.{until}")
        return str(self.url)

    async def _wait_reachable(self, emit: Emit) -> None:
        """Until the hub can open a connection to the session on its node. JupyterLab listens
        a moment after the port report, so refusals are retried; the job ending, or no
        connection within `connect_timeout`, fails the start with a sentence saying which."""
        b = self.backend
        loop = asyncio.get_running_loop()
        deadline = loop.time() + b.connect_timeout
        await emit(70, f"Connecting to JupyterLab on {self.node} ({self.address}:{self.port}).")
        error = ""
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.address, self.port),
                    timeout=max(0.1, min(5.0, deadline - loop.time())),
                )
            except (OSError, TimeoutError) as e:
                error = _connect_error(e)
            else:
                writer.close()
                return
            poll = await b.poller.status(self.job_id, max_age=b.start_poll_period)
            if poll.status is PollStatus.GONE:
                raise self._died(b.jobs.get(self.job_id))
            await asyncio.sleep(CONNECT_RETRY)
        raise PlacementError(
            f"The hub cannot reach your session on node {self.node} at {self.address}, port "
            f"{self.port} ({error}). The hub must be able to connect to the compute nodes; "
            "tell your administrator.",
            reason="unreachable",
            detail=f"job {self.job_id}: no connection to {self.address}:{self.port} within "
            f"{b.connect_timeout:.0f} s ({error}); check the firewall between the hub and "
            f"{self.node}, slurm.server_ip and slurm.node_addresses",
            status_code=500,
        )

    def _died(self, job: Job | None) -> PlacementError:
        state = job.state if job is not None else "no longer listed"
        tail = log_tail(Path(self.log_path)) if self.log_path else ""
        shown = f" Last lines of its output:\n{tail[-800:]}" if tail.strip() else ""
        return PlacementError(
            f"Your Slurm job {self.job_id} ended before JupyterLab answered ({state}). Its "
            f"output is in {self.log_path}.{shown}",
            reason="exited",
            detail=f"job {self.job_id} of {self.unix_name}: {state}",
            status_code=500,
        )

    def report_port(self, port: int) -> None:
        if not self.job_id:
            raise LookupError("this server's job has not been submitted yet")
        if self.port:
            raise ValueError(f"the port was reported already ({self.port})")
        if not 1 <= port <= 65535:
            raise ValueError(f"{port} is not a port")
        self.port = port
        self._reported.set()

    # -- walltime ----------------------------------------------------------------------------
    def _note_walltime(self, job: Job | None) -> None:
        if job is None or job.start is None or job.time_limit is None:
            return
        end = job.start + timedelta(seconds=job.time_limit)
        self.ends_at = end.isoformat(timespec="seconds")

    def _ends_text(self) -> str:
        if not self.ends_at:
            return ""
        end = datetime.fromisoformat(self.ends_at)
        return f" Your session can run until {end:%H:%M} (walltime), then Slurm ends it."

    def seconds_left(self, now: datetime | None = None) -> int | None:
        """Seconds of walltime left (None: no limit known)."""
        if not self.ends_at:
            return None
        current = now or datetime.now().astimezone()
        end = datetime.fromisoformat(self.ends_at)
        return max(0, int((end - current).total_seconds()))

    def session(self) -> dict[str, Any]:
        left = self.seconds_left()
        return {
            **super().session(),
            "job_id": self.job_id,
            "partition": self.partition,
            "node": self.node,
            "ends_at": self.ends_at or None,
            "seconds_left": left,
            "walltime_left": _left_text(left) if left is not None else None,
        }

    async def _warn_walltime(self) -> None:
        limit = self.backend.walltime_warning
        left = self.seconds_left()
        if self.warned or not limit or left is None or left > limit:
            return
        self.warned = True
        minutes = max(1, round(left / 60))
        await self.spawner.emit(
            100,
            f"Your session reaches its walltime in {minutes} minute(s), at "
            f"{datetime.fromisoformat(self.ends_at):%H:%M}; Slurm then ends it. Save your work.",
        )
        self.spawner.log.warning(
            "Session %s reaches its walltime in %d s", self.spawner._log_name, left
        )
        await self.spawner.checkpoint()

    # -- running -----------------------------------------------------------------------------
    async def poll(self) -> Poll:
        b = self.backend
        if not self.job_id:
            return await self._poll_unsubmitted()
        result = await b.poller.status(self.job_id)
        job = b.jobs.get(self.job_id)
        if result.status is PollStatus.RUNNING:
            if not self.port and not self._stopping:
                # A hub restarted while this session was starting: its port report went
                # nowhere, so it can never be reached. End it; the person starts again.
                await b.cancel_job(self.job_id)
                return Poll.gone(
                    0, "The hub restarted while your session was starting; start it again."
                )
            if job is not None and not self.ends_at:
                self._note_walltime(job)
            await self._warn_walltime()
            return result
        if result.status is PollStatus.GONE:
            if self._stopping:  # the hub ended it (a stop, a failed start): nothing to say
                return Poll.gone()
            state = job.state if job is not None else ""
            why = ENDINGS.get(state, "it is no longer in Slurm's queue")
            return Poll.gone(0, f"Your Slurm job {self.job_id} ended: {why}.")
        return result

    async def _poll_unsubmitted(self) -> Poll:
        """No job id saved: the hub died during sbatch (or before it). A job sbatch did
        submit is found by its name and account and cancelled: it can never be reached."""
        b = self.backend
        if not (self.job_name and self.unix_name):
            return Poll.gone()
        found = await b.find_jobs(self.job_name, self.unix_name)
        if found is None:
            return Poll.unknown("squeue did not answer while looking for the job by name")
        for job_id in found:
            await b.cancel_job(job_id)
        return Poll.gone(0, "The hub restarted while your session was starting; start it again.")

    async def stop(self, now: bool = False) -> None:
        b = self.backend
        self._stopping = True
        if not self.job_id:
            if self.job_name and self.unix_name:  # submitted while the hub died? find it
                found = await b.find_jobs(self.job_name, self.unix_name) or []
                for i in found:
                    await b.cancel_job(i)
            return
        await b.cancel_job(self.job_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + b.stop_timeout
        while loop.time() < deadline:
            result = await b.poller.status(self.job_id, max_age=b.start_poll_period)
            if result.status is PollStatus.GONE:
                return
            await asyncio.sleep(b.start_poll_period)
        self.spawner.log.warning(
            "Slurm job %s of %s is still there %.0f s after scancel",
            self.job_id,
            self.spawner._log_name,
            b.stop_timeout,
        )

    async def teardown(self) -> None:
        """Slurm frees the job's GPUs, CPUs and memory itself when it ends; the hub only stops
        watching it."""
        if self.job_id:
            self.backend.poller.unwatch(self.job_id)
            self.backend.jobs.pop(self.job_id, None)

    # -- state -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_name": self.job_name,
            "unix_name": self.unix_name,
            "partition": self.partition,
            "port": self.port,
            "node": self.node,
            "address": self.address,
            "log": self.log_path,
            "ends_at": self.ends_at,
            "warned": self.warned,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.job_id = str(state.get("job_id") or "")
        self.job_name = str(state.get("job_name") or "")
        self.unix_name = str(state.get("unix_name") or "")
        self.partition = str(state.get("partition") or "")
        self.port = int(state.get("port") or 0)
        self.node = str(state.get("node") or "")
        self.address = str(state.get("address") or "")
        self.log_path = str(state.get("log") or "")
        self.ends_at = str(state.get("ends_at") or "")
        self.warned = bool(state.get("warned", False))
        if self.port:
            self._reported.set()
        if self.job_id:
            self.backend.poller.watch(self.job_id)


def _connect_error(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return e.strerror or type(e).__name__ if isinstance(e, OSError) else str(e)


def _container(profile: Profile, account: Account) -> Container | None:
    """The profile's Apptainer image, with the person's home bound at the same path (their
    files, and the job's output directory inside it)."""
    if not profile.apptainer:
        return None
    home = str(account.home)
    return Container(image=profile.apptainer, binds=(Bind(home, home),))


def _default_cpus(profile: Profile) -> int:
    return max(1, math.ceil(profile.cpus or 1))


def _left_text(seconds: int) -> str:
    """Walltime left in words: "1 h 52 min", "12 min", "less than a minute"."""
    minutes = seconds // 60
    if minutes < 1:
        return "less than a minute"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _minutes(minutes: int) -> str:
    if minutes % 60:
        return f"{minutes} min"
    return f"{minutes // 60} h"


def _groups(account: Account) -> list[str]:
    """Names of the Unix groups `account` is in (Slurm's AllowGroups checks these)."""
    names = []
    for gid in os.getgrouplist(account.name, account.gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names

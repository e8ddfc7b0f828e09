"""Renders the spawn form from the caller's visible profiles, live GPU capacity and their last
failure. Wired in by config/render.py as MLRPSpawner.form_renderer.

A profile that cannot start with the GPUs free now is shown disabled, with the reason beside it;
the server still refuses such a start (MLRPSpawner.options_from_form), as the form may be old."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, select_autoescape

from images.catalog import shipped
from spawners.backends.base import Capacity, FormField
from spawners.profiles import Profile

if TYPE_CHECKING:
    from spawners.spawner import MLRPSpawner

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@dataclass(frozen=True)
class Blocked:
    """Why a profile cannot start now: `cause` ("All 4 GPUs on this server are in use") and
    what the person can do about it."""

    cause: str
    advice: str

    @property
    def sentence(self) -> str:
        return f"{self.cause}. {self.advice}."


@dataclass(frozen=True)
class ImageInfo:
    """What the form shows of a profile's curated image (images/catalog.yaml)."""

    title: str
    accelerator: str  # "NVIDIA GPU, CUDA 12.4", "CPU", "Apple Silicon (MLX)"
    frameworks: str  # "torch 2.6.0, numpy 2.4.6"
    start_seconds: int


ACCELERATORS = {"cpu": "CPU", "nvidia": "NVIDIA GPU", "apple": "Apple Silicon"}


def image_info(profile: Profile) -> ImageInfo | None:
    if not profile.catalog:
        return None
    image = shipped().images[profile.catalog]
    accelerator = ACCELERATORS[image.accelerator]
    if image.cuda:
        accelerator += f", CUDA {image.cuda}"
    pins = {**image.frameworks, **image.packages}
    frameworks = ", ".join(f"{name.split('[')[0]} {version}" for name, version in pins.items())
    return ImageInfo(image.title, accelerator, frameworks, image.start_seconds)


@dataclass(frozen=True)
class Choice:
    gpus: int
    fits: bool  # that many GPUs are free now
    selected: bool


@dataclass(frozen=True)
class Row:
    profile: Profile
    gpus_label: str
    memory: str
    idle: str
    blocked: Blocked | None
    choices: tuple[Choice, ...]
    capacity: Capacity
    fields: tuple[FormField, ...] = ()  # the backend's own inputs (Slurm: walltime, CPUs…)
    checked: bool = False
    image: ImageInfo | None = None

    @property
    def free_text(self) -> str:
        """What the row says of free GPUs: "3 free now", or for a backend that queues "3 free
        now on partition gpu; more waits in the queue"."""
        cap = self.capacity
        if cap.queued:
            return f"{cap.gpus_free} free now on {cap.where}; a start may wait in the queue"
        return f"{cap.gpus_free} free now"

    @property
    def unfit_text(self) -> str:
        """Beside a GPU count that cannot be picked."""
        return "more than a node has" if self.capacity.queued else "not free now"


def blocked_by(profile: Profile, cap: Capacity) -> Blocked | None:
    """None if `profile` can start with what is free now (or, on a backend that queues, could
    ever run), else why not."""
    need = min(profile.gpu_choices)
    if cap.never:
        return Blocked(cap.never.rstrip("."), "Pick another profile, or ask your administrator")
    if cap.queued:  # a full partition means a wait in the queue, not a refusal
        if need <= cap.gpus_total:
            return None
        return Blocked(
            f"This profile needs {need} GPU(s) and the nodes of {cap.where} have at most "
            f"{cap.gpus_total} each",
            "Pick another profile, or ask your administrator",
        )
    if need <= cap.gpus_free:
        return None
    if need > cap.gpus_total:
        return Blocked(
            f"This profile needs {need} GPU(s) and this server has {cap.gpus_total}",
            "Pick another profile, or ask your administrator",
        )
    later = "Try again later or pick another profile"
    if cap.gpus_free == 0:
        return Blocked(f"All {cap.gpus_total} GPUs on this server are in use", later)
    verb = "is" if cap.gpus_free == 1 else "are"
    return Blocked(
        f"This profile needs {need} GPUs and only {cap.gpus_free} of {cap.gpus_total} {verb} free",
        later,
    )


def gpu_choices(profile: Profile, free: int) -> tuple[Choice, ...]:
    """The profile's GPU counts, those that do not fit `free` marked; the default stays
    selected if it fits, else the largest count that does."""
    fitting = [n for n in profile.gpu_choices if n <= free]
    pick = profile.default_gpus if profile.default_gpus in fitting or not fitting else max(fitting)
    return tuple(Choice(n, n <= free, n == pick) for n in profile.gpu_choices)


def cannot_start(rows: list[Row]) -> str:
    """What the Start button says when no profile can start; "" when one can."""
    if not rows:
        return "No profile is available to you"
    blocked = [row.blocked for row in rows if row.blocked is not None]
    if len(blocked) < len(rows):
        return ""
    causes = {b.cause for b in blocked}
    if len(causes) == 1:
        cause = causes.pop()
        return f"Cannot start now: {cause[0].lower()}{cause[1:]}"
    return "Cannot start now: no profile has the GPUs it needs free"


def human_bytes(n: int | None) -> str:
    if not n:
        return ""
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def human_seconds(s: int | None) -> str:
    if not s:
        return ""
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def render_form(spawner: MLRPSpawner) -> str:
    profiles = spawner.visible_profiles()
    node: Capacity | None = None  # this server's GPUs, from its last local profile
    fields = getattr(spawner, "form_fields", None)
    rows = []
    refusal = getattr(spawner, "image_refusal", None)
    for p in profiles:
        cap = spawner.capacity(p)
        if not cap.queued:
            node = cap
        blocked = blocked_by(p, cap)
        image_says = refusal(p, min(p.gpu_choices)) if refusal is not None else None
        if blocked is None and image_says:
            blocked = Blocked(image_says.rstrip("."), "Pick another profile")
        rows.append(
            Row(
                profile=p,
                gpus_label=" or ".join(str(c) for c in p.gpu_choices),
                memory=human_bytes(p.memory_bytes),
                idle=human_seconds(p.idle_timeout),
                blocked=blocked,
                image=image_info(p),
                # a queue takes any count a node has; otherwise what is free now
                choices=gpu_choices(p, cap.gpus_total if cap.queued else cap.gpus_free),
                capacity=cap,
                fields=tuple(fields(p)) if fields is not None else (),
            )
        )
    first = next((i for i, row in enumerate(rows) if row.blocked is None), None)
    if first is not None:
        rows[first] = replace(rows[first], checked=True)
    return _env.get_template("spawn_form.html").render(
        rows=rows,
        cannot_start=cannot_start(rows),
        failure=spawner.last_failure(),
        node=node,
    )

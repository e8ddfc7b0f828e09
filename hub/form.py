"""Renders the spawn form from the caller's visible profiles, live GPU capacity and their last
failure. Wired in by config/render.py as MLRPSpawner.form_renderer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, FileSystemLoader, select_autoescape

from spawners.profiles import Profile

if TYPE_CHECKING:
    from spawners.spawner import MLRPSpawner

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@dataclass(frozen=True)
class Row:
    profile: Profile
    gpus_label: str
    memory: str
    idle: str
    unavailable: str


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
    total = free = 0
    enforced, note = True, ""
    rows = []
    for p in profiles:
        cap = spawner.capacity(p)
        total, free = cap.gpus_total, cap.gpus_free
        enforced, note = cap.limits_enforced, cap.limits_note
        unavailable = ""
        if p.max_gpus and min(c for c in p.gpu_choices) > cap.gpus_free:
            unavailable = (
                f"Not enough free GPUs right now ({cap.gpus_free} of {cap.gpus_total} free)."
            )
        rows.append(
            Row(
                profile=p,
                gpus_label=" or ".join(str(c) for c in p.gpu_choices),
                memory=human_bytes(p.memory_bytes),
                idle=human_seconds(p.idle_timeout),
                unavailable=unavailable,
            )
        )
    return _env.get_template("spawn_form.html").render(
        rows=rows,
        failure=spawner.last_failure(),
        gpus_total=total,
        gpus_free=free,
        limits_enforced=enforced,
        limits_note=note,
    )

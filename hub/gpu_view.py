"""Who holds which GPU, since when, on which profile: for `mlrp gpus` and the admin GPU page.

Built from the lease records (the truth about GPUs) and JupyterHub's own tables (which profile
each server runs); both are read, never written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from spawners.records import Lease, held_tag


@dataclass(frozen=True)
class GPURow:
    gpu: str
    holder: str  # "alice", "alice/lab2", "free", or "held: leftovers of mlrp-alice"
    profile: str
    since: datetime | None

    def held_for(self, now: datetime) -> str:
        if self.since is None:
            return ""
        minutes = int((now - self.since).total_seconds() // 60)
        return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def server_profiles(jupyterhub_db: Path) -> dict[str, str]:
    """Owner ("user/server") → profile slug of every server JupyterHub has state for."""
    if not jupyterhub_db.exists():
        return {}
    engine = create_engine(f"sqlite:///{jupyterhub_db}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT users.name, spawners.name, spawners.state FROM spawners "
                    "JOIN users ON users.id = spawners.user_id"
                )
            ).all()
    except SQLAlchemyError:
        return {}
    finally:
        engine.dispose()
    found = {}
    for user, server, state in rows:
        try:
            profile = json.loads(state or "{}").get("mlrp", {}).get("profile", "")
        except (ValueError, AttributeError):
            profile = ""
        found[f"{user}/{server or ''}"] = profile
    return found


def _holder(owner: str) -> str:
    tag = held_tag(owner)
    if tag is not None:
        return f"held: leftovers of {tag}"
    user, _, server = owner.partition("/")
    return f"{user}/{server}" if server else user


def gpu_rows(gpu_ids: list[str], leases: list[Lease], profiles: dict[str, str]) -> list[GPURow]:
    """One row per GPU of the inventory (free ones too), then leases of GPUs no longer in it."""
    by_device = {lease.device: lease for lease in leases}
    rows = []
    for gpu in [*gpu_ids, *sorted(set(by_device) - set(gpu_ids))]:
        lease = by_device.get(gpu)
        if lease is None:
            rows.append(GPURow(gpu, "free", "", None))
        else:
            rows.append(
                GPURow(gpu, _holder(lease.owner), profiles.get(lease.owner, ""), lease.since)
            )
    return rows


def render_text(rows: list[GPURow], now: datetime) -> str:
    table = [("GPU", "HOLDER", "PROFILE", "SINCE", "FOR")] + [
        (
            r.gpu,
            r.holder,
            r.profile or "-",
            r.since.strftime("%Y-%m-%d %H:%M") if r.since else "-",
            r.held_for(now) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    busy = sum(1 for r in rows if r.holder != "free")
    lines.append(f"{busy} of {len(rows)} GPU(s) leased")
    return "\n".join(line.rstrip() for line in lines) + "\n"

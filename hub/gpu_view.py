"""Who holds which GPU, since when, on which profile, and what the GPU is doing: for `mlrp gpus`
and the admin GPU pages.

Built from the lease records (the truth about GPUs), JupyterHub's own tables (which profile each
server runs) and NVML where present (hub.gpu_usage); all are read, never written.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.gpu_usage import Usage
from hub.jhdb import server_rows
from spawners.gpus import UsageReport
from spawners.records import Lease, held_tag
from spawners.state import profile_of

GIB = 1024  # MiB
NO_NVML = "n/a (no NVML)"
WIDTH = 80  # `mlrp gpus` keeps within this where names allow (long names: up to ~100)
NOT_READ = Usage(UsageReport(state="absent", error="not read"))


def utc_now() -> datetime:
    """Now, as lease times are stored: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def local_time(since: datetime) -> str:
    """A stored (naive UTC) time as the admin's clock shows it."""
    return since.replace(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M")


def _size(mib: int) -> str:
    return f"{mib} MiB" if mib < GIB else f"{mib / GIB:.1f} GiB"


@dataclass(frozen=True)
class ProcessRow:
    pid: int
    account: str
    used_mib: int | None

    def describe(self) -> str:
        used = "" if self.used_mib is None else f", {_size(self.used_mib)}"
        return f"{self.account} (pid {self.pid}{used})"


@dataclass(frozen=True)
class GPURow:
    gpu: str
    holder: str  # "alice", "alice/lab2", "free", or "held: leftovers of mlrp-alice"
    profile: str
    since: datetime | None  # naive UTC, as stored
    owner: str = ""  # the lease's owner ("alice/", "alice/lab2", a held tag); "" when free
    utilization: int | None = None  # percent
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    processes: tuple[ProcessRow, ...] | None = None  # None: NVML did not say
    usage_note: str = ""  # why there are no usage figures, e.g. "n/a (no NVML)"

    def held_for(self, now: datetime) -> str:
        if self.since is None:
            return ""
        minutes = int((now - self.since).total_seconds() // 60)
        return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"

    @property
    def utilization_text(self) -> str:
        if self.usage_note:
            return self.usage_note
        return "n/a" if self.utilization is None else f"{self.utilization}%"

    @property
    def memory_text(self) -> str:
        if self.usage_note:
            return self.usage_note
        if self.memory_used_mib is None or self.memory_total_mib is None:
            return "n/a"
        return f"{self.memory_used_mib / GIB:.1f} / {self.memory_total_mib / GIB:.1f} GiB"

    @property
    def processes_text(self) -> str:
        if self.usage_note:
            return self.usage_note
        if self.processes is None:
            return "n/a"
        return ", ".join(p.describe() for p in self.processes) or "none"

    @property
    def used_without_lease(self) -> bool:
        """A free GPU that processes run on: someone uses it without holding it."""
        return self.holder == "free" and bool(self.processes)


def server_profiles(jupyterhub_db: Path) -> dict[str, str]:
    """Owner ("user/server") → profile slug of every server JupyterHub has state for."""
    found = {}
    for row in server_rows(jupyterhub_db) or []:
        try:
            profile = profile_of(json.loads(row.state or "{}"))
        except ValueError:
            profile = ""
        found[f"{row.user}/{row.server}"] = profile
    return found


def _holder(owner: str) -> str:
    tag = held_tag(owner)
    if tag is not None:
        return f"held: leftovers of {tag}"
    user, _, server = owner.partition("/")
    return f"{user}/{server}" if server else user


def usage_note(report: UsageReport) -> str:
    """What the usage columns say when NVML gave no figures at all."""
    if report.state == "absent":
        return NO_NVML
    if report.state == "hung":
        return "n/a (NVML did not answer)"
    return "n/a (NVML failed)"


def _usage_fields(gpu: str, usage: Usage) -> dict[str, Any]:
    if usage.report.state != "ok":
        return {"usage_note": usage_note(usage.report)}
    found = usage.report.find(gpu)
    if found is None:
        return {"usage_note": "n/a (not seen by NVML)"}
    processes = None
    if found.processes is not None:
        processes = tuple(
            ProcessRow(p.pid, usage.accounts.get(p.pid, "?"), p.used_mib) for p in found.processes
        )
    return {
        "utilization": found.utilization,
        "memory_used_mib": found.memory_used_mib,
        "memory_total_mib": found.memory_total_mib,
        "processes": processes,
    }


def gpu_rows(
    gpu_ids: list[str], leases: list[Lease], profiles: dict[str, str], usage: Usage = NOT_READ
) -> list[GPURow]:
    """One row per GPU of the inventory (free ones too), then leases of GPUs no longer in it."""
    by_device = {lease.device: lease for lease in leases}
    rows = []
    for gpu in [*gpu_ids, *sorted(set(by_device) - set(gpu_ids))]:
        lease = by_device.get(gpu)
        fields = _usage_fields(gpu, usage)
        if lease is None:
            rows.append(GPURow(gpu, "free", "", None, **fields))
        else:
            rows.append(
                GPURow(
                    gpu,
                    _holder(lease.owner),
                    profiles.get(lease.owner, ""),
                    lease.since,
                    owner=lease.owner,
                    **fields,
                )
            )
    return rows


# -- servers and the GPUs they hold (the admin page's "GPUs held" table) -----------------------
@dataclass(frozen=True)
class HeldRow:
    user: str  # "" for GPUs held for a stopped server's leftover processes
    server: str  # "" for the default server
    holder: str
    gpus: tuple[str, ...]
    since: datetime | None
    profile: str


def held_by_server(rows: Iterable[GPURow]) -> list[HeldRow]:
    """One row per lease owner, in the order of their first GPU."""
    owners: dict[str, list[GPURow]] = {}
    for r in rows:
        if r.owner:
            owners.setdefault(r.owner, []).append(r)
    held = []
    for owner, mine in owners.items():
        user, _, server = ("", "", "") if held_tag(owner) else owner.partition("/")
        starts = [r.since for r in mine if r.since is not None]
        held.append(
            HeldRow(
                user,
                server,
                mine[0].holder,
                tuple(r.gpu for r in mine),
                min(starts) if starts else None,
                mine[0].profile,
            )
        )
    return held


# -- output -------------------------------------------------------------------------------------
def _iso(since: datetime | None) -> str | None:
    return None if since is None else since.replace(tzinfo=UTC).isoformat()


def as_json(rows: list[GPURow], usage: Usage, node: str) -> dict[str, Any]:
    """The view for scripts (`mlrp gpus --json`, /hub/mlrp/gpus?format=json). Times are UTC."""
    return {
        "node": node,
        "nvml": {"state": usage.report.state, "error": usage.report.error},
        "gpus": [
            {
                "gpu": r.gpu,
                "holder": r.holder,
                "profile": r.profile,
                "since": _iso(r.since),
                "utilization_percent": r.utilization,
                "memory_used_mib": r.memory_used_mib,
                "memory_total_mib": r.memory_total_mib,
                "processes": None
                if r.processes is None
                else [
                    {"pid": p.pid, "account": p.account, "used_mib": p.used_mib}
                    for p in r.processes
                ],
                "usage_note": r.usage_note,
                "used_without_lease": r.used_without_lease,
            }
            for r in rows
        ],
        "servers": [
            {
                "user": h.user,
                "server": h.server,
                "holder": h.holder,
                "gpus": list(h.gpus),
                "since": _iso(h.since),
                "profile": h.profile,
            }
            for h in held_by_server(rows)
        ],
    }


def _short_ids(ids: list[str]) -> dict[str, str]:
    """Ids as the text table shows them: an NVML UUID (40 characters) cut to its first 12,
    which still tells a node's GPUs apart; the full ids are in --json and on the page."""
    cut = {i: i if len(i) <= 16 else i[:12] + ".." for i in ids}
    return cut if len(set(cut.values())) == len(cut) else {i: i for i in ids}


def _use(r: GPURow) -> str:
    if r.usage_note:
        return r.usage_note
    return f"{r.utilization_text}, {r.memory_text}"


def _table(cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(
        text, width=WIDTH, initial_indent="    ", subsequent_indent="      ", break_on_hyphens=False
    )


def render_text(rows: list[GPURow], now: datetime, usage: Usage = NOT_READ) -> str:
    """The table of `mlrp gpus`, readable in 80-100 columns: one line per GPU, its processes
    on an indented line below it; where long names would make the line wider than WIDTH, the
    GPU's use moves down to that line too. `now` is naive UTC, as lease times are."""
    short = _short_ids([r.gpu for r in rows])
    head = ("GPU", "HOLDER", "PROFILE", "SINCE", "FOR")
    cells = [
        (
            short[r.gpu],
            r.holder,
            r.profile or "-",
            local_time(r.since) if r.since else "-",
            r.held_for(now) or "-",
        )
        for r in rows
    ]
    wide = _table([(*head, "USE"), *[(*c, _use(r)) for c, r in zip(cells, rows, strict=True)]])
    one_line = max(len(line) for line in wide) <= WIDTH
    table = wide if one_line else _table([head, *cells])
    lines = table[:1]
    for r, line in zip(rows, table[1:], strict=True):
        details = [] if one_line else [f"use: {_use(r)}"]
        if r.processes:
            details.append(f"processes: {r.processes_text}")
        lines.append(line)
        if details:
            lines += _wrap("; ".join(details))
    notes = []
    if usage.report.state != "ok":
        notes.append(f"No utilisation, memory or processes: {usage.report.error}.")
    for r in rows:
        if r.used_without_lease:
            notes.append(
                f"GPU {short[r.gpu]} is free but in use without a lease: {r.processes_text}."
            )
    for note in notes:
        lines += textwrap.wrap(note, width=WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    busy = sum(1 for r in rows if r.holder != "free")
    lines.append(f"{busy} of {len(rows)} GPU(s) leased")
    return "\n".join(lines) + "\n"

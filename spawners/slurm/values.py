"""Slurm's text for durations, timestamps, GPU counts and "no value".

Slurm prints durations as ``MM:SS``, ``HH:MM:SS`` or ``D-HH:MM:SS`` (and reads plain minutes),
"no limit" as ``UNLIMITED`` / ``INFINITE``, "not known" as ``N/A``, ``NONE``, ``(null)`` or
``INVALID`` (a finished job's time left), and timestamps as local time without a zone
(``2026-11-24T19:17:31``). GPUs appear as gres strings: ``gpu:4``, ``gpu:a100:2(S:0-1)``,
``gres:gpu:2`` (squeue's TRES per node), ``gres/gpu=4`` (TRES lists).
"""

from __future__ import annotations

import re
from datetime import datetime

# Values Slurm prints where there is nothing to report.
NOTHING = frozenset({"", "N/A", "NONE", "(null)", "INVALID", "NOT_SET", "Unknown", "None", "n/a"})
UNLIMITED = frozenset({"UNLIMITED", "INFINITE"})

# One gpu entry of a gres list: "gpu:4", "gpu:a100:4(S:0-1)", "gpu:4(IDX:0-3)", "gres:gpu:2",
# "gres/gpu=2", "gres/gpu:a100=2". The count is the last number before "(", "," or the end.
_TRES_GPU_TOTAL = re.compile(r"(?:^|,)gres/gpu=(\d+)")
_GPU_GRES = re.compile(r"(?:^|[,:/])gpu(?::[A-Za-z0-9_.-]+)?[:=](\d+)(?=$|[(,])")


def duration_seconds(text: str) -> int | None:
    """Seconds in a Slurm duration; None for UNLIMITED, N/A, INVALID and the like.

    ``"59:56"`` is minutes:seconds, ``"1:00:00"`` hours, ``"2-00:00:00"`` days; a bare number is
    minutes and ``"2-12"`` days-hours, as ``--time`` reads them. Raises ValueError for anything
    else.
    """
    text = text.strip()
    if text in NOTHING or text in UNLIMITED:
        return None
    days = 0
    rest = text
    if "-" in text:
        head, rest = text.split("-", 1)
        if not head.isdigit():
            raise ValueError(f"not a Slurm duration: {text!r}")
        days = int(head)
    parts = rest.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a Slurm duration: {text!r}")
    n = [int(p) for p in parts]
    if days or "-" in text:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (n + [0, 0])[:3]
    elif len(n) == 1:
        hours, minutes, seconds = 0, n[0], 0
    elif len(n) == 2:
        hours, (minutes, seconds) = 0, n
    else:
        hours, minutes, seconds = n
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def is_unlimited(text: str) -> bool:
    """True for Slurm's "no limit" words."""
    return text.strip() in UNLIMITED


def timestamp(text: str) -> datetime | None:
    """A Slurm timestamp as an aware datetime (Slurm prints local time); None for N/A."""
    text = text.strip()
    if text in NOTHING:
        return None
    return datetime.fromisoformat(text).astimezone()


def gpu_count(gres: str) -> int | None:
    """The number of GPUs in a gres/TRES string, summed over GPU types; None if none is named.

    ``"gpu:4"`` → 4, ``"gpu:a100:2(S:0-1),gpu:v100:1"`` → 3, ``"gres:gpu:2"`` → 2,
    ``"cpu=2,mem=1000M,gres/gpu=4"`` → 4, ``"gres/gpu=4,gres/gpu:a100=4"`` → 4 (the typed
    entry repeats the total), ``"N/A"`` → None, ``"gpu:0"`` → 0.
    """
    total = _TRES_GPU_TOTAL.search(gres)
    if total:  # a TRES list names the total and then each type again: count the total once
        return int(total.group(1))
    counts = [int(n) for n in _GPU_GRES.findall(gres.strip())]
    return sum(counts) if counts else None


def integer(text: str) -> int | None:
    """A whole number, or None for N/A and the like (Slurm's priority, CPU counts)."""
    text = text.strip()
    if text in NOTHING:
        return None
    return int(text)

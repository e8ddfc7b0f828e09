"""spawners.slurm.values: the forms Slurm prints durations, timestamps and GPU counts in."""

from __future__ import annotations

import pytest

from spawners.slurm.values import duration_seconds, gpu_count, integer, timestamp

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("59:56", 59 * 60 + 56),  # minutes:seconds (under an hour)
        ("0:53", 53),
        ("1:00:00", 3600),
        ("12:00:00", 12 * 3600),
        ("00:30:00", 1800),
        ("2-00:00:00", 2 * 86400),
        ("1-02:03:04", 86400 + 2 * 3600 + 3 * 60 + 4),
        ("30", 1800),  # --time=30 is minutes
        ("2-12", 2 * 86400 + 12 * 3600),
        ("1-2:30", 86400 + 2 * 3600 + 30 * 60),
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("INVALID", None),
        ("N/A", None),
        ("NONE", None),
    ],
)
def test_durations(text: str, seconds: int | None) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "1:2:3:4", "-5", "1h", "1-", "1:-2"])
def test_bad_durations_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm duration"):
        duration_seconds(bad)


@pytest.mark.parametrize(
    ("text", "gpus"),
    [
        ("gpu:4", 4),
        ("gpu:0", 0),
        ("gpu:4(IDX:0-3)", 4),
        ("gpu:a100:2(S:0-1),gpu:v100:1", 3),
        ("gres:gpu:2", 2),
        ("cpu=2,mem=1000M,gres/gpu=4", 4),
        ("gres/gpu=4,gres/gpu:a100=4", 4),
        ("gres/gpu:a100=2", 2),
        ("gpu:tesla:1(IDX:0),mps:100", 1),
        ("N/A", None),
        ("(null)", None),
        ("cpu=2,mem=1000M", None),
        ("mps:100", None),
    ],
)
def test_gpu_counts(text: str, gpus: int | None) -> None:
    assert gpu_count(text) == gpus


def test_timestamps_are_local_and_aware() -> None:
    t = timestamp("2026-11-24T19:17:31")
    assert t is not None and t.tzinfo is not None
    assert t.replace(tzinfo=None).isoformat() == "2026-11-24T19:17:31"
    assert timestamp("N/A") is None and timestamp("Unknown") is None


def test_integer() -> None:
    assert integer("4294901757") == 4294901757
    assert integer("N/A") is None
    with pytest.raises(ValueError):
        integer("many")

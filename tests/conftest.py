"""Shared fixtures. Integration tests start a real hub (tests/harness.py) and need root."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Hub, base_config, run_prefix  # noqa: E402

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the hub creates Unix accounts and setuid()s to them"
)


def new_hub(gpus: int = 4) -> Hub:
    workdir = Path(tempfile.mkdtemp(prefix="mlrp-test-"))
    workdir.chmod(0o755)
    return Hub(workdir, base_config(workdir / "data", run_prefix(), gpus=gpus))


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    """A running hub with a 4-GPU configured inventory and users alice, bob (students)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts and setuid()s to them")
    h = new_hub()
    try:
        h.start()
        h.add_user("alice")
        h.add_user("bob")
        yield h
    finally:
        h.cleanup()

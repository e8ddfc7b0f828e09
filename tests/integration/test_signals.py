"""`mlrp up` started as a shell's background job (SIGINT ignored, as bash does for `cmd &`) must
not hand that on: the idle culler would ignore JupyterHub's SIGINT and every hub shutdown would
wait out the kill timeouts (measured: 29.5 s instead of 2 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import new_hub

pytestmark = [pytest.mark.e2e]

SIGINT_BIT = 1 << (2 - 1)


def _ignored(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn line for {pid}")


def test_background_start_does_not_pass_on_an_ignored_sigint() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the hub creates Unix accounts and setuid()s to them")
    hub = new_hub()
    hub.sigint_ignored = True
    try:
        hub.start()
        assert hub.proc is not None
        children = [
            int(p)
            for p in Path(f"/proc/{hub.proc.pid}/task/{hub.proc.pid}/children").read_text().split()
        ]
        culler = [
            p
            for p in children
            if b"jupyterhub_idle_culler" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        assert culler, "the idle culler runs as a hub service"
        assert not _ignored(culler[0]) & SIGINT_BIT, "the culler must stop on JupyterHub's SIGINT"
    finally:
        hub.cleanup()

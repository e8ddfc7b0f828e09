"""GPUs are fenced, not just hidden: with the cgroup v1 devices controller, a server cannot open
the device node of a GPU leased to someone else, even if it ignores CUDA_VISIBLE_DEVICES.

The device nodes here are made with mknod (major 195, as /dev/nvidiaN); no driver is loaded on
this machine, so opening an allowed node fails with ENXIO ("no such device") while a fenced one
fails with EPERM before the driver is even asked: the boundary checked is the cgroup itself.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Hub, shared_dir

from spawners.cgroups import probe
from spawners.gpus import NVIDIA_MAJOR

pytestmark = [pytest.mark.e2e]

PROBE = """
import errno, os, sys
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        print("open")
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


@pytest.fixture()
def fake_nodes() -> Iterator[list[Path]]:
    if not (Path("/sys/fs/cgroup/devices/devices.deny").exists() and "devices" in probe().detail):
        pytest.skip(f"no writable cgroup v1 devices controller here: {probe().detail}")
    where = shared_dir("mlrp-devnodes-")  # pytest's tmp_path is mode 700
    where.chmod(0o755)
    nodes = []
    for i in range(4):
        node = where / f"nvidia{i}"
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(NVIDIA_MAJOR, i))
        node.chmod(0o666)
        nodes.append(node)
    try:
        yield nodes
    finally:
        shutil.rmtree(where)


def _open_as_server(pid: int, nodes: list[Path]) -> list[str]:
    """Open each node from a process placed in the server's cgroups, as the server's uid."""
    groups = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("devices", "memory", "cpu") and path.startswith("/mlrp/"):
            groups.append(Path("/sys/fs/cgroup") / controllers / path.lstrip("/"))
    assert any(g.parts[4] == "devices" for g in groups), f"server not in a devices cgroup: {groups}"
    uid = Path(f"/proc/{pid}").stat().st_uid

    def enter() -> None:
        for g in groups:
            (g / "cgroup.procs").write_text(str(os.getpid()))
        os.setgid(uid)  # the account's user group has the same number (useradd --user-group)
        os.setuid(uid)

    out = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, nodes)],
        preexec_fn=enter,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()


def test_server_cannot_open_gpus_leased_to_others(hub: Hub, fake_nodes: list[Path]) -> None:
    r = hub.start_server("bob", profile="gpu1")
    assert r.status_code in (201, 202), r.text
    try:
        mine = int(next(d for d, o in hub.leases().items() if o == "bob/"))
        results = _open_as_server(hub.server_pid("bob"), fake_nodes)
        expected = [
            errno.errorcode[errno.ENXIO] if i == mine else errno.errorcode[errno.EPERM]
            for i in range(4)
        ]
        assert results == expected, f"bob leases GPU {mine}: {results}"
    finally:
        hub.stop_server("bob")


def test_cpu_profile_opens_no_gpu(hub: Hub, fake_nodes: list[Path]) -> None:
    r = hub.start_server("bob", profile="cpu")
    assert r.status_code in (201, 202), r.text
    try:
        results = _open_as_server(hub.server_pid("bob"), fake_nodes)
        assert results == [errno.errorcode[errno.EPERM]] * 4
    finally:
        hub.stop_server("bob")

"""A private Podman for tests: its own configuration and storage under a state directory, a
local base image, nothing written to /etc/containers or /var/lib/containers.

What makes Podman work on these machines (../shared/ENVIRONMENT.md): runc (Debian's crun
refuses hybrid cgroups), the cgroupfs manager, the file events logger, and default ulimits no
higher than the hard limits (Podman's default of 1048576 needs CAP_SYS_RESOURCE). No registry
is reachable: the base image is a debootstrap'd Debian 12 with python3, python3-venv and the CA
certificates, imported as BASE_IMAGE (the catalog's Dockerfiles build FROM it via --base). The
root filesystem is cached in ROOTFS_CACHE across runs (a minute to make).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "localhost/mlrp-base:bookworm"
ROOTFS_CACHE = Path("/var/cache/mlrp-tests/rootfs-bookworm")
ROOTFS_PACKAGES = "python3,python3-venv,ca-certificates"


def _hard(limit: int, cap: int) -> int:
    hard = resource.getrlimit(limit)[1]
    return cap if hard == resource.RLIM_INFINITY else min(hard, cap)


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (its first URIs: line)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        found = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.M)
        if found:
            return found.group(1)
    return "http://deb.debian.org/debian"


@dataclass
class Podman:
    state: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.state / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.state / "storage.conf"),
        }

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def configure(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        nofile = _hard(resource.RLIMIT_NOFILE, 1048576)
        nproc = min(_hard(resource.RLIMIT_NPROC, 1048576), pid_max)
        (self.state / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.state}/storage"\n'
            f'runroot = "{self.state}/runroot"\n'
        )
        (self.state / "containers.conf").write_text(
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.state}/events.log"\n'
            f'tmp_dir = "{self.state}/libpod-tmp"\n'
            "[network]\n"
            f'network_config_dir = "{self.state}/networks"\n'
        )

    def import_base(self) -> None:
        if not (ROOTFS_CACHE / "usr" / "bin" / "python3").exists():
            shutil.rmtree(ROOTFS_CACHE, ignore_errors=True)
            ROOTFS_CACHE.parent.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}", "bookworm"]
                + [str(ROOTFS_CACHE), apt_mirror()],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if done.returncode != 0:
                shutil.rmtree(ROOTFS_CACHE, ignore_errors=True)
                raise RuntimeError(f"debootstrap failed:\n{done.stdout[-2000:]}{done.stderr}")
        tar = subprocess.Popen(["tar", "-C", str(ROOTFS_CACHE), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {imported.stderr}")

    def remove_all(self) -> None:
        """Every container and image of this private store, then the store itself."""
        self.run("rm", "--all", "--force", "--time", "0")
        self.run("system", "reset", "--force")
        shutil.rmtree(self.state, ignore_errors=True)


@contextmanager
def private_podman(root: Path) -> Iterator[Podman]:
    """A configured Podman under `root` with BASE_IMAGE imported; everything removed after."""
    p = Podman(root / f"podman-{os.getpid()}")
    p.configure()
    try:
        p.import_base()
        yield p
    finally:
        p.remove_all()


def podman_missing() -> bool:
    return shutil.which("podman") is None or shutil.which("debootstrap") is None

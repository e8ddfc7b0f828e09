"""Tests for spawners.isolation: a server's private /tmp, /var/tmp and /dev/shm, and its umask.

The mount namespace is made for real, in a child run as an unprivileged account (nobody), the
way the local backend starts a server: root steps, umask, then setuid. Those tests skip, naming
what is missing, where the process is not root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spawners.isolation import TMP_DIRS, PrivateTmp, parse_umask, private_tmp_works, shm_size

pytestmark = pytest.mark.unit

MiB = 2**20
root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason=f"needs root to make mount namespaces (uid {os.geteuid()})"
)


@pytest.mark.parametrize(("text", "mask"), [("077", 0o077), ("0027", 0o027), ("022", 0o022)])
def test_parse_umask(text: str, mask: int) -> None:
    assert parse_umask(text) == mask


@pytest.mark.parametrize("text", ["", "8", "0o77", "77777", "rwx", "-1", "0x1f"])
def test_parse_umask_refuses_what_is_not_octal(text: str) -> None:
    with pytest.raises(ValueError, match="umask must be 3 or 4 octal digits such as 077"):
        parse_umask(text)


NOBODY = pwd.getpwnam("nobody")
MINE = f"mlrp-test-{os.getpid()}"  # what the probe writes, named so no other run's file matches

# What a server's first process sees: its temp dirs, a file it creates, /dev/shm's size, and
# whether writing past that size is refused.
PROBE = """
import json, os, sys
mine = sys.argv[1]
seen = {}
for d in ("/tmp", "/var/tmp"):
    seen[d] = sorted(os.listdir(d))
    with open(os.path.join(d, mine), "w") as f:
        f.write("x")
    seen[d + "/mine"] = oct(os.stat(os.path.join(d, mine)).st_mode & 0o777)
os.mkdir(os.path.join("/tmp", mine + ".d"))
seen["dir"] = oct(os.stat(os.path.join("/tmp", mine + ".d")).st_mode & 0o777)
st = os.statvfs("/dev/shm")
seen["shm_bytes"] = st.f_blocks * st.f_frsize
seen["shm_owner"] = os.stat("/dev/shm").st_uid
try:
    with open("/dev/shm/" + mine, "wb") as f:
        for _ in range(8):
            f.write(b"x" * 2**20)
    seen["shm_overflow"] = "written"
except OSError as e:
    seen["shm_overflow"] = e.errno
print(json.dumps(seen))
"""


def _run_in(tmp: PrivateTmp, mask: int = 0o077) -> dict[str, object]:
    """Run PROBE as nobody in `tmp`'s namespace, as the local backend starts a server."""
    mounts = tmp.preexec_mounts()

    def preexec() -> None:
        mounts()
        os.umask(mask)
        os.setgroups([])
        os.setgid(NOBODY.pw_gid)
        os.setuid(NOBODY.pw_uid)

    out = subprocess.run(
        [sys.executable, "-c", PROBE, MINE],
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(autouse=True)
def _no_litter() -> Iterator[None]:
    """Where isolation is broken (a mutant run), the probe writes to the host: clean that."""
    yield
    for path in (Path("/tmp", MINE), Path("/var/tmp", MINE), Path("/dev/shm", MINE)):
        path.unlink(missing_ok=True)
    shutil.rmtree(Path("/tmp", MINE + ".d"), ignore_errors=True)


@pytest.fixture
def private_tmp(tmp_path: Path) -> Callable[..., PrivateTmp]:
    def make(tag: str = "mlrp-nobody", shm_bytes: int | None = 4 * MiB) -> PrivateTmp:
        tmp = PrivateTmp(tmp_path / "servers", tag, NOBODY.pw_uid, NOBODY.pw_gid, shm_bytes)
        tmp.prepare()
        return tmp

    return make


@root_only
def test_a_server_sees_only_its_own_temp_dirs(
    private_tmp: Callable[..., PrivateTmp], tmp_path: Path
) -> None:
    marker = Path("/tmp") / f"host-file-{os.getpid()}"
    marker.write_text("the host's")
    try:
        tmp = private_tmp()
        seen = _run_in(tmp)
    finally:
        marker.unlink()

    assert seen["/tmp"] == [] and seen["/var/tmp"] == [], "fresh and empty, not the host's"
    # What it wrote is in its own directory, not in the host's /tmp...
    assert (tmp.dir("tmp") / MINE).read_text() == "x"
    assert (tmp.dir("var-tmp") / MINE).read_text() == "x"
    assert not (Path("/tmp") / MINE).exists() and not (Path("/var/tmp") / MINE).exists()
    # ...below a directory nobody but root may enter, in directories only the server's owner may.
    assert (tmp.root.stat().st_mode & 0o777, tmp.base.stat().st_mode & 0o777) == (0o700, 0o700)
    for name in TMP_DIRS:
        info = tmp.dir(name).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (NOBODY.pw_uid, 0o700)
    # umask 077: a file and a directory the person makes are theirs alone.
    assert (seen["/tmp/mine"], seen["dir"]) == ("0o600", "0o700")

    tmp.remove()
    assert not tmp.base.exists()


@root_only
def test_dev_shm_is_private_and_no_larger_than_the_memory_limit(
    private_tmp: Callable[..., PrivateTmp],
) -> None:
    seen = _run_in(private_tmp(shm_bytes=4 * MiB))

    assert seen["shm_bytes"] == 4 * MiB
    assert seen["shm_owner"] == NOBODY.pw_uid
    assert seen["shm_overflow"] == 28, "ENOSPC: 8 MiB do not fit in a 4 MiB /dev/shm"
    assert not Path("/dev/shm", MINE).exists(), "the host's /dev/shm never saw it"


@root_only
def test_umask_is_what_the_admin_sets(private_tmp: Callable[..., PrivateTmp]) -> None:
    seen = _run_in(private_tmp(), mask=0o027)
    assert (seen["/tmp/mine"], seen["dir"]) == ("0o640", "0o750")


@root_only
def test_prepare_starts_empty_and_never_follows_a_planted_link(
    private_tmp: Callable[..., PrivateTmp], tmp_path: Path
) -> None:
    tmp = private_tmp()
    (tmp.dir("tmp") / "left-from-last-run").write_text("old")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    tmp.dir("var-tmp").rmdir()
    tmp.dir("var-tmp").symlink_to(victim)

    tmp.prepare()

    assert list(tmp.dir("tmp").iterdir()) == []
    assert tmp.dir("var-tmp").is_dir() and not tmp.dir("var-tmp").is_symlink()
    assert (victim / "keep").read_text() == "precious", "rmtree followed the link"

    # A whole base swapped for a link is unlinked, not emptied.
    tmp.remove()
    tmp.base.symlink_to(victim)
    tmp.prepare()
    assert (victim / "keep").read_text() == "precious"
    assert tmp.base.is_dir() and not tmp.base.is_symlink()


def test_without_a_namespace_temp_files_still_go_to_the_private_dir(tmp_path: Path) -> None:
    tmp = PrivateTmp(tmp_path, "mlrp-x", os.getuid(), os.getgid(), None)
    path = str(tmp.dir("tmp"))
    assert tmp.env() == {"TMPDIR": path, "TMP": path, "TEMP": path}


@root_only
def test_the_probe_finds_namespaces_here() -> None:
    assert private_tmp_works() == (
        True,
        "each server gets a private /tmp, /var/tmp and /dev/shm (mount namespace)",
    )


def test_the_probe_says_why_not_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ok, detail = private_tmp_works()
    assert not ok and "not root" in detail


def test_dev_shm_gets_half_the_memory_limit() -> None:
    """Half, like a node's /dev/shm of half its RAM: filling it is a clear ENOSPC with memory
    to spare, not an out-of-memory kill of the whole server."""
    assert shm_size(512 * MiB) == 256 * MiB
    assert shm_size(None) is None, "no limit: the kernel's default"
    assert shm_size(1000) == MiB, "never a /dev/shm too small to hold a semaphore"

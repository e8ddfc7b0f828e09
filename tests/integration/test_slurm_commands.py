"""spawners.slurm against a real Slurm 22.05 (munge, slurmctld, two slurmd "nodes" with fake GPU
devices), through the `slurm_cluster` fixture of the Slurm test harness.

Assumed fixture API (from the harness): ``cluster.env`` (the environment Slurm commands need,
SLURM_CONF included), ``cluster.run(argv, as_user=None)``, ``cluster.hold_gpus(unix, partition,
gpus, seconds)`` (returns the job id of a job holding GPUs), ``cluster.cancel(job_id)``, and
partitions ``gpu`` (2 nodes x 4 GPUs) and ``debug``. Where the harness is not present these
tests skip, saying so.

Jobs run as the ``nobody`` account (it exists on every Debian machine), so these tests need
no accounts of their own. Stand-ins: the GPUs are fake device nodes; the "image" is the system
Python with a stub jupyterhub-singleuser that prints what it was started with.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from spawners.slurm.partitions import nodes_argv, parse_partitions, partitions_argv
from spawners.slurm.queue import Status, query
from spawners.slurm.run import run
from spawners.slurm.script import BatchJob, render
from spawners.slurm.submit import SubmitError, cancel, submit

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: submits as another account"),
]

USER = "nobody"


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Any:
    try:
        return request.getfixturevalue("slurm_cluster")
    except pytest.FixtureLookupError:
        pytest.skip("no slurm_cluster fixture: the Slurm test harness (tests/slurm.py) is absent")


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A directory the job's account can read and write (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="mlrp-slurm-cmds-", dir="/tmp"))
    path.chmod(0o1777)
    prefix = path / "env" / "bin"
    prefix.mkdir(parents=True)
    (prefix / "python").symlink_to("/usr/bin/python3")
    stub = prefix / "jupyterhub-singleuser"
    stub.write_text(
        "#!/usr/bin/python3\nimport json, os, pwd, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'user': pwd.getpwuid(os.getuid()).pw_name,\n"
        "  'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), 'secret': os.environ.get('SECRET'),\n"
        "  'hub_user': os.environ.get('JUPYTERHUB_USER')}), flush=True)\n"
    )
    for p in (path / "env", prefix, stub):
        p.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(cluster: Any, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **cluster.env}
    env.update(extra)
    return env


async def _wait_for(cluster: Any, job_id: str, want: Status, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        seen = (await query([job_id], env=_env(cluster)))[job_id]
        if seen.status is want or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


class _Hub:
    def __init__(self) -> None:
        self.posts: list[Any] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hub.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _job(where: Path, **change: Any) -> BatchJob:
    """A one-CPU job on partition gpu writing its log under `where`; `change` sets the rest."""
    values: dict[str, Any] = dict(
        partition="gpu",
        cpus=1,
        memory_mb=100,
        walltime_minutes=1,
        output=f"{where}/job-%j.log",
        workdir=str(where),
        env_prefix=f"{where}/env",
        bind_ip="127.0.0.1",
        export=("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"),
    )
    values.update(change)
    return BatchJob(**values)


async def test_rendered_script_runs_as_the_user_with_its_gpus(cluster: Any, shared: Path) -> None:
    hub = _Hub()
    try:
        env = _env(
            cluster,
            JUPYTERHUB_API_URL=hub.url,
            JUPYTERHUB_API_TOKEN="tok",
            JUPYTERHUB_USER="alice",
            SECRET="stays-on-the-hub",
        )
        job = _job(
            shared,
            tag="cmds-test",
            gpus=2,
            memory_mb=500,
            walltime_minutes=2,
            export=tuple(k for k in env if k != "SECRET"),
        )
        job_id = await submit(render(job), user=USER, partition="gpu", env=env)
        seen = await _wait_for(cluster, job_id, Status.GONE)
        assert seen.status is Status.GONE
        log = (shared / f"job-{job_id}.log").read_text()
        # The stub's line and the port report's "mlrp: listening" come in either order.
        started = json.loads(next(line for line in log.splitlines() if line.startswith("{")))
        (post,) = hub.posts
        assert started["argv"] == ["--ip=127.0.0.1", f"--port={post['port']}"]
        assert started["user"] == USER
        assert len(started["cuda"].split(",")) == 2  # what Slurm assigned
        assert started["secret"] is None  # --export lists names: nothing else crosses
        assert started["hub_user"] == "alice"
    finally:
        hub.server.shutdown()
        hub.server.server_close()


async def test_known_and_unknown_ids_in_one_query(cluster: Any) -> None:
    held = cluster.hold_gpus(USER, "gpu", 1, 120)
    try:
        seen = await query([held, "999999"], env=_env(cluster))
        assert seen[held].status is Status.RUNNING
        assert seen["999999"].status is Status.GONE
        alone = await query(["999999"], env=_env(cluster))
        assert alone["999999"].status is Status.GONE
    finally:
        cluster.cancel(held)
    assert (await _wait_for(cluster, held, Status.GONE)).status is Status.GONE


async def test_free_gpus_and_an_impossible_request(cluster: Any) -> None:
    env = _env(cluster)
    held = cluster.hold_gpus(USER, "gpu", 2, 120)
    try:
        await _wait_for(cluster, held, Status.RUNNING)
        for _ in range(20):
            p = await run(partitions_argv(), env=env, timeout=30)
            n = await run(nodes_argv(), env=env, timeout=30)
            gpu = parse_partitions(p.stdout, n.stdout)["gpu"]
            if gpu.gpus_free == gpu.gpus_total - 2:
                break
            await asyncio.sleep(0.5)
        assert (gpu.gpus_total, gpu.gpus_free) == (8, 6)
    finally:
        cluster.cancel(held)
    script = render(_job(Path("/tmp"), tag="too-many", gpus=9, env_prefix="/usr"))
    with pytest.raises(SubmitError) as refused:
        await submit(script, user=USER, partition="gpu", env=env)
    assert refused.value.reason == "impossible"
    assert "Requested node configuration is not available" in refused.value.detail


async def test_cancel_makes_it_gone(cluster: Any) -> None:
    held = cluster.hold_gpus(USER, "gpu", 1, 300)
    result = await cancel([held], env=_env(cluster))
    assert result.ok, result.outcome.describe()
    seen = await _wait_for(cluster, held, Status.GONE)
    assert seen.status is Status.GONE
    assert seen.job is None or seen.job.state == "CANCELLED"

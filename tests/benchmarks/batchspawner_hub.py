"""The ecosystem anchor for the Slurm benchmarks: vanilla JupyterHub + batchspawner's SlurmSpawner.

What an admin would run instead of MLRP to put JupyterLab sessions on a Slurm cluster:
`<venv>/bin/jupyterhub` (JupyterHub 6.x) with `batchspawner.SlurmSpawner` (batchspawner 1.3, a
test extra of the same venv), its default batch script, its default sbatch/squeue/scancel
command lines and its default intervals (JupyterHub's `Spawner.poll_interval`, 30 s: one
`squeue -h -j <job> -o '%T %B'` per server; batchspawner's `startup_poll_interval`, 0.5 s, while
a job starts). Everything else is VanillaHub's (vanilla_hub.py): free loopback ports, its own
configurable-http-proxy, SQLite and cookie secret in its work directory, an admin token it
generated, users named exactly like the Unix accounts our hub created.

Settings batchspawner needs on this machine, and why (each is a documented trait, none changes
what batchspawner runs apart from the named word):

- `exec_prefix = "runuser -u {username} --"`: the default `sudo -E -u {username}` needs sudo,
  which these machines do not have; runuser (as root, like the hub) runs the command as the
  person's account, as sudo would. `runuser` keeps the environment, as `sudo -E` does.
- SLURM_CONF (the private test cluster's slurm.conf) in `Spawner.environment` (sbatch runs with
  `get_env()`) and in the hub process's own environment (squeue and scancel run with it).
- `batchspawner_singleuser_cmd` and `Spawner.cmd`: full paths in the venv (the job's PATH is
  the hub's, which need not contain the venv).
- `req_partition`, `req_runtime`, `req_memory`, `req_nprocs`: the same request as our job
  (partition gpu, its walltime in minutes, memory, 1 CPU), from our job's own batch script.
- `state_exechost_exp = "127.0.0.1"`: the address of the job's node. squeue's `%B` gives the
  Slurm node name (node1, node2: both "nodes" are this host, named with `slurmd -N`), which does
  not resolve; MultiSlurmSpawner's `daemon_resolver` exists for this, this keeps SlurmSpawner.
  (Ours reads the node's NodeAddr from Slurm, 127.0.0.1 here.)
- `req_prologue`: `export JUPYTERHUB_SERVICE_URL=` the same URL with 127.0.0.1 for 0.0.0.0.
  `BatchSpawnerBase.start()` resets `ip` to its class default 0.0.0.0 whatever the config says,
  and jupyterhub-singleuser listens where that URL says; tests listen on loopback only. One
  shell substitution in the batch script; ours listens on 127.0.0.1 through `slurm.server_ip`.
"""

from __future__ import annotations

import os
import random
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from unittest import mock

from harness import VENV
from vanilla_hub import VanillaHub

BATCHSPAWNER_SINGLEUSER = VENV / "bin" / "batchspawner-singleuser"
EXEC_PREFIX = "runuser -u {username} --"
# batchspawner.SlurmSpawner.batch_query_cmd, its default (batchspawner 1.3).
QUERY_CMD = "squeue -h -j {job_id} -o '%T %B'"
# JupyterHub's Spawner.poll_interval and poll_jitter defaults (batchspawner keeps them).
POLL_INTERVAL = 30.0
POLL_JITTER = 0.1
LOOPBACK_PROLOGUE = 'export JUPYTERHUB_SERVICE_URL="${JUPYTERHUB_SERVICE_URL/0.0.0.0/127.0.0.1}"'


@dataclass
class BatchSpawnerHub(VanillaHub):
    """VanillaHub with `batchspawner.SlurmSpawner` against the cluster at `slurm_conf`."""

    slurm_conf: str = ""
    partition: str = "gpu"
    runtime: str = "60"  # sbatch --time (minutes)
    memory: str = "1024M"  # sbatch --mem
    nprocs: str = "1"  # sbatch --cpus-per-task

    def config(self) -> str:
        settings: dict[str, Any] = {
            "JupyterHub.spawner_class": "batchspawner.SlurmSpawner",
            "SlurmSpawner.exec_prefix": EXEC_PREFIX,
            "SlurmSpawner.batchspawner_singleuser_cmd": str(BATCHSPAWNER_SINGLEUSER),
            "SlurmSpawner.req_partition": self.partition,
            "SlurmSpawner.req_runtime": self.runtime,
            "SlurmSpawner.req_memory": self.memory,
            "SlurmSpawner.req_nprocs": self.nprocs,
            "SlurmSpawner.state_exechost_exp": "127.0.0.1",
            "SlurmSpawner.req_prologue": LOOPBACK_PROLOGUE,
        }
        lines = [
            super().config().rstrip("\n"),
            "# batchspawner (tests/benchmarks/batchspawner_hub.py says why each is set)",
            "import batchspawner  # noqa: F401  registers /hub/api/batchspawner (port report)",
        ]
        for key, value in settings.items():
            section, name = key.split(".")
            lines.append(f"c.{section}.{name} = {value!r}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 60) -> None:
        """VanillaHub.start, with SLURM_CONF in the hub's environment: batchspawner runs squeue
        and scancel with the hub's own environment (sbatch with get_env(), which has it from
        Spawner.environment)."""
        if not self.slurm_conf:
            raise ValueError("BatchSpawnerHub needs slurm_conf: the cluster's slurm.conf")
        self.server_env = {**self.server_env, "SLURM_CONF": self.slurm_conf}
        with mock.patch.dict(os.environ, {"SLURM_CONF": self.slurm_conf}):
            super().start(timeout)

    def job_id(self, name: str) -> str:
        """The Slurm job of `name`'s server, from the state batchspawner saved."""
        server = self.api("GET", f"/users/{name}").json().get("servers", {}).get("", {})
        return str(server.get("state", {}).get("job_id", ""))


def polling_spawners(account: str, job_ids: list[str], squeue: str = "squeue") -> list[Any]:
    """One batchspawner.SlurmSpawner per job, as a hub holds one per running server, set up to
    poll: the job id it saved, the account, `exec_prefix` as the hub above has it, and its
    default query command with `squeue` (a counting wrapper) for the word squeue. `req_keepvars`
    is given so that building the substitution variables does not need a hub (get_env)."""
    from batchspawner import SlurmSpawner

    query = QUERY_CMD.replace("squeue", shlex.quote(squeue), 1)
    spawners = []
    for job_id in job_ids:
        sp = SlurmSpawner(
            user=SimpleNamespace(name=account),
            exec_prefix=EXEC_PREFIX,
            batch_query_cmd=query,
            req_keepvars="",
        )
        sp.job_id = job_id
        spawners.append(sp)
    return spawners


def next_poll_delay(period: float = POLL_INTERVAL, jitter: float = POLL_JITTER) -> float:
    """tornado.ioloop.PeriodicCallback's next interval with jitter, as JupyterHub polls."""
    return period * (1 + jitter * (random.random() - 0.5))


@contextmanager
def slurm_env(conf: str) -> Iterator[None]:
    """SLURM_CONF in this process's environment while batchspawner polls from it (it runs
    squeue with the process's environment, as in its hub)."""
    with mock.patch.dict(os.environ, {"SLURM_CONF": conf}):
        yield

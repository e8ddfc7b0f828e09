"""`mlrp doctor --config FILE` against the real private Slurm cluster of tests/slurm.py: with it
answering, every Slurm row passes; with slurmctld frozen (SIGSTOP, as a controller that hangs),
the controller row fails with its fix line and the rows that need it are not judged.

Stand-ins, named: the cluster's two nodes are this host at 127.0.0.1 (so the network row judges
loopback), and its GPUs are device files with /dev/null's numbers. `mlrp doctor` is the CLI from
the checkout, in a subprocess, as an admin runs it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import run_mlrp
from slurm import SlurmCluster

from hub import doctor

pytestmark = [pytest.mark.slurm]

SLURM_ROWS = (
    "Slurm client",
    "slurm.conf",
    "munge",
    "Slurm controller",
    "Slurm profile cluster",
    "Slurm profile quick",
    "Slurm network",
)


def row(output: str, name: str) -> str:
    (found,) = [
        line for line in output.splitlines() if re.match(rf"^\S+\s+{re.escape(name)}\s", line)
    ]
    return found


def write_config(tmp_path: Path, cluster: SlurmCluster) -> Path:
    base: dict[str, Any] = {"backend": "slurm", "cpus": 1, "memory": "1G"}
    config = tmp_path / "mlrp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"data_dir": str(tmp_path / "data"), "proxy_command": ["/bin/true"]},
                "accounts": {"mode": "single-user"},
                "profiles": [
                    {"slug": "cpu", "name": "CPU"},
                    {
                        **base,
                        "slug": "cluster",
                        "name": "Cluster GPU",
                        "gpus": {"choices": [1, 4], "default": 1},
                        "placement": {"partition": "gpu", "walltime": "8:00:00"},
                    },
                    {
                        **base,
                        "slug": "quick",
                        "name": "Quick debug",
                        "placement": {"partition": "debug", "walltime": 20},
                    },
                ],
                "slurm": {"conf": str(cluster.conf), "poll_interval": 5},
            }
        )
    )
    return config


def test_doctor_passes_every_slurm_row_on_a_working_cluster(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    out = run_mlrp("doctor", "--config", str(write_config(tmp_path, slurm_cluster)))
    assert "Traceback" not in out.stderr, out.stderr
    for name in SLURM_ROWS:
        assert row(out.stdout, name).startswith("OK "), out.stdout
    assert out.returncode == 0, out.stdout
    assert "Slurmctld(primary) at" in row(out.stdout, "Slurm controller")
    assert row(out.stdout, "Slurm controller").endswith(" is UP")
    assert f"munged answers on {slurm_cluster.munge_socket}" in out.stdout
    assert row(out.stdout, "Slurm profile cluster").endswith(
        "partition gpu UP, 2 nodes (2 usable now), 4 GPUs per node (8 of 8 free), MaxTime 12 hours"
    )
    assert "asks for up to 4 GPUs, 1 CPU and 1,024 MB for 8 hours: fits" in out.stdout
    assert "the nodes node1 (127.0.0.1), node2 (127.0.0.1) are this host" in out.stdout


def test_doctor_says_a_frozen_controller_does_not_answer(
    tmp_path: Path, slurm_cluster: SlurmCluster
) -> None:
    config = write_config(tmp_path, slurm_cluster)
    slurm_cluster.freeze_controller()
    try:
        started = time.monotonic()
        out = run_mlrp("doctor", "--config", str(config))
        took = time.monotonic() - started
    finally:
        slurm_cluster.thaw_controller()
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1, out.stdout
    controller = row(out.stdout, "Slurm controller")
    # scontrol's own verdict after its MessageTimeout (10 s), within the doctor's 15 s.
    assert re.fullmatch(
        r"MISSING\s+Slurm controller\s+Slurmctld\(primary\) at \S+ is DOWN", controller
    )
    assert f"fix: {doctor.CONTROLLER_FIX}" in out.stdout.splitlines()
    assert "1 required check failed: Slurm controller." in out.stdout
    # What needs the controller is not asked (nothing else waits another 10 s), and says why.
    for name in ("Slurm profile cluster", "Slurm profile quick"):
        assert row(out.stdout, name).startswith("WARN "), out.stdout
        assert row(out.stdout, name).endswith(
            "not judged: the controller does not answer (see Slurm controller)"
        )
    for name in ("Slurm client", "slurm.conf", "munge"):
        assert row(out.stdout, name).startswith("OK "), out.stdout
    assert took < doctor.PING_TIMEOUT + 20, f"doctor took {took:.0f} s"
    # Thawed, the controller answers the next doctor again.
    again = run_mlrp("doctor", "--config", str(config))
    assert row(again.stdout, "Slurm controller").startswith("OK "), again.stdout

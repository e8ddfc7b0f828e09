"""The real-Slurm harness (tests/slurm.py) does what the Slurm tests rely on: two idle 4-GPU nodes,
three partitions with their limits, jobs that run as the submitting account with the GPUs Slurm
assigned, a queue that waits for GPUs, a partition the account may not use, and a stop that leaves
nothing behind.

Stand-in: the 8 GPUs are character devices with /dev/null's numbers (no GPU here); everything else
(munge, slurmctld, slurmd, sbatch) is the real Debian Slurm 22.05.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator

import pytest
from harness import remove_accounts, run_prefix
from slurm import (
    NODES,
    PARTITIONS,
    SlurmCluster,
    SlurmError,
    make_account,
    pid_state,
    start_cluster,
)

pytestmark = [pytest.mark.slurm]


@pytest.fixture(scope="module")
def account(slurm_cluster: SlurmCluster) -> Iterator[str]:
    """An ordinary Unix account (not in group root) that submits the jobs."""
    prefix = run_prefix()
    try:
        yield make_account(prefix + "alice")
    finally:
        remove_accounts(prefix)


def _output(cluster: SlurmCluster, account: str, job: str) -> str:
    cluster.wait_for_state(job, "COMPLETED")
    return (cluster.log_dir_for(account) / f"{job}.out").read_text()


def _nodes_of(cluster: SlurmCluster, job: str) -> str:
    return cluster.run(["squeue", "--noheader", f"--jobs={job}", "--format=%N"]).stdout.strip()


def test_both_nodes_idle_with_gpus_and_the_three_partitions(slurm_cluster: SlurmCluster) -> None:
    sinfo = slurm_cluster.run(["sinfo", "--noheader", "--Node", "--format=%N %T %G"])
    # one line per node and partition
    assert set(sinfo.stdout.splitlines()) == {f"{n} idle gpu:4" for n in NODES}
    shown = slurm_cluster.run(["scontrol", "show", "partition", "--oneliner"]).stdout
    partitions = {}
    for line in shown.splitlines():
        fields = dict(f.split("=", 1) for f in line.split())
        partitions[fields["PartitionName"]] = fields
    assert set(partitions) == set(PARTITIONS) == {"gpu", "debug", "staffonly"}
    expected = {"gpu": "12:00:00", "debug": "00:30:00", "staffonly": "01:00:00"}
    assert {name: p["MaxTime"] for name, p in partitions.items()} == expected
    assert {name: p["Nodes"] for name, p in partitions.items()} == {
        "gpu": "node[1-2]",
        "debug": "node1",
        "staffonly": "node2",
    }
    assert partitions["gpu"]["Default"] == "YES"
    assert partitions["staffonly"]["AllowGroups"] == "root"
    assert partitions["gpu"]["AllowGroups"] == "ALL"


def test_job_runs_as_its_account_with_the_two_gpus_slurm_assigned(
    slurm_cluster: SlurmCluster, account: str
) -> None:
    job = slurm_cluster.sbatch(
        account, "--gres=gpu:2", "--wrap=id -un; echo gpus=$CUDA_VISIBLE_DEVICES"
    )
    out = _output(slurm_cluster, account, job)
    lines = out.splitlines()
    assert lines[0] == account
    gpus = lines[1].removeprefix("gpus=").split(",")
    assert len(gpus) == len(set(gpus)) == 2, out
    assert all(g.isdigit() for g in gpus), out


def test_sbatch_to_running_is_quick(slurm_cluster: SlurmCluster, account: str) -> None:
    start = time.monotonic()
    job = slurm_cluster.sbatch(account, "--gres=gpu:1", "--wrap=sleep 30")
    try:
        slurm_cluster.wait_for_state(job, "RUNNING", timeout=5)
        print(f"sbatch -> RUNNING: {time.monotonic() - start:.2f} s")
    finally:
        slurm_cluster.cancel(job)


def test_two_four_gpu_jobs_land_on_different_nodes(
    slurm_cluster: SlurmCluster, account: str
) -> None:
    first = slurm_cluster.hold_gpus(account, "gpu", 4, seconds=60)
    try:
        second = slurm_cluster.hold_gpus(account, "gpu", 4, seconds=60)
        try:
            assert {_nodes_of(slurm_cluster, first), _nodes_of(slurm_cluster, second)} == set(NODES)
        finally:
            slurm_cluster.cancel(second)
    finally:
        slurm_cluster.cancel(first)


def test_more_gpus_than_a_node_has_is_refused_at_once(
    slurm_cluster: SlurmCluster, account: str
) -> None:
    start = time.monotonic()
    with pytest.raises(SlurmError, match="Requested node configuration is not available"):
        slurm_cluster.sbatch(account, "--gres=gpu:9", "--wrap=true")
    assert time.monotonic() - start < 5


def test_with_all_gpus_held_a_job_waits_for_resources_then_runs(
    slurm_cluster: SlurmCluster, account: str
) -> None:
    hold = slurm_cluster.hold_gpus(account, "gpu", 8, seconds=120)
    assert _nodes_of(slurm_cluster, hold) == "node[1-2]"
    job = slurm_cluster.sbatch(account, "--gres=gpu:1", "--wrap=sleep 30")
    try:
        waited = slurm_cluster.wait_for_state(job, "PENDING", "Resources")
        print(f"sbatch -> PENDING Resources: {waited:.2f} s")
        time.sleep(1.5)  # past a backfill cycle (bf_interval=1): it must still wait
        assert slurm_cluster.job(job) == ("PENDING", "Resources")
        slurm_cluster.cancel(hold)
        print(
            f"cancel of the holder -> RUNNING: {slurm_cluster.wait_for_state(job, 'RUNNING'):.2f} s"
        )
    finally:
        slurm_cluster.cancel(job)
        slurm_cluster.cancel(hold)


def test_the_account_may_not_use_the_staff_partition(
    slurm_cluster: SlurmCluster, account: str
) -> None:
    with pytest.raises(SlurmError, match="not permitted to use this partition"):
        slurm_cluster.sbatch(account, "--partition=staffonly", "--wrap=true")


def test_a_frozen_controller_answers_nothing_until_thawed(slurm_cluster: SlurmCluster) -> None:
    pid = slurm_cluster.pids()["slurmctld"]
    slurm_cluster.freeze_controller()
    try:
        assert pid_state(pid) == "T"
        with pytest.raises(subprocess.TimeoutExpired):
            slurm_cluster.run(["squeue"], timeout=1.5)
    finally:
        slurm_cluster.thaw_controller()
    assert pid_state(pid) in {"S", "R"}
    assert slurm_cluster.run(["squeue"], timeout=10).returncode == 0


def test_hold_gpus_refuses_a_shape_no_node_has(slurm_cluster: SlurmCluster, account: str) -> None:
    with pytest.raises(ValueError, match="6 GPUs is neither"):
        slurm_cluster.hold_gpus(account, "gpu", 6)


def test_stop_leaves_no_process_and_no_directory(account: str) -> None:
    cluster = start_cluster()
    try:
        job = cluster.sbatch(account, "--gres=gpu:1", "--wrap=echo started; exec sleep 300")
        cluster.wait_for_state(job, "RUNNING")
        output = cluster.log_dir_for(account) / f"{job}.out"
        deadline = time.monotonic() + 20
        while not (output.exists() and output.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = cluster.all_pids()
        # the four daemons, slurmctld's script helper, the job's step daemon and its sleep
        assert len(pids) >= len(cluster.pids()) + 3, pids
        assert set(cluster.pids().values()) < pids
        assert account in {_owner(p) for p in pids}  # the job's own processes are found too
    finally:
        start = time.monotonic()
        cluster.stop()
        print(f"stop: {time.monotonic() - start:.2f} s")
    assert not {p for p in pids if pid_state(p) not in ("", "Z")}
    assert not cluster.dir.exists()
    cluster.stop()  # again: nothing to do, no error


def _owner(pid: int) -> str:
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return ""

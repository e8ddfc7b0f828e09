"""spawners.slurm.partitions against scontrol outputs captured from a real Slurm 22.05."""

from __future__ import annotations

from pathlib import Path

import pytest

from spawners.slurm.partitions import (
    Partition,
    Request,
    SlurmInfoError,
    impossible,
    nodes_argv,
    parse_nodes,
    parse_oneliner,
    parse_partitions,
    partitions_argv,
)

pytestmark = pytest.mark.unit

OUT = Path(__file__).parent / "slurm_outputs"


def parts(nodes_file: str) -> dict[str, Partition]:
    return parse_partitions(
        (OUT / "scontrol_partitions.txt").read_text(), (OUT / nodes_file).read_text()
    )


IDLE = parts("scontrol_nodes_idle.txt")


def req(partition: str = "gpu", gpus: int = 1, cpus: int = 2, mem: int = 1000, minutes: int = 60):
    return Request(partition, gpus, cpus, mem, minutes)


def test_argv() -> None:
    assert partitions_argv(["/opt/slurm/bin/scontrol"]) == [
        "/opt/slurm/bin/scontrol",
        "--all",
        "show",
        "partition",
        "--oneliner",
    ]
    assert nodes_argv() == ["scontrol", "show", "node", "--oneliner", "--details"]


def test_partitions_from_slurm() -> None:
    assert set(IDLE) == {"gpu", "debug", "staff", "closed"}
    gpu = IDLE["gpu"]
    assert (gpu.state, gpu.up, gpu.max_time, gpu.allow_groups) == ("UP", True, 12 * 3600, None)
    assert [n.name for n in gpu.nodes] == ["node1", "node2"]
    assert (gpu.max_gpus_per_node, gpu.max_cpus_per_node, gpu.max_memory_mb_per_node) == (
        4,
        8,
        8000,
    )
    assert (gpu.gpus_total, gpu.gpus_free) == (8, 8)
    assert IDLE["debug"].max_time == 1800 and [n.name for n in IDLE["debug"].nodes] == ["node1"]
    assert IDLE["staff"].max_time is None  # UNLIMITED
    assert IDLE["staff"].allow_groups == frozenset({"sbstaff"})
    assert IDLE["closed"].state == "DOWN" and not IDLE["closed"].up


def test_free_gpus_follow_gres_used_and_node_state() -> None:
    busy = parts("scontrol_nodes_busy.txt")  # node1: 3 of 4 used; node2: drained, 4 used
    assert (busy["gpu"].gpus_total, busy["gpu"].gpus_free) == (8, 1)
    assert busy["debug"].gpus_free == 1
    drain = parts("scontrol_nodes_drain.txt")  # all 8 used
    assert drain["gpu"].gpus_free == 0


def test_drained_node_has_no_free_gpus_even_when_idle() -> None:
    line = (OUT / "scontrol_nodes_idle.txt").read_text().splitlines()[1]
    drained = parse_nodes(line.replace("State=IDLE", "State=IDLE+DRAIN"))[0]
    assert drained.gpus == 4 and drained.gpus_free == 0 and not drained.usable
    for state in ("DOWN+NOT_RESPONDING", "IDLE*", "MIXED+FAIL", "FUTURE"):
        node = parse_nodes(line.replace("State=IDLE", f"State={state}"))[0]
        assert not node.usable, state
    for state in ("IDLE", "MIXED", "ALLOCATED", "IDLE+POWERED_DOWN", "IDLE+CLOUD"):
        assert parse_nodes(line.replace("State=IDLE", f"State={state}"))[0].usable, state


def test_alloc_tres_is_the_fallback_for_gpus_in_use() -> None:
    line = (OUT / "scontrol_nodes_idle.txt").read_text().splitlines()[0]
    line = line.replace(" GresUsed=gpu:0", "").replace(
        "AllocTRES= ", "AllocTRES=cpu=2,mem=1000M,gres/gpu=3 "
    )
    assert "gres/gpu=3" in line
    assert parse_nodes(line)[0].gpus_used == 3


def test_values_with_spaces_and_equals_signs() -> None:
    node2 = (OUT / "scontrol_nodes_drain.txt").read_text().splitlines()[1]
    f = parse_oneliner(node2)
    assert f["OS"] == "Linux 6.18.44-fc-v595 #1 SMP PREEMPT_DYNAMIC @0"
    assert f["State"] == "MIXED+DRAIN" and f["Partitions"] == "gpu,staff,closed"
    # An admin's reason "fan=broken" must not shadow a real key: the first occurrence wins.
    sneaky = node2.replace("fan=broken", "State=IDLE")
    assert parse_oneliner(sneaky)["State"] == "MIXED+DRAIN"


def test_unreadable_output_raises() -> None:
    with pytest.raises(SlurmInfoError):
        parse_partitions("slurm_load_partitions: Unable to contact slurm controller\n", "")
    with pytest.raises(SlurmInfoError):
        parse_nodes("NodeName=n1 CPUTot=many RealMemory=1\n")


# --- can this request ever run? --------------------------------------------------------------


def test_a_request_that_fits_is_possible() -> None:
    assert impossible(req(gpus=4, cpus=8, mem=8000, minutes=720), IDLE["gpu"], ["users"]) is None
    assert impossible(req(gpus=0), IDLE["gpu"], []) is None


def test_more_gpus_than_any_node() -> None:
    msg = impossible(req(gpus=5), IDLE["gpu"], [])
    assert msg == (
        "The nodes of partition gpu have at most 4 GPUs each; you asked for 5. Ask for 4 or fewer."
    )


def test_walltime_beyond_max_time() -> None:
    msg = impossible(req("debug", minutes=31), IDLE["debug"], [])
    assert msg == (
        "Partition debug allows at most 30 minutes per session; you asked for 31 minutes. "
        "Ask for 30 minutes or less."
    )
    assert impossible(req("debug", minutes=30), IDLE["debug"], []) is None
    assert "at most 12 hours" in (impossible(req(minutes=721), IDLE["gpu"], []) or "")


def test_unlimited_max_time_allows_any_walltime() -> None:
    assert impossible(req("staff", minutes=10**6), IDLE["staff"], ["sbstaff"]) is None


def test_cpus_and_memory_beyond_any_node() -> None:
    assert "at most 8 CPUs each; you asked for 9" in (
        impossible(req(cpus=9), IDLE["gpu"], []) or ""
    )
    assert "at most 8,000 MB of memory each; you asked for 8,001 MB" in (
        impossible(req(mem=8001), IDLE["gpu"], []) or ""
    )


def test_group_not_allowed() -> None:
    msg = impossible(req("staff"), IDLE["staff"], ["sbalice", "users"])
    assert msg is not None and "only for members of sbstaff" in msg
    assert impossible(req("staff"), IDLE["staff"], ["sbbob", "sbstaff"]) is None


def test_partition_down_is_a_wait_not_impossible() -> None:
    assert impossible(req("closed"), IDLE["closed"], []) is None


def test_busy_or_drained_is_a_wait_not_impossible() -> None:
    drain = parts("scontrol_nodes_drain.txt")
    assert impossible(req(gpus=4), drain["gpu"], []) is None


def test_no_single_node_has_everything_together() -> None:
    base = IDLE["gpu"]
    n1, n2 = base.nodes
    # node1: 4 GPUs, 2 CPUs; node2: 0 GPUs, 8 CPUs. 4 GPUs fit n1, 8 CPUs fit n2, not together.
    lopsided = Partition(
        **{
            **base.__dict__,
            "nodes": (
                type(n1)(**{**n1.__dict__, "cpus": 2}),
                type(n2)(**{**n2.__dict__, "gpus": 0}),
            ),
        }
    )
    msg = impossible(req(gpus=4, cpus=8), lopsided, [])
    assert msg is not None and msg.startswith("No single node of partition gpu has 4 GPUs, 8 CPUs")


def test_max_cpus_per_node_caps_the_nodes() -> None:
    capped = parse_partitions(
        (OUT / "scontrol_partitions.txt")
        .read_text()
        .replace("MaxCPUsPerNode=UNLIMITED", "MaxCPUsPerNode=4"),
        (OUT / "scontrol_nodes_idle.txt").read_text(),
    )
    assert capped["gpu"].max_cpus_per_node == 4
    assert "at most 4 CPUs" in (impossible(req(cpus=5), capped["gpu"], []) or "")


def test_root_only_partition() -> None:
    root = parse_partitions(
        (OUT / "scontrol_partitions.txt").read_text().replace("RootOnly=NO", "RootOnly=YES"),
        (OUT / "scontrol_nodes_idle.txt").read_text(),
    )
    assert "reserved for the administrators" in (impossible(req(), root["gpu"], []) or "")

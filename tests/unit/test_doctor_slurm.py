"""`mlrp doctor`'s Slurm rows, judged on real Slurm 22.05 outputs.

The scontrol outputs are the captured files of tests/unit/slurm_outputs/ (see its README); the
`scontrol ping`, munge and error outputs below were captured the same way, from the private
cluster of tests/slurm.py. The row functions get them as `Outcome`s (a replaying runner); the
CLI test runs the real runner on small scripts that print those files, so the argv, the
environment and the timeout handling are the ones `mlrp doctor` uses. The rows against a live
cluster are in tests/integration/test_doctor_slurm_hub.py.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import shared_dir
from slurm import _slurm_conf

from config.schema import parse
from hub import cli, doctor
from hub.doctor import SlurmSetup
from spawners.profiles import Profile
from spawners.slurm.partitions import Partition, Request
from spawners.slurm.run import Outcome

pytestmark = pytest.mark.unit

OUTPUTS = Path(__file__).parent / "slurm_outputs"
PARTITIONS = (OUTPUTS / "scontrol_partitions.txt").read_text()
NODES_IDLE = (OUTPUTS / "scontrol_nodes_idle.txt").read_text()
NODES_BUSY = (OUTPUTS / "scontrol_nodes_busy.txt").read_text()  # node2 drained, 7 GPUs in use

# `scontrol ping`, captured from tests/slurm.py's cluster (Slurm 22.05.8): answering; with
# slurmctld SIGSTOPped (exit 1 after MessageTimeout, 10 s; the same words at once when this
# host's munge key is not the controller's); with SLURM_CONF naming no file (exit 1 after 60 s).
PING_UP = "Slurmctld(primary) at vm is UP\n"
PING_DOWN = (
    "Slurmctld(primary) at vm is DOWN\n"
    "*****************************************\n"
    "** RESTORE SLURMCTLD DAEMON TO SERVICE **\n"
    "*****************************************\n"
)
PING_NO_CONF = (
    "scontrol: error: s_p_parse_file: cannot stat file /nonexistent/slurm.conf: No such file "
    "or directory, retrying in 1sec up to 60sec\nscontrol: error: ClusterName needs to be "
    "specified\nscontrol: fatal: Unable to process configuration file\n"
)
# `scontrol --all show partition --oneliner` with a munge key that is not the controller's.
PARTITIONS_BAD_KEY = "slurm_load_partitions error: Zero Bytes were transmitted or received\n"
# munge -n / unmunge, captured on the same machine.
CREDENTIAL = "MUNGE:AwQFAAB9jRPViWJgMg2OvaRsTPAzGOQcJJVUvAPyagSUooO+ze6p+ZorQ7d5pmZ3UFDUPYHQ=:\n"
UNMUNGED = "STATUS:          Success (0)\nENCODE_HOST:     localhost (127.0.0.1)\n"
MUNGE_NO_DAEMON = (
    'munge: Error: Failed to access "/run/munge/munge.socket.2": No such file or directory '
    "(Did you start munged?)\n"
)
UNMUNGE_GARBAGE = "unmunge: Error: Failed to match armor prefix\n"

SCONTROL = "/usr/bin/scontrol"


def ok(argv: Sequence[str], stdout: str) -> Outcome:
    return Outcome(tuple(argv), True, 0, stdout, "")


def failed(argv: Sequence[str], rc: int, stdout: str = "", stderr: str = "") -> Outcome:
    return Outcome(tuple(argv), False, rc, stdout, stderr)


def partitions(nodes: str = NODES_IDLE) -> dict[str, Partition]:
    found, why = doctor.read_partitions(ok(["scontrol"], PARTITIONS), ok(["scontrol"], nodes))
    assert found is not None, why
    return found


def request(partition: str, gpus: int = 0, walltime: int = 60) -> Request:
    return Request(partition, gpus, cpus=1, memory_mb=1024, walltime_minutes=walltime)


def slurm_profile(slug: str, partition: str, **placement: Any) -> Profile:
    return Profile(
        slug=slug,
        name=slug,
        backend="slurm",
        image="default",
        image_env="/opt/mlrp/venv",
        placement=tuple(sorted({"partition": partition, **placement}.items())),
    )


@pytest.fixture
def conf_dir() -> Iterator[Path]:
    """A directory every account can enter (sbatch, as each person, reads slurm.conf): pytest's
    tmp_path lies under a 0700 directory."""
    path = shared_dir("doctor-slurm-")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def write_conf(directory: Path, mode: int = 0o644, text: str | None = None) -> Path:
    """The slurm.conf tests/slurm.py writes for its clusters (AuthInfo=socket=<dir>/munge/...)."""
    conf = directory / "slurm.conf"
    ports = {"slurmctld": 6817, "node1": 6818, "node2": 6819}
    conf.write_text(_slurm_conf(directory, "lab", ports) if text is None else text)
    conf.chmod(mode)
    return conf


def executables(directory: Path, *names: str) -> Path:
    directory.mkdir(exist_ok=True)
    for name in names:
        program = directory / name
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    return directory


# --- the Slurm client ------------------------------------------------------------------------


def test_client_row_finds_the_four_commands_in_bin_dir(tmp_path: Path) -> None:
    bin_dir = executables(tmp_path / "bin", "sbatch", "squeue", "scancel", "scontrol")
    check = doctor.check_slurm_commands(bin_dir)
    assert (check.ok, check.required) == (True, True)
    assert check.detail == f"sbatch, squeue, scancel, scontrol in {bin_dir}"


def test_client_row_names_what_is_missing_or_not_executable(tmp_path: Path) -> None:
    bin_dir = executables(tmp_path / "bin", "sbatch", "squeue")
    (bin_dir / "scontrol").write_text("not executable\n")
    check = doctor.check_slurm_commands(bin_dir)
    assert (check.ok, check.status) == (False, "MISSING")
    assert check.detail == f"not in {bin_dir}: scancel, scontrol"
    assert "slurm.bin_dir" in check.fix and "apt-get install slurm-client" in check.fix


# --- slurm.conf ----------------------------------------------------------------------------


def test_slurm_conf_row_names_the_cluster_and_its_controller(conf_dir: Path) -> None:
    path = write_conf(conf_dir)
    conf, why = doctor.read_slurm_conf(path)
    assert conf is not None, why
    check = doctor.check_slurm_conf(path, conf, why)
    assert check.ok and check.required
    assert check.detail.startswith(f"{path} (ClusterName=lab, SlurmctldHost=")
    assert conf.auth_type == "auth/munge"
    assert conf.munge_socket == conf_dir / "munge" / "munge.socket"


def test_slurm_conf_keys_are_read_as_slurm_reads_them() -> None:
    values = doctor.parse_slurm_conf(
        "# a comment\n"
        "authtype=auth/slurm   # trailing comment\n"
        "NodeName=gpu[01-04] NodeAddr=10.0.0.[11-14] Gres=gpu:4\n"
        "SlurmctldHost=head1\n"
        "SlurmctldHost=head2\n"
        "   \n"
    )
    conf = doctor.SlurmConf(Path("x"), values, True)
    assert conf.auth_type == "auth/slurm"
    assert values["slurmctldhost"] == ("head1", "head2")
    assert values["nodename"] == ("gpu[01-04]",)
    # Without AuthInfo, munge's own default socket.
    assert conf.munge_socket == doctor.DEFAULT_MUNGE_SOCKET


def test_missing_slurm_conf_fails_with_where_to_put_it(tmp_path: Path) -> None:
    path = tmp_path / "slurm.conf"
    conf, why = doctor.read_slurm_conf(path)
    check = doctor.check_slurm_conf(path, conf, why)
    assert (check.ok, check.status, check.detail) == (False, "MISSING", f"{path}: no such file")
    assert f"to {path} on this host" in check.fix and "set slurm.conf" in check.fix


def test_slurm_conf_only_root_can_read_fails(conf_dir: Path) -> None:
    """sbatch runs as each person: a slurm.conf they cannot read fails every start."""
    path = write_conf(conf_dir, mode=0o600)
    conf, why = doctor.read_slurm_conf(path)
    check = doctor.check_slurm_conf(path, conf, why)
    assert check.status == "MISSING"
    assert check.detail.endswith("not readable by everyone, and sbatch runs as each person")


def test_slurm_conf_in_a_closed_directory_fails(conf_dir: Path) -> None:
    closed = conf_dir / "closed"
    closed.mkdir(mode=0o700)
    path = write_conf(closed)  # the file itself is 0644
    conf, why = doctor.read_slurm_conf(path)
    assert conf is not None and not conf.world_readable
    assert doctor.check_slurm_conf(path, conf, why).status == "MISSING"


# --- munge -----------------------------------------------------------------------------------

MUNGE_ARGV = ["/usr/bin/munge", "-n", "--socket=/run/munge/munge.socket.2"]
UNMUNGE_ARGV = ["/usr/bin/unmunge", "--socket=/run/munge/munge.socket.2"]
SOCKET = Path("/run/munge/munge.socket.2")


def test_munge_row_passes_when_a_credential_comes_back() -> None:
    check = doctor.check_munge(
        "auth/munge", SOCKET, ok(MUNGE_ARGV, CREDENTIAL), ok(UNMUNGE_ARGV, UNMUNGED)
    )
    assert (check.ok, check.required) == (True, True)
    assert check.detail == f"munged answers on {SOCKET} (credential made and read back)"


def test_munge_row_without_munged_says_so_and_how_to_start_it() -> None:
    encoded = failed(MUNGE_ARGV, 6, stderr=MUNGE_NO_DAEMON)
    check = doctor.check_munge("auth/munge", SOCKET, encoded, None)
    assert check.status == "MISSING"
    assert check.detail == MUNGE_NO_DAEMON.strip()
    assert check.fix == doctor.MUNGE_FIX


def test_munge_row_when_the_credential_is_not_read_back() -> None:
    decoded = failed(UNMUNGE_ARGV, 8, stderr=UNMUNGE_GARBAGE)
    check = doctor.check_munge("auth/munge", SOCKET, ok(MUNGE_ARGV, CREDENTIAL), decoded)
    assert check.status == "MISSING"
    assert check.detail == f"a credential was made but not read back: {UNMUNGE_GARBAGE.strip()}"


def test_munge_row_without_munge_commands_is_a_warning() -> None:
    check = doctor.check_munge("auth/munge", SOCKET, None, None)
    assert (check.status, check.fix) == ("WARN", doctor.MUNGE_INSTALL_FIX)


def test_munge_row_when_slurm_uses_another_authentication() -> None:
    check = doctor.check_munge("auth/slurm", SOCKET, None, None)
    assert (check.ok, check.detail) == (True, "not used (AuthType=auth/slurm)")


# --- the controller --------------------------------------------------------------------------

PING = [SCONTROL, "ping"]


def test_controller_row_up() -> None:
    check = doctor.check_slurm_controller(ok(PING, PING_UP))
    assert (check.ok, check.required, check.detail) == (True, True, PING_UP.strip())


def test_controller_row_down_shows_slurms_words_without_the_banner() -> None:
    check = doctor.check_slurm_controller(failed(PING, 1, stdout=PING_DOWN))
    assert (check.status, check.detail) == ("MISSING", "Slurmctld(primary) at vm is DOWN")
    assert check.fix == doctor.CONTROLLER_FIX
    assert "munge" in check.fix and "SlurmctldPort" in check.fix


def test_controller_row_when_ping_does_not_end() -> None:
    hung = Outcome(tuple(PING), False, None, "", "", timed_out=True)
    check = doctor.check_slurm_controller(hung, timeout=15)
    assert (check.status, check.detail) == ("MISSING", "scontrol ping: no answer within 15 s")


def test_controller_row_when_scontrol_cannot_read_its_config() -> None:
    check = doctor.check_slurm_controller(failed(PING, 1, stderr=PING_NO_CONF))
    assert check.status == "MISSING"
    assert check.detail.startswith("scontrol: error: s_p_parse_file: cannot stat file")


def test_controller_row_when_scontrol_is_not_there() -> None:
    missing = Outcome(tuple(PING), False, None, "", "No such file", missing=True)
    check = doctor.check_slurm_controller(missing)
    assert check.detail == f"{SCONTROL}: not found (see Slurm client)"


# --- partitions and profiles -----------------------------------------------------------------


def test_partitions_that_cannot_be_read_say_why() -> None:
    refused = failed([SCONTROL, "--all", "show", "partition"], 1, stderr=PARTITIONS_BAD_KEY)
    found, why = doctor.read_partitions(refused, ok(["scontrol"], NODES_IDLE))
    assert found is None
    assert why.endswith(
        "exit 1: slurm_load_partitions error: Zero Bytes were transmitted or received"
    )
    found, why = doctor.read_partitions(ok(["scontrol"], "garbage\n"), ok(["scontrol"], NODES_IDLE))
    assert found is None and "does not start with PartitionName=" in why


def test_profile_that_fits_shows_its_partition_and_request() -> None:
    check = doctor.check_slurm_profile(
        "cluster", request("gpu", gpus=4, walltime=8 * 60), partitions(), ""
    )
    assert (check.ok, check.required) == (True, True)
    assert check.detail.splitlines() == [
        "partition gpu UP, 2 nodes (2 usable now), 4 GPUs per node (8 of 8 free), MaxTime 12 hours",
        "asks for up to 4 GPUs, 1 CPU and 1,024 MB for 8 hours: fits",
    ]


def test_gpus_in_use_and_drained_nodes_show_in_the_free_count() -> None:
    check = doctor.check_slurm_profile(
        "cluster", request("gpu", gpus=1), partitions(NODES_BUSY), ""
    )
    assert check.ok
    # node1 has 3 of its 4 GPUs in use; node2 is drained, so none of its GPUs counts as free.
    assert "2 nodes (1 usable now), 4 GPUs per node (1 of 8 free)" in check.detail


def test_more_gpus_than_a_node_has_never_fits() -> None:
    check = doctor.check_slurm_profile("big", request("gpu", gpus=8), partitions(), "")
    assert check.status == "MISSING"
    lines = check.detail.splitlines()
    assert lines[1] == "asks for up to 8 GPUs, 1 CPU and 1,024 MB for 1 hour: never fits"
    assert lines[2] == (
        "The nodes of partition gpu have at most 4 GPUs each; you asked for 8. Ask for 4 or fewer."
    )
    assert check.fix == doctor.PROFILE_IMPOSSIBLE_FIX.format(slug="big", partition="gpu")


def test_walltime_beyond_maxtime_never_fits() -> None:
    check = doctor.check_slurm_profile("quick", request("debug", walltime=60), partitions(), "")
    assert check.status == "MISSING"
    assert "MaxTime 30 minutes" in check.detail
    assert check.detail.splitlines()[-1] == (
        "Partition debug allows at most 30 minutes per session; you asked for 1 hour. "
        "Ask for 30 minutes or less."
    )


def test_a_partition_that_is_down_is_a_wait_not_a_failure() -> None:
    check = doctor.check_slurm_profile("closed", request("closed"), partitions(), "")
    assert (check.ok, check.status) == (False, "WARN")
    assert check.detail.endswith("fits, but the partition is DOWN")
    assert "scontrol update PartitionName=closed State=UP" in check.fix


def test_a_partition_whose_nodes_are_all_drained_warns() -> None:
    check = doctor.check_slurm_profile("staff", request("staff"), partitions(NODES_BUSY), "")
    assert check.status == "WARN"
    assert check.detail.endswith("fits, but no node is usable (node2 MIXED+DRAIN)")
    assert "sinfo -R -p staff" in check.fix


def test_a_group_restricted_partition_says_for_whom() -> None:
    """Whether a person is in the group is checked at their start; the doctor names it."""
    check = doctor.check_slurm_profile("staff", request("staff", walltime=600), partitions(), "")
    assert check.ok
    assert check.detail.splitlines()[0].endswith("no time limit, only for Unix groups sbstaff")


def test_a_partition_slurm_does_not_have() -> None:
    check = doctor.check_slurm_profile("gpu", request("gpus"), partitions(), "")
    assert check.status == "MISSING"
    assert check.detail == "partition gpus does not exist; Slurm has: closed, debug, gpu, staff"
    assert "placement.partition of profile gpu" in check.fix


def test_a_profile_is_not_judged_without_partitions() -> None:
    check = doctor.check_slurm_profile("gpu", request("gpu"), None, "the controller is down")
    assert (check.status, check.fix) == ("WARN", "")
    assert check.detail == "partition gpu not judged: the controller is down"


def test_the_request_judged_is_the_profiles_largest_as_the_hub_builds_it() -> None:
    cfg = parse(
        {
            "profiles": [
                {
                    "slug": "gpu",
                    "name": "GPU",
                    "backend": "slurm",
                    "gpus": {"choices": [1, 2, 4], "default": 1},
                    "cpus": 3.5,
                    "memory": "16G",
                    "placement": {"partition": "gpu", "walltime": "8:00:00"},
                },
                {
                    "slug": "debug",
                    "name": "Debug",
                    "backend": "slurm",
                    "placement": {"partition": "debug"},
                },
            ]
        }
    )
    setup = SlurmSetup.from_config(cfg)
    assert setup is not None
    gpu, debug = (doctor.slurm_request(p) for p in setup.profiles)
    assert gpu == Request("gpu", gpus=4, cpus=4, memory_mb=16384, walltime_minutes=480)
    # The backend's defaults: 1 CPU, 1024 MB, 60 minutes.
    assert debug == Request("debug", gpus=0, cpus=1, memory_mb=1024, walltime_minutes=60)


# --- the network ---------------------------------------------------------------------------


def only(*local: str) -> Any:
    return lambda host: host in local


def test_nodes_on_this_host_need_no_hub_api_address() -> None:
    check = doctor.check_slurm_network(SlurmSetup(), partitions(), "", only("vm"))
    assert check.ok
    assert check.detail == (
        "the nodes node1 (vm), node2 (vm) are this host: sessions and the hub API meet on this host"
    )


def test_other_hosts_without_hub_api_address_warn_with_the_port() -> None:
    setup = SlurmSetup(hub_port=8090, node_addresses={"node2": "10.0.0.12"})
    check = doctor.check_slurm_network(setup, partitions(), "", only("vm"))
    assert check.status == "WARN"
    assert "nodes node2 (10.0.0.12) are other hosts" in check.detail
    assert "node1" not in check.detail
    assert "slurm.hub_api_address" in check.fix and "(8090)" in check.fix
    assert "plain HTTP" in check.fix


def test_a_hub_api_address_this_host_does_not_have_fails() -> None:
    setup = SlurmSetup(hub_api_address="10.0.0.1")
    check = doctor.check_slurm_network(setup, partitions(), "", only("vm"))
    assert (check.status, check.fix) == ("MISSING", doctor.HUB_API_NOT_LOCAL_FIX)
    assert check.detail.startswith("slurm.hub_api_address 10.0.0.1 is not an address of this host")


def test_other_hosts_reporting_to_the_hub_api_address() -> None:
    setup = SlurmSetup(hub_api_address="10.0.0.1", hub_port=8081)
    check = doctor.check_slurm_network(setup, partitions(), "", only("10.0.0.1"))
    assert check.ok
    assert check.detail.startswith(
        "nodes node1 (vm), node2 (vm) report to http://10.0.0.1:8081 (plain HTTP, with each "
        "session's token)"
    )


def test_sessions_on_loopback_of_other_hosts_cannot_be_reached() -> None:
    setup = SlurmSetup(hub_api_address="10.0.0.1", server_ip="127.0.0.1")
    check = doctor.check_slurm_network(setup, partitions(), "", only("10.0.0.1"))
    assert (check.status, check.fix) == ("WARN", doctor.SERVER_IP_FIX)


def test_only_the_nodes_of_the_profiles_partitions_count() -> None:
    setup = SlurmSetup(profiles=(slurm_profile("quick", "debug"),))  # debug is node1 only
    check = doctor.check_slurm_network(setup, partitions(), "", only())
    assert "nodes node1 (vm) are other hosts" in check.detail
    assert "node2" not in check.detail


def test_network_row_without_partitions_is_not_judged() -> None:
    check = doctor.check_slurm_network(SlurmSetup(), None, "the controller is down", only())
    assert (check.status, check.fix) == ("WARN", "")
    assert check.detail.endswith("the nodes are not judged: the controller is down")


def test_local_addresses_are_loopback_or_bindable() -> None:
    assert doctor.is_local_address("127.0.0.1")
    assert doctor.is_local_address("127.0.1.1")  # all of 127/8 is loopback
    assert not doctor.is_local_address("198.51.100.7")  # TEST-NET-2: never this host's


# --- all the Slurm rows together -------------------------------------------------------------


@dataclass
class Replay:
    """Answers the doctor's Slurm commands with captured outputs, recording each call."""

    answers: Mapping[str, Outcome]
    calls: list[tuple[list[str], dict[str, str], float, str | None]] = field(default_factory=list)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        stdin: str | None = None,
    ) -> Outcome:
        self.calls.append((list(argv), dict(env), timeout, stdin))
        key = " ".join(Path(argv[0]).name.split() + list(argv[1:]))
        for prefix, outcome in self.answers.items():
            if key.startswith(prefix):
                return outcome
        raise AssertionError(f"unexpected command {argv}")


def answers(ping: Outcome) -> dict[str, Outcome]:
    return {
        "munge -n": ok(["munge"], CREDENTIAL),
        "unmunge": ok(["unmunge"], UNMUNGED),
        "scontrol ping": ping,
        "scontrol --all show partition --oneliner": ok(["scontrol"], PARTITIONS),
        "scontrol show node --oneliner --details": ok(["scontrol"], NODES_IDLE),
    }


def setup_in(directory: Path, bin_dir: Path, **extra: Any) -> SlurmSetup:
    executables(bin_dir, "sbatch", "squeue", "scancel", "scontrol", "munge", "unmunge")
    return SlurmSetup(
        bin_dir=bin_dir,
        conf=write_conf(directory),
        profiles=(
            slurm_profile("cluster", "gpu", walltime=480),
            slurm_profile("quick", "debug", walltime=20),  # debug allows 30 minutes
        ),
        **extra,
    )


def test_all_rows_pass_in_order_with_the_hubs_commands(conf_dir: Path, tmp_path: Path) -> None:
    setup = setup_in(conf_dir, tmp_path / "bin")
    replay = Replay(answers(ok(PING, PING_UP)))
    checks = doctor.slurm_checks(setup, replay, only("vm"))
    assert [(c.status, c.name) for c in checks] == [
        ("OK", "Slurm client"),
        ("OK", "slurm.conf"),
        ("OK", "munge"),
        ("OK", "Slurm controller"),
        ("OK", "Slurm profile cluster"),
        ("OK", "Slurm profile quick"),
        ("OK", "Slurm network"),
    ]
    bin_dir = tmp_path / "bin"
    socket = f"--socket={conf_dir / 'munge' / 'munge.socket'}"
    argvs = [call[0] for call in replay.calls]
    assert argvs == [
        [str(bin_dir / "munge"), "-n", socket],
        [str(bin_dir / "unmunge"), socket],
        [str(bin_dir / "scontrol"), "ping"],
        [str(bin_dir / "scontrol"), "--all", "show", "partition", "--oneliner"],
        [str(bin_dir / "scontrol"), "show", "node", "--oneliner", "--details"],
    ]
    assert replay.calls[1][3] == CREDENTIAL  # unmunge reads munge's credential
    assert replay.calls[2][2] == doctor.PING_TIMEOUT
    for _, env, _, _ in replay.calls:  # the hub's Slurm environment, nothing else
        assert env == {"PATH": f"{bin_dir}:{doctor.SYSTEM_PATH}", "SLURM_CONF": str(setup.conf)}


def test_a_silent_controller_fails_and_nothing_else_is_asked(
    conf_dir: Path, tmp_path: Path
) -> None:
    setup = setup_in(conf_dir, tmp_path / "bin")
    replay = Replay(answers(failed(PING, 1, stdout=PING_DOWN)))
    checks = doctor.slurm_checks(setup, replay, only("vm"))
    by_name = {c.name: c for c in checks}
    assert by_name["Slurm controller"].status == "MISSING"
    assert by_name["Slurm profile cluster"].detail == (
        "partition gpu not judged: the controller does not answer (see Slurm controller)"
    )
    assert by_name["Slurm network"].status == "WARN"
    assert [call[0][1:] for call in replay.calls][-1] == ["ping"]  # no show partition/node
    assert doctor.exit_code(checks) == 1


def test_without_slurm_conf_no_command_runs(tmp_path: Path) -> None:
    """scontrol retries a missing slurm.conf for 60 s: the doctor does not start it."""
    setup = SlurmSetup(
        bin_dir=executables(tmp_path / "bin", "scontrol"),
        conf=tmp_path / "nowhere" / "slurm.conf",
        profiles=(slurm_profile("cluster", "gpu"),),
    )
    replay = Replay({})
    checks = doctor.slurm_checks(setup, replay, only())
    assert replay.calls == []
    assert [c.status for c in checks] == ["MISSING", "MISSING", "WARN", "WARN", "WARN", "WARN"]
    assert checks[2].detail == f"not judged: no readable slurm.conf ({setup.conf})"
    # What needs no Slurm is still judged: an API address this host does not have.
    elsewhere = replace(setup, hub_api_address="10.0.0.1")
    network = doctor.slurm_checks(elsewhere, replay, only())[-1]
    assert (network.name, network.status) == ("Slurm network", "MISSING")
    assert replay.calls == []


def test_setup_comes_from_the_slurm_section_and_profiles() -> None:
    none = parse({"profiles": [{"slug": "cpu", "name": "CPU"}]})
    assert SlurmSetup.from_config(none) is None
    cfg = parse(
        {
            "hub": {"hub_port": 8090},
            "profiles": [
                {"slug": "cpu", "name": "CPU"},
                {"slug": "g", "name": "G", "backend": "slurm", "placement": {"partition": "gpu"}},
            ],
            "slurm": {
                "conf": "/shared/slurm/slurm.conf",
                "bin_dir": "/opt/slurm/bin",
                "hub_api_address": "10.0.0.1",
                "server_ip": "10.0.0.0",
                "node_addresses": {"gpu01": "10.0.0.11"},
            },
        }
    )
    setup = SlurmSetup.from_config(cfg)
    assert setup is not None
    assert (setup.bin_dir, setup.conf, setup.hub_api_address, setup.hub_port) == (
        Path("/opt/slurm/bin"),
        Path("/shared/slurm/slurm.conf"),
        "10.0.0.1",
        8090,
    )
    assert (setup.server_ip, dict(setup.node_addresses)) == ("10.0.0.0", {"gpu01": "10.0.0.11"})
    assert [p.slug for p in setup.profiles] == ["g"]
    assert setup.env == {
        "PATH": f"/opt/slurm/bin:{doctor.SYSTEM_PATH}",
        "SLURM_CONF": "/shared/slurm/slurm.conf",
    }
    # Slurm profiles without a section: the section's defaults, Slurm's own slurm.conf.
    bare = SlurmSetup.from_config(
        parse(
            {
                "profiles": [
                    {
                        "slug": "g",
                        "name": "G",
                        "backend": "slurm",
                        "placement": {"partition": "gpu"},
                    }
                ]
            }
        )
    )
    assert bare is not None and bare.conf_path == Path("/etc/slurm/slurm.conf")
    assert bare.env == {"PATH": f"/usr/bin:{doctor.SYSTEM_PATH}"}


# --- `mlrp doctor --config FILE`: real commands (scripts printing the captured outputs) --------


def fake_slurm(directory: Path, captured: Path, ping_rc: int = 0) -> Path:
    """sbatch/squeue/scancel (never run) and an scontrol, munge and unmunge that print what the
    real ones printed; scontrol notes its SLURM_CONF, so the test sees the environment."""
    bin_dir = executables(directory, "sbatch", "squeue", "scancel")
    captured.mkdir(exist_ok=True)
    (captured / "partitions.txt").write_text(PARTITIONS)
    # The nodes as this host at 127.0.0.1 (captured on a host named vm, which this may not be).
    (captured / "nodes.txt").write_text(NODES_IDLE.replace("NodeAddr=vm", "NodeAddr=127.0.0.1"))
    (captured / "ping.txt").write_text(PING_UP if ping_rc == 0 else PING_DOWN)
    scripts = {
        "scontrol": f"""#!/bin/sh
echo "$SLURM_CONF" > {captured}/slurm_conf_seen
case "$*" in
  ping) cat {captured}/ping.txt; exit {ping_rc};;
  "--all show partition --oneliner") cat {captured}/partitions.txt;;
  "show node --oneliner --details") cat {captured}/nodes.txt;;
  *) echo "unexpected: $*" >&2; exit 2;;
esac
""",
        "munge": f"#!/bin/sh\nprintf '%s' '{CREDENTIAL}'\n",
        "unmunge": f"""#!/bin/sh
[ "$(cat)" = "{CREDENTIAL.strip()}" ] || {{ echo '{UNMUNGE_GARBAGE.strip()}' >&2; exit 8; }}
printf '%s' '{UNMUNGED}'
""",
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def doctor_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], profiles: list[dict[str, Any]], **slurm: Any
) -> tuple[int, str]:
    config = tmp_path / "mlrp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "hub": {"data_dir": str(tmp_path / "data"), "proxy_command": ["/bin/true"]},
                "accounts": {"mode": "single-user"},
                "profiles": [{"slug": "cpu", "name": "CPU"}, *profiles],
                **({"slurm": slurm} if slurm else {}),
            }
        )
    )
    code = cli.main(["doctor", "--config", str(config)])
    return code, capsys.readouterr().out


def rows(output: str) -> dict[str, str]:
    """CHECK -> STATUS for the Slurm rows of the table."""
    found = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] in ("OK", "WARN", "MISSING"):
            for name in (
                "Slurm client",
                "slurm.conf",
                "munge",
                "Slurm controller",
                "Slurm network",
                "Slurm profile cluster",
                "Slurm profile quick",
            ):
                if parts[1].startswith(name + " "):
                    found[name] = parts[0]
    return found


GPU_PROFILES = [
    {
        "slug": "cluster",
        "name": "Cluster GPU",
        "backend": "slurm",
        "gpus": {"choices": [1, 4]},
        "placement": {"partition": "gpu", "walltime": "8:00:00"},
    }
]


def test_cli_doctor_runs_the_slurm_rows_with_the_configs_commands(
    conf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = fake_slurm(tmp_path / "bin", tmp_path / "captured")
    conf = write_conf(conf_dir)
    code, output = doctor_cli(tmp_path, capsys, GPU_PROFILES, conf=str(conf), bin_dir=str(bin_dir))
    assert rows(output) == {
        name: "OK"
        for name in (
            "Slurm client",
            "slurm.conf",
            "munge",
            "Slurm controller",
            "Slurm profile cluster",
            "Slurm network",
        )
    }, output
    assert code == 0, output
    assert (tmp_path / "captured" / "slurm_conf_seen").read_text().strip() == str(conf)


def test_cli_doctor_fails_on_a_profile_that_never_fits(
    conf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = fake_slurm(tmp_path / "bin", tmp_path / "captured")
    quick = {
        "slug": "quick",
        "name": "Quick",
        "backend": "slurm",
        "placement": {"partition": "debug", "walltime": "2:00:00"},
    }
    code, output = doctor_cli(
        tmp_path, capsys, [quick], conf=str(write_conf(conf_dir)), bin_dir=str(bin_dir)
    )
    assert code == 1
    assert rows(output)["Slurm profile quick"] == "MISSING"
    assert "Partition debug allows at most 30 minutes per session" in output
    fix = doctor.PROFILE_IMPOSSIBLE_FIX.format(slug="quick", partition="debug")
    assert f"fix: {fix}" in output.splitlines()
    assert "1 required check failed: Slurm profile quick." in output


def test_cli_doctor_has_no_slurm_rows_without_slurm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = doctor_cli(tmp_path, capsys, [])
    assert rows(output) == {}
    assert "Slurm" not in output and "munge" not in output


def test_main_prints_the_slurm_rows_with_their_fix_lines(
    conf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_checks uses the module's runner, looked up at call time."""
    setup = setup_in(conf_dir, tmp_path / "bin")
    monkeypatch.setattr(
        doctor, "run_slurm_command", Replay(answers(failed(PING, 1, stdout=PING_DOWN)))
    )
    out = io.StringIO()
    code = doctor.main(
        data_dir=tmp_path,
        proxy_command=["/bin/true"],
        gpu_source="auto",
        multi_user=False,
        slurm=setup,
        out=out,
    )
    text = out.getvalue()
    assert code == 1
    assert f"fix: {doctor.CONTROLLER_FIX}" in text.splitlines()
    assert "required check failed: Slurm controller." in text

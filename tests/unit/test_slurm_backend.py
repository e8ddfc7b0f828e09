"""The Slurm backend's own options and settings under bad values: a profile's `placement:`
(partition, walltime) and the `slurm:` section, each refused with the key named; and the walltime
and state helpers of a session. The backend against a real cluster: tests/integration/
test_slurm_spawn.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError
from test_config import cpu, problems_of

from config.schema import parse
from spawners.backends.slurm import SlurmBackend, SlurmOptions
from spawners.profiles import OptionsError, Profile, SpawnRequest, form_to_options
from spawners.slurm.partitions import Request, parse_partitions

pytestmark = [pytest.mark.unit]


@pytest.mark.parametrize(
    ("walltime", "minutes"),
    [(90, 90), ("8:00:00", 480), ("1-00:00:00", 1440), ("30", 30), ("00:00:30", 1)],
)
def test_walltime_is_minutes_or_slurms_own_form(walltime: Any, minutes: int) -> None:
    assert (
        SlurmOptions.model_validate({"partition": "gpu", "walltime": walltime}).walltime == minutes
    )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"partition": "gpu", "walltime": "forever"}, "not a walltime"),
        ({"partition": "gpu", "walltime": 0}, "greater than or equal to 1"),
        ({"partition": "gpu", "walltime": True}, "must be minutes"),
        ({"partition": "gpu", "walltime": 1.5}, "must be minutes"),
        ({"partition": "gpu;rm -rf /"}, "should match pattern"),
        ({"partition": "gpu\nx"}, "should match pattern"),
        ({"walltime": 60}, "Field required"),
        ({"partition": "gpu", "nodes": 2}, "Extra inputs are not permitted"),
    ],
)
def test_bad_placement_options_are_refused(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        SlurmOptions.model_validate(options)
    assert words in str(info.value)


def slurm_profile(**placement: Any) -> dict[str, Any]:
    return cpu(slug="cluster", backend="slurm", placement=placement)


def test_a_bad_slurm_profile_names_its_key() -> None:
    found = problems_of({"profiles": [slurm_profile(partition="gpu", walltime="soon")]})
    assert any(p.startswith("profiles[0].placement") and "walltime" in p for p in found), found
    found = problems_of({"profiles": [slurm_profile(walltime=60)]})
    assert any("partition: required by slurm profiles" in p for p in found), found
    found = problems_of({"profiles": [slurm_profile(partition="gpu", queue="x")]})
    assert any("slurm profiles have no option 'queue'" in p for p in found), found


def test_a_slurm_profile_may_ask_for_more_gpus_than_this_node_has() -> None:
    """GPUs of a Slurm profile are the cluster's nodes', not this host's (checked at spawn
    against what Slurm reports)."""
    from config.render import node_inventory

    profile = {**slurm_profile(partition="gpu", walltime=60), "gpus": 8}
    node_inventory(parse({"profiles": [profile], "gpus": {"source": "config", "devices": []}}))


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"server_ip": "node-1"}, "slurm.server_ip: must be an IP address"),
        ({"hub_api_address": "login;x"}, "slurm.hub_api_address: must be an IP"),
        ({"node_addresses": {"gpu01": "gpu01.example"}}, "gpu01: must be an IP address"),
        ({"output_dir": "relative/dir"}, "slurm.output_dir: must be an absolute"),
        ({"output_dir": "{home}/../x"}, "slurm.output_dir: must be an absolute"),
        ({"output_dir": "/x/$(id)"}, "slurm.output_dir: must be an absolute"),
        ({"poll_interval": 0}, "slurm.poll_interval"),
        ({"queue": "x"}, "slurm.queue: unknown key"),
    ],
)
def test_bad_slurm_settings_name_the_key(section: dict[str, Any], words: str) -> None:
    found = problems_of({"profiles": [cpu()], "slurm": section})
    assert any(words in p for p in found), found


def test_seconds_left_of_the_walltime() -> None:
    from spawners.backends.slurm import SlurmServer

    server = SlurmServer.__new__(SlurmServer)
    server.ends_at = ""
    assert server.seconds_left() is None
    now = datetime.now().astimezone()
    server.ends_at = (now + timedelta(minutes=10)).isoformat(timespec="seconds")
    assert 598 <= (server.seconds_left(now) or 0) <= 600
    assert server.seconds_left(now + timedelta(hours=1)) == 0


# --- what a person may choose: partition, walltime, CPUs, memory ----------------------------
OUTPUTS = Path(__file__).parent / "slurm_outputs"


def backend() -> SlurmBackend:
    """A SlurmBackend that knows the partitions of the captured scontrol outputs (gpu: 2 nodes
    of 8 CPUs, 8000 MB and 4 GPUs, MaxTime 12 h; debug: 30 min)."""
    b = SlurmBackend(cast(Any, None))
    b.partitions = parse_partitions(
        (OUTPUTS / "scontrol_partitions.txt").read_text(),
        (OUTPUTS / "scontrol_nodes_idle.txt").read_text(),
    )
    return b


CLUSTER = Profile(
    slug="cluster",
    name="Cluster",
    backend="slurm",
    image="default",
    image_env="/v",
    gpu_choices=(0, 1, 2),
    cpus=2,
    memory_bytes=4 * 2**30,
    placement=(("partition", "gpu"), ("partitions", ("debug",)), ("walltime", 60)),
)


def test_choices_within_the_partition_are_taken() -> None:
    b = backend()
    chosen = b.parse_choices(CLUSTER, {"walltime": 720, "cpus": 8, "memory": 7})
    assert chosen == {"walltime": 720, "cpus": 8, "memory": 7}
    request = SpawnRequest(CLUSTER, 1, tuple(sorted(chosen.items())))
    assert b.request_of(request) == Request("gpu", 1, 8, 7 * 1024, 720)
    # nothing chosen: the profile's own values
    assert b.request_of(SpawnRequest(CLUSTER, 0)) == Request("gpu", 0, 2, 4096, 60)
    assert b.parse_choices(CLUSTER, {"partition": "debug"}) == {"partition": "debug"}


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (
            {"walltime": 721},
            "walltime must be a whole number from 1 to 720 minutes on partition gpu",
        ),
        ({"partition": "debug", "walltime": 31}, "from 1 to 30 minutes on partition debug"),
        ({"walltime": "2:00:00"}, "walltime must be a whole number"),
        ({"cpus": 9}, "cpus must be a whole number from 1 to 8 on partition gpu, not 9."),
        ({"cpus": True}, "cpus must be a whole number"),
        ({"memory": 8}, "memory must be a whole number from 1 to 7 GiB"),
        ({"memory": -1}, "not -1"),
        ({"partition": "staffonly"}, "partition must be one of gpu, debug for profile 'Cluster'"),
        ({"partition": ["gpu"]}, "partition must be one of gpu, debug"),
        ({"nodes": 3}, "Unknown option(s) ['nodes']; allowed are 'profile', 'gpus', 'partition'"),
    ],
)
def test_choices_beyond_the_partition_are_refused(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(OptionsError) as info:
        backend().parse_choices(CLUSTER, extra)
    assert words in str(info.value)


def test_the_form_offers_the_choices_within_the_partition() -> None:
    fields = {f.name: f for f in backend().form_fields(CLUSTER)}
    assert [v for v, _ in fields["partition"].options] == ["gpu", "debug"]
    assert "(8 GPUs free)" in fields["partition"].options[0][1]
    walls = [int(v) for v, _ in fields["walltime"].options]
    assert walls[0] == 30 and walls[-1] == 720 and fields["walltime"].value == "60"
    assert (fields["cpus"].value, fields["cpus"].maximum) == ("2", 8)
    assert (fields["memory"].value, fields["memory"].maximum, fields["memory"].unit) == (
        "4",
        7,
        "GiB",
    )


def test_form_fields_become_choices() -> None:
    extra = {"cluster": SlurmBackend.choice_fields}
    form = {
        "profile": ["cluster"],
        "gpus-cluster": ["1"],
        "walltime-cluster": ["120"],
        "cpus-cluster": ["4"],
        "memory-cluster": ["6"],
        "partition-cluster": ["debug"],
    }
    options = form_to_options(form, ["cluster"], extra)
    assert options == {
        "profile": "cluster",
        "gpus": 1,
        "walltime": 120,
        "cpus": 4,
        "memory": 6,
        "partition": "debug",
    }
    with pytest.raises(OptionsError, match="walltime must be a whole number"):
        form_to_options({**form, "walltime-cluster": ["2h"]}, ["cluster"], extra)


# --- Apptainer images: the command line is built and checked here; Apptainer itself is not
# installable on the development machine, so no test runs it.
def test_an_apptainer_image_runs_the_server_inside_it_with_the_gpus() -> None:
    from config.render import profile_dict
    from spawners.accounts import Account
    from spawners.backends.slurm import _container
    from spawners.slurm.script import BatchJob, render

    cfg = parse(
        {
            "images": {"torch": {"env": "/opt/env", "apptainer": "/shared/images/torch.sif"}},
            "profiles": [{**slurm_profile(partition="gpu", walltime=60), "image": "torch"}],
        }
    )
    profile = Profile.from_dict(profile_dict(cfg.profiles[0], cfg))
    assert profile.apptainer == "/shared/images/torch.sif"
    alice = Account("alice", 1001, 1001, Path("/home/alice"))
    container = _container(profile, alice)
    job = BatchJob(
        tag="alice",
        partition="gpu",
        gpus=1,
        cpus=1,
        memory_mb=1024,
        walltime_minutes=60,
        output="/home/alice/.mlrp/slurm/mlrp-alice-%j.log",
        workdir="/home/alice",
        env_prefix=profile.image_env,
        bind_ip="0.0.0.0",
        export=("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"),
        container=container,
    )
    script = render(job)
    assert (
        "exec apptainer exec --nv --bind /home/alice:/home/alice /shared/images/torch.sif "
        "/opt/env/bin/python -I -c"
    ) in script
    plain = Profile.from_dict({**profile_dict(cfg.profiles[0], cfg), "apptainer": ""})
    assert _container(plain, alice) is None


def test_an_apptainer_image_is_for_slurm_profiles_only() -> None:
    images = {"torch": {"apptainer": "/shared/torch.sif"}}
    found = problems_of({"images": images, "profiles": [cpu(image="torch")]})
    assert any("'torch' is an Apptainer image, which only Slurm profiles run" in p for p in found)
    bad = {"torch": {"apptainer": "/shared/$(id).sif"}}
    found = problems_of({"images": bad, "profiles": [cpu()]})
    assert any(p.startswith("images.torch.apptainer: must be an absolute path") for p in found)


def test_the_output_directory_is_made_for_the_person(tmp_path: Path) -> None:
    """Only what is missing is made, 0700 and the person's own; in the home by default, or
    anywhere the admin's output_dir says."""
    import os
    from types import SimpleNamespace

    from spawners.accounts import Account
    from spawners.backends.slurm import SlurmServer

    nobody = Account("nobody", 65534, 65534, tmp_path / "home")
    nobody.home.mkdir(mode=0o755)
    server = SlurmServer.__new__(SlurmServer)
    for template, expected in [
        ("{home}/.mlrp/slurm", nobody.home / ".mlrp" / "slurm"),
        (f"{tmp_path}/scratch/{{user}}/mlrp", tmp_path / "scratch" / "nobody" / "mlrp"),
    ]:
        server.backend = cast(Any, SimpleNamespace(output_dir=template))
        assert server._output_dir(nobody) == expected
        made = expected
        while made != tmp_path and made != nobody.home:
            st = made.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o700), made
            made = made.parent
    assert os.stat(nobody.home).st_uid == os.getuid()  # the home itself is left alone


# --- one squeue for every session, three answers ---------------------------------------------
def fake_squeue(tmp_path: Path, stdout_file: str | None, rc: int, stderr: str = "") -> list[str]:
    """A stand-in squeue printing a captured output (Slurm's own words) and exiting `rc`."""
    script = tmp_path / "squeue"
    out = f"cat {OUTPUTS / stdout_file}\n" if stdout_file else ""
    script.write_text(f"#!/bin/sh\n{out}printf '%s\\n' '{stderr}' >&2\nexit {rc}\n")
    script.chmod(0o755)
    return [str(script)]


def test_one_squeue_answers_for_every_session(tmp_path: Path) -> None:
    import asyncio

    from spawners.backends import PollStatus

    b = SlurmBackend(cast(Any, None), squeue_command=fake_squeue(tmp_path, "squeue_many.txt", 0))
    found = asyncio.run(b._check(["5", "7", "999"]))
    assert found is not None
    assert found["5"].status is PollStatus.RUNNING  # pending: still there
    assert found["999"].status is PollStatus.GONE  # not listed by a squeue that answered
    assert b.jobs["7"].reason == "BeginTime"


def test_a_controller_that_does_not_answer_ends_nothing(tmp_path: Path) -> None:
    import asyncio

    from spawners.backends import PollStatus

    stderr = (OUTPUTS / "squeue_unreachable.stderr").read_text().strip()
    b = SlurmBackend(cast(Any, None), squeue_command=fake_squeue(tmp_path, None, 1, stderr))
    found = asyncio.run(b._check(["5", "7"]))
    assert found is not None
    assert {p.status for p in found.values()} == {PollStatus.UNKNOWN}
    assert "Unable to contact slurm controller" in found["5"].why


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "less than a minute"),
        (59, "less than a minute"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h 0 min"),
        (6720, "1 h 52 min"),
    ],
)
def test_walltime_left_in_words(seconds: int, text: str) -> None:
    from spawners.backends.slurm import _left_text

    assert _left_text(seconds) == text

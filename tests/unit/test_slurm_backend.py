"""The Slurm backend's own options and settings under bad values: a profile's `placement:`
(partition, walltime) and the `slurm:` section, each refused with the key named; and the walltime
and state helpers of a session. The backend against a real cluster: tests/integration/
test_slurm_spawn.py."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from test_config import cpu, problems_of

from config.schema import parse
from spawners.backends.slurm import SlurmOptions

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

"""Spawn options from the form and the API: only values the admin configured get through, and every
refusal is a short sentence that echoes at most a bounded part of what was sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from config.render import profile_dict
from config.schema import parse
from spawners.profiles import (
    MAX_ECHO,
    OptionsError,
    Profile,
    SpawnRequest,
    echo,
    form_to_options,
    parse_request,
)

pytestmark = pytest.mark.unit

CPU = Profile(slug="cpu", name="CPU only", backend="local", image="default", image_env="/v")
GPU1 = Profile(
    slug="gpu1",
    name="One GPU",
    backend="local",
    image="default",
    image_env="/v",
    gpu_choices=(1,),
    default_gpus=1,
)
MULTI = Profile(
    slug="multi",
    name="Several GPUs",
    backend="local",
    image="default",
    image_env="/v",
    gpu_choices=(2, 4),
    default_gpus=2,
    groups=("staff",),
)
ALL = [CPU, GPU1, MULTI]
HOSTILE = ["$(id)", "`id`", "{{7*7}}", "<script>alert(1)</script>", "a; rm -rf /", "../../etc"]
LONG = "<script>" + "A" * 1000 + "</script>"
# A refusal names the allowed values, so its length is bounded by the profiles, not by the input.
MAX_MESSAGE = 200


def visible(groups: tuple[str, ...] = (), admin: bool = False) -> list[Profile]:
    return [p for p in ALL if p.visible_to(groups, admin)]


def refused(options: Any, profiles: list[Profile] | None = None) -> str:
    with pytest.raises(OptionsError) as info:
        parse_request(options, ALL if profiles is None else profiles)
    message = str(info.value)
    assert 0 < len(message) <= MAX_MESSAGE, message
    return message


def form_refused(form: dict[str, list[str]], profiles: list[Profile] | None = None) -> str:
    profiles = ALL if profiles is None else profiles
    with pytest.raises(OptionsError) as info:
        options = form_to_options(form, [p.slug for p in profiles])
        parse_request(options, profiles)
    message = str(info.value)
    assert 0 < len(message) <= MAX_MESSAGE, message
    return message


# --- what is accepted --------------------------------------------------------------------------


def test_default_gpus_of_the_profile() -> None:
    assert parse_request({"profile": "gpu1"}, ALL) == SpawnRequest(GPU1, 1)
    assert parse_request({"profile": "multi"}, ALL) == SpawnRequest(MULTI, 2)
    assert parse_request({"profile": "cpu"}, ALL) == SpawnRequest(CPU, 0)


def test_a_configured_choice() -> None:
    assert parse_request({"profile": "multi", "gpus": 4}, ALL).gpus == 4


@pytest.mark.parametrize("gpus", ["4", " 4 "])
def test_a_configured_choice_from_the_form(gpus: str) -> None:
    options = form_to_options({"profile": ["multi"], "gpus-multi": [gpus]}, ["multi"])
    assert options == {"profile": "multi", "gpus": 4}
    assert parse_request(options, ALL).gpus == 4


def test_the_only_profile_needs_no_name() -> None:
    assert parse_request({}, [CPU]).profile == CPU
    assert parse_request(None, [CPU]).profile == CPU


def test_user_options_round_trip() -> None:
    request = parse_request({"profile": "multi", "gpus": 4}, ALL)
    assert request.as_user_options() == {"profile": "multi", "gpus": 4}
    assert parse_request(request.as_user_options(), ALL) == request


def test_form_with_every_gpu_select_uses_the_chosen_profiles() -> None:
    form = {
        "_xsrf": ["token"],
        "profile": ["multi"],
        "gpus-gpu1": ["1"],
        "gpus-multi": ["4"],
    }
    options = form_to_options(form, ["cpu", "gpu1", "multi"])
    assert options == {"profile": "multi", "gpus": 4}
    assert parse_request(options, ALL) == SpawnRequest(MULTI, 4)


def test_form_without_gpu_select_gets_the_default() -> None:
    options = form_to_options({"profile": ["gpu1"], "gpus-multi": ["4"]}, ["cpu", "gpu1", "multi"])
    assert options == {"profile": "gpu1"}
    assert parse_request(options, ALL).gpus == 1


def test_profiles_from_yaml_keep_choices_and_default() -> None:
    cfg = parse(
        {
            "groups": {"staff": []},
            "profiles": [
                {"slug": "m", "name": "M", "gpus": {"choices": [1, 2, 4], "default": 2}},
                {"slug": "s", "name": "S", "gpus": 1, "groups": ["staff"]},
            ],
        }
    )
    m, s = (Profile.from_dict(profile_dict(p, cfg)) for p in cfg.profiles)
    assert (m.gpu_choices, m.default_gpus, m.groups) == ((1, 2, 4), 2, ())
    assert (s.gpu_choices, s.default_gpus, s.groups) == ((1,), 1, ("staff",))


# --- visibility --------------------------------------------------------------------------------


def test_visibility_by_group_and_admin() -> None:
    assert visible() == [CPU, GPU1]
    assert visible(("students",)) == [CPU, GPU1]
    assert visible(("staff",)) == ALL
    assert visible(admin=True) == ALL


def test_a_profile_the_user_may_not_see_is_refused() -> None:
    message = refused({"profile": "multi"}, visible(("students",)))
    assert message == "There is no profile 'multi' for you. Pick one of: cpu, gpu1."


def test_no_visible_profile() -> None:
    assert "No profile is available to you" in refused({"profile": "cpu"}, [])


# --- what is refused ---------------------------------------------------------------------------


def test_unknown_profile() -> None:
    message = refused({"profile": "bigger"})
    assert message == "There is no profile 'bigger' for you. Pick one of: cpu, gpu1, multi."


def test_missing_profile_among_several() -> None:
    assert refused({}) == "Pick a profile: one of cpu, gpu1, multi."


@pytest.mark.parametrize("gpus", [-1, 1000, 3, 0, 10**30])
def test_gpus_outside_the_choices(gpus: int) -> None:
    message = refused({"profile": "multi", "gpus": gpus})
    assert message == (
        f"Profile 'Several GPUs' offers 2, 4 GPU(s); you asked for {echo(gpus)}. Pick one of those."
    )


@pytest.mark.parametrize("gpus", ["1000", "-1", "3", "0"])
def test_gpus_outside_the_choices_from_the_form(gpus: str) -> None:
    message = form_refused({"profile": ["multi"], "gpus-multi": [gpus]})
    assert message.startswith(f"Profile 'Several GPUs' offers 2, 4 GPU(s); you asked for {gpus}.")


@pytest.mark.parametrize(
    "gpus", ["1.5", 1.5, 2.0, "abc", "", "2e0", "0x2", True, False, None, {"n": 2}, "9" * 1000]
)
def test_gpus_that_are_not_whole_numbers(gpus: Any) -> None:
    message = refused({"profile": "multi", "gpus": gpus})
    assert message.startswith("gpus must be a whole number such as 1, not ")


@pytest.mark.parametrize("gpus", ["4", " 4", ["4"], [4], [2, 4], []])
def test_api_gpus_must_be_a_json_number(gpus: Any) -> None:
    """The API is typed like the form: a string or a list where a number belongs is refused,
    never unwrapped (the form sends strings; form_to_options converts them)."""
    message = refused({"profile": "multi", "gpus": gpus})
    assert message == f"gpus must be a whole number such as 1, not {echo(gpus)}."


@pytest.mark.parametrize("profile", [["cpu"], ["cpu", "gpu1"], [], 1, True, {"slug": "cpu"}, None])
def test_api_profile_must_be_a_string(profile: Any) -> None:
    message = refused({"profile": profile})
    assert message == (
        f"profile must be a string naming one of: cpu, gpu1, multi; not {echo(profile)}. "
        'Send e.g. {"profile": "cpu"}.'
    )


def test_empty_profile_asks_to_pick_one() -> None:
    assert refused({"profile": ""}) == "Pick a profile: one of cpu, gpu1, multi."


def test_form_fields_with_two_values() -> None:
    two_gpus = {"profile": ["multi"], "gpus-multi": ["2", "4"]}
    assert form_refused(two_gpus) == "Send exactly one value for 'gpus'."
    assert form_refused({"profile": ["multi"], "gpus-multi": []}) == (
        "Send exactly one value for 'gpus'."
    )
    assert form_refused({"profile": ["cpu", "gpu1"]}) == "Send exactly one value for 'profile'."


def test_options_that_are_not_an_object() -> None:
    assert refused(["cpu"]).startswith("Spawn options must be an object")
    assert refused("cpu").startswith("Spawn options must be an object")


def test_extra_api_field() -> None:
    message = refused({"profile": "cpu", "cmd": "/bin/sh"})
    assert message == "Unknown option(s) ['cmd']; allowed are 'profile' and 'gpus'."


def test_extra_form_field() -> None:
    message = form_refused({"profile": ["cpu"], "env": ["LD_PRELOAD=/tmp/x.so"]})
    assert message.startswith("Unexpected field(s) in the form: ['env'].")
    assert "Reload the page" in message


def test_gpu_select_of_an_unknown_profile_is_an_extra_field() -> None:
    message = form_refused({"profile": ["cpu"], "gpus-secret": ["8"]})
    assert "gpus-secret" in message


def test_gpu_select_of_a_hidden_profile_is_an_extra_field() -> None:
    message = form_refused({"profile": ["multi"], "gpus-multi": ["4"]}, visible())
    assert message.startswith("Unexpected field(s) in the form: ['gpus-multi'].")


# --- hostile strings: refused, echoed only in part ----------------------------------------------


@pytest.mark.parametrize("value", [*HOSTILE, LONG])
def test_hostile_profile_name(value: str) -> None:
    message = refused({"profile": value})
    assert message.startswith("There is no profile ")
    assert LONG[:MAX_ECHO] not in message


@pytest.mark.parametrize("value", [*HOSTILE, LONG])
def test_hostile_gpus_value(value: str) -> None:
    message = refused({"profile": "multi", "gpus": value})
    assert message.startswith("gpus must be a whole number such as 1, not ")
    assert LONG[:MAX_ECHO] not in message


@pytest.mark.parametrize("value", [*HOSTILE, LONG])
def test_hostile_form_values(value: str) -> None:
    message = form_refused({"profile": ["multi"], "gpus-multi": [value]})
    assert message.startswith("gpus must be a whole number")
    message = form_refused({"profile": [value]})
    assert message.startswith("There is no profile ")


@pytest.mark.parametrize("key", [*HOSTILE, LONG])
def test_hostile_field_names(key: str) -> None:
    assert refused({"profile": "cpu", key: "1"}).startswith("Unknown option(s) [")
    assert form_refused({"profile": ["cpu"], key: ["1"]}).startswith("Unexpected field(s)")


def test_echo_is_cut_at_max_echo() -> None:
    message = refused({"profile": LONG})
    echoed = message.removeprefix("There is no profile ").split(" for you.")[0]
    assert len(echoed) == MAX_ECHO
    assert echoed.endswith("…")


# --- product bug (see the report) --------------------------------------------------------------


@pytest.mark.parametrize("gpus", ["--1", "²", "-²", "\u0664", " \u2003 4"])
def test_odd_digit_strings_are_options_errors(gpus: str) -> None:
    message = form_refused({"profile": ["multi"], "gpus-multi": [gpus]})
    assert message.startswith("gpus must be a whole number, not ")


def test_options_no_visible_backend_offers_are_refused_first() -> None:
    """Keys a backend offers (Slurm's walltime…) pass on to its check; any other key is
    refused before the profile is even looked up, naming what is allowed."""
    with pytest.raises(OptionsError) as info:
        parse_request({"user_options": "cpu"}, ALL, allowed=["walltime"])
    assert str(info.value) == (
        "Unknown option(s) ['user_options']; allowed are 'profile', 'gpus' and 'walltime'."
    )
    seen: list[dict[str, object]] = []

    def choose(profile: Profile, extra: Mapping[str, object]) -> Mapping[str, object]:
        seen.append(dict(extra))
        return extra

    request = parse_request({"profile": "cpu", "walltime": 30}, ALL, choose, ["walltime"])
    assert seen == [{"walltime": 30}] and request.chosen == {"walltime": 30}
    assert request.as_user_options() == {"profile": "cpu", "gpus": 0, "walltime": 30}

"""The spawn form: only the caller's profiles, live GPU capacity, the last failure, and every value
escaped (the form is HTML inside JupyterHub's page)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from hub.form import human_bytes, human_seconds, render_form
from spawners.backends.base import Capacity
from spawners.profiles import Profile
from spawners.records import Event

pytestmark = pytest.mark.unit

GiB = 1024**3
CPU = Profile(
    slug="cpu",
    name="CPU only",
    backend="local",
    image="default",
    image_env="/v",
    description="JupyterLab without a GPU.",
    cpus=2,
    memory_bytes=4 * GiB,
    idle_timeout=3600,
)
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
    default_gpus=4,
    groups=("staff",),
)
SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@dataclass
class FakeSpawner:
    """What render_form reads of MLRPSpawner."""

    profiles: list[Profile]
    cap: Capacity = Capacity(4, 3, True, "cgroup v2")
    failure: Event | None = None
    asked: list[str] = field(default_factory=list)

    def visible_profiles(self) -> list[Profile]:
        return self.profiles

    def capacity(self, profile: Profile) -> Capacity:
        self.asked.append(profile.slug)
        return self.cap

    def last_failure(self) -> Event | None:
        return self.failure


def render(spawner: FakeSpawner) -> str:
    return render_form(spawner)  # type: ignore[arg-type]


def radio_values(html: str) -> list[str]:
    return re.findall(r'type="radio" name="profile" value="([^"]*)"', html)


def test_only_visible_profiles_are_offered() -> None:
    spawner = FakeSpawner([CPU, GPU1])
    html = render(spawner)
    assert radio_values(html) == ["cpu", "gpu1"]
    assert "Several GPUs" not in html and "multi" not in html
    assert spawner.asked == ["cpu", "gpu1"]
    assert re.search(r'value="cpu"\s+id="profile-cpu"\s+checked', html)


def test_free_and_total_gpus() -> None:
    html = render(FakeSpawner([CPU, GPU1], cap=Capacity(4, 3, True, "")))
    assert "GPUs on this server: 3 free of 4." in html
    assert "GPUs: 1 (3 free now)" in html
    assert "No GPU" in html
    assert "reason-" not in html and " disabled" not in html


def test_gpu_choices_become_a_select_with_the_default() -> None:
    html = render(FakeSpawner([MULTI], cap=Capacity(4, 4, True, "")))
    select = re.search(r'<select name="gpus-multi".*?</select>', html, re.S)
    assert select is not None
    assert re.findall(r'<option value="(\d+)"', select.group(0)) == ["2", "4"]
    assert re.search(r'<option value="4"\s+selected\s*>', select.group(0))
    assert "gpus-" not in render(FakeSpawner([GPU1]))  # one choice: nothing to pick


def test_profile_that_does_not_fit_is_disabled_with_its_reason() -> None:
    html = render(FakeSpawner([CPU, MULTI], cap=Capacity(4, 1, True, "")))
    radio = re.search(r'<input[^>]*value="multi"[^>]*>', html, re.S)
    assert radio is not None
    assert " disabled " in radio.group(0) and 'aria-describedby="reason-multi"' in radio.group(0)
    assert 'data-unavailable="1"' in radio.group(0)
    reason = re.search(r'<div class="([^"]*)"\s+id="reason-multi">([^<]*)</div>', html)
    assert reason is not None
    assert reason.group(2) == (
        "This profile needs 2 GPUs and only 1 of 4 is free. "
        "Try again later or pick another profile."
    )
    # Bootstrap's text-warning is yellow on white (1.6:1): the emphasis/subtle pair instead.
    assert "text-warning-emphasis" in reason.group(1) and "bg-warning-subtle" in reason.group(1)
    assert html.count('data-unavailable="1"') == 1
    assert re.search(r'<select name="gpus-multi"[^>]*disabled', html)
    assert "data-cannot-start" not in html, "the CPU profile can start"


def test_first_profile_that_can_start_is_checked() -> None:
    html = render(FakeSpawner([GPU1, CPU], cap=Capacity(4, 0, True, "")))
    assert re.search(r'value="cpu"\s+id="profile-cpu"\s+checked', html)
    assert not re.search(r'value="gpu1"\s+id="profile-gpu1"\s+checked', html)
    assert "All 4 GPUs on this server are in use. Try again later or pick another profile." in html


def test_when_nothing_can_start_the_button_says_why() -> None:
    html = render(FakeSpawner([GPU1, MULTI], cap=Capacity(4, 0, True, "")))
    assert "checked" not in html
    assert html.count(" disabled ") >= 2
    assert 'data-cannot-start="Cannot start now: all 4 GPUs on this server are in use"' in html
    assert "button.textContent = why" in html
    needs_more = render(FakeSpawner([MULTI], cap=Capacity(4, 1, True, "")))
    assert 'data-cannot-start="Cannot start now: this profile needs 2 GPUs' in needs_more
    nothing = render(FakeSpawner([]))
    assert 'data-cannot-start="No profile is available to you"' in nothing


def test_reasons_that_differ_give_a_general_button_text() -> None:
    html = render(FakeSpawner([GPU1, MULTI], cap=Capacity(4, 0, True, "")))
    assert "all 4 GPUs" in html  # one cause for both: said as is
    spawner = FakeSpawner([MULTI, GPU1], cap=Capacity(1, 0, True, ""))
    html = render(spawner)  # multi needs more than the node has, gpu1 waits for a free one
    assert "This profile needs 2 GPU(s) and this server has 1. Pick another profile" in html
    assert 'data-cannot-start="Cannot start now: no profile has the GPUs it needs free"' in html


def test_gpu_counts_that_do_not_fit_are_disabled() -> None:
    html = render(FakeSpawner([MULTI], cap=Capacity(4, 3, True, "")))
    select = re.search(r'<select name="gpus-multi".*?</select>', html, re.S)
    assert select is not None
    options = re.findall(r"<option ([^>]*)>([^<]*)</option>", select.group(0))
    assert [(" ".join(a.split()), t) for a, t in options] == [
        ('value="2" selected', "2"),  # the default (4) does not fit: the largest that does
        ('value="4" disabled', "4 (not free now)"),
    ]
    assert "disabled" not in select.group(0).split(">")[0], "the select itself stays usable"


def test_resources_are_shown_in_units() -> None:
    html = render(FakeSpawner([CPU]))
    assert "2 CPUs" in html and "4 GiB memory" in html and "stops after 1 h idle" in html
    assert "(advisory)" not in html
    assert "advisory on this server" not in html


def test_advisory_limits_are_labelled() -> None:
    html = render(FakeSpawner([CPU, GPU1], cap=Capacity(0, 0, False, "no cgroup v2 here")))
    assert "CPU and memory limits are advisory on this server (no cgroup v2 here)." in html
    assert html.count("(advisory)") == 1  # only the profile with CPU/memory limits


def test_last_failure_is_shown() -> None:
    failure = Event(
        "alice/", "s1", datetime(2024, 5, 6, 7, 8), 50, "All 4 GPUs are in use.", failed=True
    )
    html = render(FakeSpawner([CPU], failure=failure))
    assert 'id="mlrp-last-failure"' in html
    assert "Your last start (2024-05-06 07:08 UTC) failed:" in html
    assert "All 4 GPUs are in use." in html
    assert "mlrp-last-failure" not in render(FakeSpawner([CPU]))


def test_no_profiles() -> None:
    html = render(FakeSpawner([]))
    assert "No profile is available to you" in html
    assert radio_values(html) == []


def test_hostile_text_is_escaped() -> None:
    hostile = Profile(
        slug='x" onmouseover="alert(1)',
        name=SCRIPT,
        backend="local",
        image="default",
        image_env="/v",
        description=f"{SCRIPT} & {{{{7*7}}}}",
    )
    failure = Event("alice/", "s1", datetime(2024, 1, 1), 50, f"boom {SCRIPT}", failed=True)
    html = render(FakeSpawner([hostile], cap=Capacity(0, 0, False, SCRIPT), failure=failure))
    assert "<script" not in html
    assert 'onmouseover="' not in html
    assert html.count(ESCAPED) == 4  # name, description, limits note, failure
    assert f"boom {ESCAPED}" in html
    assert f"{ESCAPED} &amp; {{{{7*7}}}}" in html  # not rendered as a template either
    assert "49" not in html
    assert "x&#34; onmouseover=&#34;alert(1)" in html


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, ""), (0, ""), (512, "512 B"), (512 * 1024**2, "512 MiB"), (int(1.5 * GiB), "1.5 GiB")],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(("s", "text"), [(None, ""), (90, "90 s"), (600, "10 min"), (7200, "2 h")])
def test_human_seconds(s: int | None, text: str) -> None:
    assert human_seconds(s) == text


SLURM = Profile(
    slug="cluster",
    name="Cluster GPUs",
    backend="slurm",
    image="default",
    image_env="/v",
    gpu_choices=(1, 2, 8),
    default_gpus=1,
)
PARTITION_FULL = Capacity(
    4, 0, True, "Slurm", queued=True, where="partition gpu", summary="walltime 8 h"
)


class MixedSpawner(FakeSpawner):
    """A hub with local profiles and Slurm profiles: each backend answers for its own."""

    def capacity(self, profile: Profile) -> Capacity:
        return PARTITION_FULL if profile.backend == "slurm" else self.cap


def test_a_full_partition_queues_instead_of_blocking() -> None:
    html = render(MixedSpawner([GPU1, SLURM], cap=Capacity(4, 0, True, "")))
    # the local profile is blocked by this server's GPUs; the Slurm one waits in the queue
    assert "All 4 GPUs on this server are in use" in html
    assert 'value="cluster"\n               id="profile-cluster" checked' in html
    assert "GPUs: 1 or 2 or 8 (0 free now on partition gpu; a start may wait in the queue)" in html
    assert "Slurm, partition gpu · walltime 8 h" in html
    assert "GPUs on this server: 0 free of 4." in html  # from the local profile, not Slurm's
    # counts a node of the partition can hold are offered; more than a node has are not
    assert re.search(r'<option value="2"\s+>2</option>', html)
    assert re.search(r'<option value="8"\s+disabled>8 \(more than a node has\)</option>', html)


def test_a_profile_no_node_can_hold_is_blocked_with_the_partitions_limit() -> None:
    big = Profile(
        slug="big",
        name="Big",
        backend="slurm",
        image="default",
        image_env="/v",
        gpu_choices=(8,),
        default_gpus=8,
    )
    html = render(MixedSpawner([big]))
    assert "This profile needs 8 GPU(s) and the nodes of partition gpu have at most 4 each" in html
    assert "GPUs on this server" not in html  # no local profile: no line about this server


def test_a_profile_beyond_its_partitions_limits_is_blocked_with_the_reason() -> None:
    never = "Partition debug allows at most 30 minutes per session; you asked for 48 hours."
    cap = Capacity(4, 4, True, "", queued=True, where="partition debug", never=never)
    html = render(FakeSpawner([SLURM], cap=cap))
    assert "Partition debug allows at most 30 minutes per session" in html
    assert 'data-unavailable="1"' in html

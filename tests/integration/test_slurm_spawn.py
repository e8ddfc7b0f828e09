"""Slurm placement through the real hub and proxy, on the real private Slurm cluster of
tests/slurm.py (slurmctld and two slurmd nodes with 4 GPUs each, all on this host).

Stand-ins, named: the GPUs are device files with /dev/null's numbers (Slurm sets
CUDA_VISIBLE_DEVICES from them as on real hardware), and both "nodes" are this host at 127.0.0.1,
so "the hub reaches the node" is loopback here. Everything else is real: sbatch as the person's
own account, squeue, scancel, the job's port report, JupyterLab in the job, a kernel through the
proxy.
"""

from __future__ import annotations

import json
import pwd
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from harness import Hub, running_hub
from kernel import Kernel
from playwright.sync_api import Browser
from slurm import SlurmCluster, make_account

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

POLL = 2  # hub.poll_interval and slurm.poll_interval of this hub, seconds


def slurm_profiles() -> list[dict[str, Any]]:
    base = {"backend": "slurm", "cpus": 1, "memory": "1G"}
    return [
        {
            **base,
            "slug": "cluster",
            "name": "Cluster GPU",
            "placement": {"partition": "gpu", "walltime": "1:00:00"},
            "gpus": {"choices": [0, 1, 2, 8], "default": 1},
        },
        {
            **base,
            "slug": "staffonly",
            "name": "Staff partition",
            "placement": {"partition": "staffonly", "walltime": 30},
        },
        {
            **base,
            "slug": "toolong",
            "name": "Two days",
            "placement": {"partition": "debug", "walltime": "2-00:00:00"},
        },
        {
            **base,
            "slug": "brokenjob",
            "name": "Broken environment",
            "image": "broken",
            "placement": {"partition": "debug", "walltime": 10},
        },
        {
            **base,
            "slug": "hugemem",
            "name": "Much memory",
            "memory": "64G",
            "placement": {"partition": "gpu", "walltime": 30},
        },
    ]


@pytest.fixture(scope="module")
def hub(slurm_cluster: SlurmCluster) -> Iterator[Hub]:
    def configure(h: Hub) -> None:
        h.config["profiles"] += slurm_profiles()
        h.config["hub"]["poll_interval"] = POLL
        h.config["slurm"] = {
            "conf": str(slurm_cluster.conf),
            "server_ip": "127.0.0.1",
            "poll_interval": POLL,
            "walltime_warning": 3600,  # all of the 60 minutes: the warning comes at once
        }

    with running_hub(configure=configure) as h:
        yield h


@pytest.fixture(autouse=True)
def no_server_left(hub: Hub) -> Iterator[None]:
    """Each test starts with no server, whatever the one before it left."""
    yield
    for name in ("alice", "bob"):
        if not stopped(hub, name):
            hub.stop_server(name)


def account(hub: Hub, name: str) -> str:
    return hub.unix_accounts()[name]


def job_of(hub: Hub, name: str) -> str:
    """The Slurm job of `name`'s server: from JupyterHub's saved state once it runs, from the
    checkpoint the hub wrote right after sbatch while it starts."""
    job = str(hub.placement_state(name).get("job_id", ""))
    if not job:
        with hub.db() as c:
            row = c.execute(
                "SELECT state FROM server_checkpoints WHERE owner = ?", (f"{name}/",)
            ).fetchone()
        job = str(json.loads(row[0])["placement"].get("job_id", "")) if row else ""
    assert job, f"no job id saved for {name}: {hub.placement_state(name)}"
    return job


def events(hub: Hub, name: str) -> list[str]:
    """The messages recorded for `name`'s default server, oldest first (all spawns)."""
    with hub.db() as c:
        rows = c.execute(
            "SELECT message FROM spawn_events WHERE owner = ? ORDER BY id", (f"{name}/",)
        ).fetchall()
    return [r[0] for r in rows]


def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def kernel_env(hub: Hub, name: str) -> dict[str, Any]:
    code = (
        "import json, os; print(json.dumps({'uid': os.getuid(), "
        "'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), "
        "'node': os.environ.get('SLURMD_NODENAME'), 'job': os.environ.get('SLURM_JOB_ID'), "
        "'cwd': os.getcwd()}))"
    )
    with Kernel(hub, name, hub.user_token(name)) as k:
        return dict(k.run_json(code))


def stopped(hub: Hub, name: str) -> bool:
    return "" not in hub.api("GET", f"/users/{name}").json().get("servers", {})


def test_two_people_run_as_themselves_on_distinct_gpus(
    hub: Hub, slurm_cluster: SlurmCluster
) -> None:
    assert hub.start_server("alice", timeout=90, profile="cluster", gpus=2).status_code in (
        201,
        202,
    )
    assert hub.start_server("bob", timeout=90, profile="cluster", gpus=1).status_code in (201, 202)
    seen = {name: kernel_env(hub, name) for name in ("alice", "bob")}
    for name, env in seen.items():
        assert env["uid"] == pwd.getpwnam(account(hub, name)).pw_uid, env
        assert env["job"] == job_of(hub, name)
        assert slurm_cluster.job(env["job"])[0] == "RUNNING"
    assert len(seen["alice"]["cuda"].split(",")) == 2
    assert len(seen["bob"]["cuda"].split(",")) == 1
    if seen["alice"]["node"] == seen["bob"]["node"]:
        assert not set(seen["alice"]["cuda"].split(",")) & set(seen["bob"]["cuda"].split(","))
    # Slurm itself says whose job it is
    r = slurm_cluster.run(["squeue", "--noheader", "--format=%u", f"--jobs={job_of(hub, 'bob')}"])
    assert r.stdout.strip() == account(hub, "bob")
    said = events(hub, "alice")
    assert any(f"Submitted Slurm job {job_of(hub, 'alice')} to partition gpu" in m for m in said)
    assert any("can run until" in m for m in said), said
    # the walltime warning (set to the whole walltime) was recorded within a poll or two
    warned = lambda: any("reaches its walltime" in m for m in events(hub, "alice"))  # noqa: E731
    wait_for("walltime warning", warned, 4 * POLL + 5)
    for name in ("alice", "bob"):
        job = job_of(hub, name)
        hub.stop_server(name)
        assert slurm_cluster.job(job)[0] in ("CANCELLED", "COMPLETED", ""), slurm_cluster.job(job)


def own_jobs(cluster: SlurmCluster, unix_name: str) -> list[str]:
    """Every job of `unix_name` Slurm knows (any state)."""
    r = cluster.run(["squeue", "--noheader", "--states=all", f"--user={unix_name}", "--format=%i"])
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize(
    ("profile", "gpus", "sentence"),
    [
        ("cluster", 8, "The nodes of partition gpu have at most 4 GPUs each; you asked for 8."),
        ("toolong", None, "Partition debug allows at most 30 minutes per session; you asked for"),
        ("hugemem", None, "The nodes of partition gpu have at most 8,000 MB of memory each"),
        ("staffonly", None, "Partition staffonly is only for members of root, and you are not"),
    ],
)
def test_a_request_that_can_never_run_is_refused_before_sbatch(
    hub: Hub, slurm_cluster: SlurmCluster, profile: str, gpus: int | None, sentence: str
) -> None:
    options: dict[str, Any] = {"profile": profile}
    if gpus is not None:
        options["gpus"] = gpus
    r = hub.api("POST", "/users/alice/server", json=options)
    assert r.status_code == 400, (r.status_code, r.text)
    assert sentence in r.json()["message"]
    before = own_jobs(slurm_cluster, account(hub, "alice"))
    assert stopped(hub, "alice")
    assert own_jobs(slurm_cluster, account(hub, "alice")) == before  # nothing was submitted
    assert not any("Submitting" in m for m in events(hub, "alice")[-3:])


def progress_stream(hub: Hub, name: str, wanted: str, timeout: float = 20) -> list[str]:
    """The messages of the progress event stream (what the spawn page shows, also after a
    reload), read until one contains `wanted`."""
    seen: list[str] = []
    with requests.get(
        f"{hub.url}/hub/api/users/{name}/server/progress",
        headers={"Authorization": f"token {hub.admin_token()}"},
        stream=True,
        timeout=timeout,
    ) as r:
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + timeout
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                message = str(json.loads(line[5:]).get("message", ""))
                seen.append(message)
                if wanted in message:
                    return seen
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no progress message with {wanted!r}: {seen}")


def test_a_full_partition_says_why_and_starts_when_gpus_free(
    hub: Hub, slurm_cluster: SlurmCluster
) -> None:
    holder = make_account(hub.config["accounts"]["prefix"] + "holder")
    hold = slurm_cluster.hold_gpus(holder, "gpu", 8)
    try:
        r = hub.api("POST", "/users/alice/server", json={"profile": "cluster", "gpus": 1})
        # JupyterHub answers 202, or 201 after its slow_spawn_timeout (10 s) on 6.x
        assert r.status_code in (201, 202), r.text
        seen = progress_stream(hub, "alice", "Waiting for 1 GPU on partition gpu")
        assert any("Submitted Slurm job" in m for m in seen)
        # a reload of the page replays it
        assert "Waiting for 1 GPU on partition gpu" in " ".join(
            progress_stream(hub, "alice", "Waiting for 1 GPU")
        )
        assert not stopped(hub, "alice")
        job = job_of(hub, "alice")
        assert slurm_cluster.job(job) == ("PENDING", "Resources")
    finally:
        slurm_cluster.cancel(hold)
    hub.wait_ready("alice", timeout=60)
    assert kernel_env(hub, "alice")["job"] == job
    hub.stop_server("alice")


def test_a_job_cancelled_outside_the_hub_ends_the_session_within_a_poll(
    hub: Hub, slurm_cluster: SlurmCluster
) -> None:
    hub.start_server("alice", timeout=90, profile="cluster", gpus=0)
    job = job_of(hub, "alice")
    slurm_cluster.cancel(job)
    # Slurm's KillWait (5 s) plus a poll of the hub and one squeue period, with slack
    wait_for("session ended", lambda: stopped(hub, "alice"), 5 + 2 * POLL + 5)
    assert any(f"Your Slurm job {job} ended: it was cancelled." in m for m in events(hub, "alice"))
    r = requests.get(f"{hub.url}/user/alice/api/status", allow_redirects=False, timeout=10)
    assert r.status_code != 200  # no route to it any more


def test_a_job_that_dies_at_start_shows_its_output(hub: Hub) -> None:
    r = hub.api("POST", "/users/alice/server", json={"profile": "brokenjob"})
    if r.status_code == 202:
        wait_for("start failed", lambda: stopped(hub, "alice"), 40)
    failed = events(hub, "alice")[-1]
    assert "ended before JupyterLab answered" in failed, failed
    assert "Its output is in /" in failed and ".mlrp/slurm/mlrp-" in failed
    assert "No such file or directory" in failed  # the tail of the job's own output


def test_the_hub_restarting_keeps_sessions_and_their_walltime(
    hub: Hub, slurm_cluster: SlurmCluster
) -> None:
    hub.start_server("alice", timeout=90, profile="cluster", gpus=1)
    before = hub.placement_state("alice")
    hub.stop()
    hub.start()
    model = hub.wait_ready("alice", timeout=30)
    assert model["ready"]
    after = hub.placement_state("alice")
    assert after["job_id"] == before["job_id"] and after["ends_at"] == before["ends_at"]
    assert kernel_env(hub, "alice")["job"] == before["job_id"]
    assert slurm_cluster.job(before["job_id"])[0] == "RUNNING"
    hub.stop_server("alice")
    assert slurm_cluster.job(before["job_id"])[0] in ("CANCELLED", "")


def test_a_hub_killed_after_sbatch_cancels_the_job_it_left(
    hub: Hub, slurm_cluster: SlurmCluster
) -> None:
    holder = make_account(hub.config["accounts"]["prefix"] + "holder2")
    hold = slurm_cluster.hold_gpus(holder, "gpu", 8)
    try:
        r = hub.api("POST", "/users/bob/server", json={"profile": "cluster", "gpus": 1})
        assert r.status_code in (201, 202), r.text
        progress_stream(hub, "bob", "Submitted Slurm job")
        unix_name = account(hub, "bob")
        jobs = own_jobs(slurm_cluster, unix_name)
        pending = [j for j in jobs if slurm_cluster.job(j)[0] == "PENDING"]
        assert len(pending) == 1
        hub.kill()
        hub.start()
        wait_for(
            "the orphaned job cancelled",
            lambda: slurm_cluster.job(pending[0])[0] in ("CANCELLED", ""),
            30,
        )
        assert stopped(hub, "bob")
    finally:
        slurm_cluster.cancel(hold)
    with hub.db() as c:
        assert c.execute("SELECT owner FROM server_checkpoints").fetchall() == []


def test_a_frozen_controller_never_ends_a_session(hub: Hub, slurm_cluster: SlurmCluster) -> None:
    hub.start_server("alice", timeout=90, profile="cluster", gpus=0)
    job = job_of(hub, "alice")
    slurm_cluster.freeze_controller()
    try:
        # squeue waits out its MessageTimeout (10 s) and fails: at least one unknown poll
        wait_for("an unknown poll", lambda: "Cannot tell whether" in hub.log(), 40)
        time.sleep(3 * POLL)
        assert not stopped(hub, "alice")
    finally:
        slurm_cluster.thaw_controller()
    time.sleep(2 * POLL)
    assert not stopped(hub, "alice")
    assert kernel_env(hub, "alice")["job"] == job
    hub.stop_server("alice")


def form_post(hub: Hub, session: requests.Session, data: dict[str, str]) -> requests.Response:
    xsrf = session.cookies.get("_xsrf", "")
    return session.post(
        f"{hub.url}/hub/spawn", params={"_xsrf": xsrf}, data=data, allow_redirects=False
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"profile": "cluster", "gpus-cluster": "8"}, "have at most 4 GPUs each"),
        ({"profile": "cluster", "gpus-cluster": "3"}, "offers 0, 1, 2, 8 GPU(s)"),
        ({"profile": "cluster", "gpus-cluster": "1; scancel -u root"}, "whole number"),
        ({"profile": "cluster", "partition": "staffonly"}, "Unexpected field(s)"),
        ({"profile": "cluster", "walltime": "99-00:00:00"}, "Unexpected field(s)"),
        ({"profile": "staffonly"}, "only for members of root"),
        ({"profile": "toolong"}, "allows at most 30 minutes per session"),
    ],
)
def test_hand_crafted_form_posts_are_refused_before_sbatch(
    hub: Hub, slurm_cluster: SlurmCluster, data: dict[str, str], expected: str
) -> None:
    session = hub.login_session("alice", hub.passwords["alice"])
    session.get(f"{hub.url}/hub/spawn")  # the form: reads the partitions
    unix_name = account(hub, "alice") if "alice" in hub.unix_accounts() else ""
    before = own_jobs(slurm_cluster, unix_name) if unix_name else []
    r = form_post(hub, session, data)
    if r.status_code == 302:  # passed the form's own checks; start() refuses before sbatch
        wait_for("refusal", lambda: stopped(hub, "alice"), 20)
        said = events(hub, "alice")[-1]
    else:
        assert r.status_code == 400, r.text[:300]
        said = r.text.replace("&#39;", "'")
    assert expected in said, said[:500]
    assert "Traceback" not in said
    if unix_name:
        assert own_jobs(slurm_cluster, unix_name) == before
    assert stopped(hub, "alice")


@pytest.mark.browser
def test_a_browser_reaches_jupyterlab_in_a_slurm_job(
    hub: Hub, slurm_cluster: SlurmCluster, browser: Browser
) -> None:
    from browser import browser_login

    person = browser_login(hub, browser, "alice")
    page = person.page
    try:
        form = page.inner_text("[data-mlrp-form]")
        assert "free now on partition gpu" in form and "Slurm, partition gpu" in form, form
        page.get_by_label("Cluster GPU").check()
        page.select_option("select[name=gpus-cluster]", "1")
        page.get_by_role("button", name="Start").click()
        page.wait_for_url("**/user/alice/lab**", timeout=90_000)
        page.wait_for_selector("#jp-main-dock-panel", timeout=90_000)
        env = kernel_env(hub, "alice")
        assert env["job"] == job_of(hub, "alice") and env["cuda"] is not None
        assert slurm_cluster.job(env["job"])[0] == "RUNNING"
        # the home page says where the session runs and how much walltime it has left
        page.goto(f"{hub.url}/hub/home")
        page.wait_for_selector("#mlrp-session:not([hidden])")
        said = page.inner_text("#mlrp-session")
        assert f"Your session runs as Slurm job {env['job']} on node {env['node']}: " in said
        assert "of walltime left (until" in said, said
    finally:
        person.context.close()


def test_a_node_the_hub_cannot_reach_is_explained(slurm_cluster: SlurmCluster) -> None:
    """The nodes' address as the hub knows it (slurm.node_addresses) leads nowhere: the start
    fails saying the hub cannot reach the node, in the progress events and the admin log, and
    the job is cancelled."""

    def configure(h: Hub) -> None:
        h.config["profiles"] += slurm_profiles()
        h.config["slurm"] = {
            "conf": str(slurm_cluster.conf),
            "server_ip": "127.0.0.1",
            "poll_interval": POLL,
            "connect_timeout": 5,
            # sessions listen on 127.0.0.1 only: nothing answers on 127.0.0.2
            "node_addresses": {"node1": "127.0.0.2", "node2": "127.0.0.2"},
        }

    with running_hub(users=("alice",), configure=configure) as h:
        r = h.api("POST", "/users/alice/server", json={"profile": "cluster", "gpus": 0})
        assert r.status_code in (201, 202, 500), r.text
        wait_for("start failed", lambda: stopped(h, "alice"), 60)
        said = events(h, "alice")
        assert any(
            "The hub cannot reach your session on node" in m and "127.0.0.2" in m for m in said
        ), said
        assert "no connection to 127.0.0.2:" in h.log()
        job = next(m for m in said if "Submitted Slurm job" in m).split()[3]
        assert slurm_cluster.job(job)[0] in ("CANCELLED", "")


def test_walltime_cpus_and_memory_chosen_reach_slurm(hub: Hub, slurm_cluster: SlurmCluster) -> None:
    options = {"profile": "cluster", "gpus": 0, "walltime": 45, "cpus": 2, "memory": 3}
    assert hub.start_server("alice", timeout=90, **options).status_code in (201, 202)
    job = job_of(hub, "alice")
    r = slurm_cluster.run(["squeue", "--noheader", f"--jobs={job}", "--format=%l|%C|%m"])
    assert r.stdout.strip() == "45:00|2|3G", r.stdout
    assert hub.api("GET", "/users/alice").json()["servers"][""]["user_options"] == options
    hub.stop_server("alice")
    # beyond what the partition allows: refused with the bound, before sbatch
    before = own_jobs(slurm_cluster, account(hub, "alice"))
    r = hub.api("POST", "/users/alice/server", json={**options, "walltime": 721})
    assert r.status_code == 400
    assert (
        "walltime must be a whole number from 1 to 720 minutes on partition gpu"
        in (r.json()["message"])
    )
    assert own_jobs(slurm_cluster, account(hub, "alice")) == before


def test_the_walltime_left_is_the_persons_to_see(hub: Hub, slurm_cluster: SlurmCluster) -> None:
    hub.start_server("alice", timeout=90, profile="cluster", gpus=0)
    path = "/mlrp/users/alice/session"
    r = hub.api("GET", path, token=hub.user_token("alice"))
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["running"], s["backend"], s["job_id"]) == (True, "slurm", job_of(hub, "alice"))
    assert s["node"] in ("node1", "node2") and s["partition"] == "gpu"
    assert 3000 < s["seconds_left"] <= 3600 and s["walltime_left"].endswith("min")
    # nobody else's
    assert hub.api("GET", path, token=hub.user_token("bob")).status_code in (403, 404)
    hub.stop_server("alice")
    r = hub.api("GET", path, token=hub.user_token("alice"))
    assert r.status_code == 200 and r.json() == {"running": False}

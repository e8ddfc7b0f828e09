"""spawners.slurm.script: the batch script and its checked values.

The rendered script is run for real with bash (outside Slurm: the #SBATCH lines are comments
to bash) against a real HTTP server on 127.0.0.1 standing in for the hub's API, with a stub
``jupyterhub-singleuser`` that prints the arguments it was exec'd with. That the same script
runs under a real slurmd is tests/integration/test_slurm_commands.py.

Apptainer is not installable on this machine (not packaged for Debian 12): its command line is
tested as an argument list only, never run.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from spawners.slurm.script import (
    PORT_REPORT,
    BatchJob,
    BatchJobError,
    Bind,
    Container,
    apptainer_argv,
    render,
    server_command,
)

pytestmark = pytest.mark.unit

EXPORT = ("HOME", "PATH", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_USER")


def job(**change: Any) -> BatchJob:
    values: dict[str, Any] = dict(
        tag="mlrp-alice",
        partition="gpu",
        gpus=2,
        cpus=4,
        memory_mb=8000,
        walltime_minutes=90,
        output="/home/alice/.mlrp/slurm-%j.log",
        workdir="/home/alice",
        env_prefix="/shared/envs/not-run",
        bind_ip="127.0.0.1",
        export=EXPORT,
        singleuser_args=("--debug",),
    )
    values.update(change)
    return BatchJob(**values)


def directives(script: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")
    ]


def exec_argv(script: str) -> list[str]:
    """The command of the script's last line, ``exec …`` (quoted words may span lines)."""
    head, command = script.split("\nexec ", 1)
    return shlex.split(command)


def test_render_directives() -> None:
    script = render(job())
    assert script.startswith("#!/bin/bash\n")
    assert directives(script) == [
        "--job-name=mlrp-mlrp-alice",
        "--partition=gpu",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=4",
        "--mem=8000M",
        "--time=90",
        "--gres=gpu:2",
        "--output=/home/alice/.mlrp/slurm-%j.log",
        "--chdir=/home/alice",
        "--export=HOME,PATH,JUPYTERHUB_API_TOKEN,JUPYTERHUB_API_URL,JUPYTERHUB_USER",
    ]


def test_no_gres_line_without_gpus() -> None:
    assert not any(d.startswith("--gres") for d in directives(render(job(gpus=0))))


def test_exec_line_is_the_port_report_then_singleuser() -> None:
    argv = exec_argv(render(job()))
    assert argv == [
        "/shared/envs/not-run/bin/python",
        "-I",
        "-c",
        PORT_REPORT,
        "127.0.0.1",
        "/shared/envs/not-run/bin/jupyterhub-singleuser",
        "--debug",
    ]
    assert argv == server_command(job())


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n"], input=render(job()), text=True, check=True)


# --- hostile values are refused when the job is made -----------------------------------------

HOSTILE = [
    "x\ny",
    "x\n#SBATCH --uid=0",
    "$(id)",
    "`id`",
    "a b",
    "a'b",
    'a"b',
    "a;b",
    "a|b",
    "a&b",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("field", ["tag", "partition"])
def test_hostile_names_are_refused(field: str, value: str) -> None:
    with pytest.raises(BatchJobError, match=field):
        job(**{field: value})


@pytest.mark.parametrize(
    "value",
    [f"/home/alice/{h}" for h in HOSTILE if h] + ["relative/path", "/home/alice/../bob", "/a:b"],
)
@pytest.mark.parametrize("field", ["output", "workdir", "env_prefix"])
def test_hostile_paths_are_refused(field: str, value: str) -> None:
    with pytest.raises(BatchJobError, match=field):
        job(**{field: value})


def test_output_may_use_slurm_patterns_but_not_others() -> None:
    assert job(output="/home/alice/%u-%x-%j.log").output == "/home/alice/%u-%x-%j.log"
    with pytest.raises(BatchJobError):
        job(output="/home/alice/%A.log")
    with pytest.raises(BatchJobError):
        job(workdir="/home/%u")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gpus", -1),
        ("gpus", 65),
        ("gpus", True),
        ("gpus", "2"),
        ("gpus", 2.0),
        ("cpus", 0),
        ("memory_mb", 0),
        ("walltime_minutes", 0),
        ("walltime_minutes", "60; id"),
    ],
)
def test_numbers_must_be_whole_and_in_range(field: str, value: object) -> None:
    with pytest.raises(BatchJobError, match=field):
        job(**{field: value})


@pytest.mark.parametrize("value", ["0.0.0.0", "::1", "10.1.2.3"])
def test_bind_ip_accepts_addresses(value: str) -> None:
    assert job(bind_ip=value).bind_ip == value


@pytest.mark.parametrize(
    "value", ["localhost", "127.0.0.1; id", "127.000.000.001", "::0001", "", "node1"]
)
def test_bind_ip_refuses_anything_else(value: str) -> None:
    with pytest.raises(BatchJobError, match="bind_ip"):
        job(bind_ip=value)


def test_export_names_are_checked_and_must_carry_the_hub_variables() -> None:
    for bad in ["A,B", "A B", "A=1", "1A", "$A", "A\nB"]:
        with pytest.raises(BatchJobError, match="variable"):
            job(export=(*EXPORT, bad))
    with pytest.raises(BatchJobError, match="JUPYTERHUB_API_TOKEN"):
        job(export=("HOME", "JUPYTERHUB_API_URL"))
    with pytest.raises(BatchJobError, match="tuple"):
        job(export=list(EXPORT))


@pytest.mark.parametrize(
    "arg",
    [
        "--port=1",
        "--ip=0.0.0.0",
        "--ServerApp.token=x",
        "--debug=1",
        "--ServerApp.default_url=/lab;id",
        "--ServerApp.default_url",
        "--ServerApp.root_dir=/home/a b",
        "--MappingKernelManager.cull_idle_timeout=-1",
        "$(id)",
    ],
)
def test_singleuser_args_come_from_the_allowlist(arg: str) -> None:
    with pytest.raises(BatchJobError, match="server option"):
        job(singleuser_args=(arg,))


def test_allowed_singleuser_args_are_passed_through() -> None:
    args = ("--debug", "--ServerApp.default_url=/lab", "--ServerApp.root_dir=/home/alice/work")
    assert exec_argv(render(job(singleuser_args=args)))[-3:] == list(args)


def test_render_refuses_anything_but_a_batchjob() -> None:
    with pytest.raises(TypeError):
        render({"tag": "x"})  # type: ignore[arg-type]


# --- Apptainer (argv only: not installable here) ---------------------------------------------


def test_apptainer_argv_with_gpus_and_binds() -> None:
    c = Container(
        "/shared/images/torch.sif",
        binds=(Bind("/home/alice", "/home/alice"), Bind("/shared/data", "/data", read_only=True)),
    )
    assert apptainer_argv(c, 2, ["/opt/env/bin/python", "-V"]) == [
        "apptainer",
        "exec",
        "--nv",
        "--bind",
        "/home/alice:/home/alice",
        "--bind",
        "/shared/data:/data:ro",
        "/shared/images/torch.sif",
        "/opt/env/bin/python",
        "-V",
    ]


def test_apptainer_without_gpus_has_no_nv() -> None:
    c = Container("/shared/images/cpu.sif", apptainer=("/usr/local/bin/apptainer",))
    assert apptainer_argv(c, 0, ["x"]) == [
        "/usr/local/bin/apptainer",
        "exec",
        "/shared/images/cpu.sif",
        "x",
    ]


def test_rendered_job_in_a_container() -> None:
    c = Container("/shared/images/torch.sif", binds=(Bind("/home/alice", "/home/alice"),))
    argv = exec_argv(render(job(container=c, env_prefix="/opt/conda")))
    assert argv[:6] == [
        "apptainer",
        "exec",
        "--nv",
        "--bind",
        "/home/alice:/home/alice",
        "/shared/images/torch.sif",
    ]
    assert argv[6:9] == ["/opt/conda/bin/python", "-I", "-c"]


@pytest.mark.parametrize("bad", ["/a:b", "/a,b", "rel", "/a b", "/x/../y"])
def test_apptainer_paths_are_checked(bad: str) -> None:
    with pytest.raises(BatchJobError):
        Bind(bad, "/x")
    with pytest.raises(BatchJobError):
        Bind("/x", bad)
    with pytest.raises(BatchJobError):
        Container(bad)


# --- the port report, run for real ------------------------------------------------------------


class _Hub:
    """A real HTTP server on 127.0.0.1 that records the port reports it receives."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None, Any]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hub.posts.append((self.path, self.headers["Authorization"], json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hub() -> Iterator[_Hub]:
    h = _Hub()
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture
def env_prefix(tmp_path: Path) -> Path:
    """An "image" environment: the system Python and a stub jupyterhub-singleuser."""
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to("/usr/bin/python3")
    stub = prefix / "bin" / "jupyterhub-singleuser"
    # Prints what it got, then lives for STUB_LIVE seconds (a server) and exits with STUB_EXIT.
    stub.write_text(
        "#!/usr/bin/python3\nimport json, os, sys, time\n"
        "print(json.dumps({'argv': sys.argv[1:], 'secret': os.environ.get('SECRET'),"
        " 'url': os.environ.get('JUPYTERHUB_SERVICE_URL')}), flush=True)\n"
        "time.sleep(float(os.environ.get('STUB_LIVE', '0')))\n"
        "print('server ended by itself', flush=True)\n"
        "sys.exit(int(os.environ.get('STUB_EXIT', '0')))\n"
    )
    stub.chmod(0o755)
    return prefix


def _job_env(tmp_path: Path, api_url: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_API_TOKEN": "the-servers-token",
        "JUPYTERHUB_USER": "alice",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/",
        "SECRET": "hub-only",
        **extra,
    }


def _run_script(
    script: str, tmp_path: Path, api_url: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run the job script as Slurm would (bash, the job's environment) until it and everything
    it started have ended (capture_output waits for every holder of its pipes)."""
    path = tmp_path / "job.sh"
    path.write_text(script)
    env = _job_env(tmp_path, api_url, **extra)
    return subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)


def test_port_report_posts_the_port_and_execs_singleuser(
    hub: _Hub, env_prefix: Path, tmp_path: Path
) -> None:
    script = render(job(env_prefix=str(env_prefix), workdir=str(tmp_path)))
    done = _run_script(script, tmp_path, hub.url)
    assert done.returncode == 0, done.stderr
    (path, auth, body), *more = hub.posts
    assert not more
    assert path == "/hub/api/batchspawner"
    assert auth == "token the-servers-token"
    assert set(body) == {"port"} and isinstance(body["port"], int) and body["port"] > 0
    port = body["port"]
    # The server's line and the report's come in either order (they run side by side).
    reported = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert reported["argv"] == ["--ip=127.0.0.1", f"--port={port}", "--debug"]
    assert reported["url"] == f"http://127.0.0.1:{port}/user/alice/"
    assert f"mlrp: listening on 127.0.0.1:{port}" in done.stdout
    assert "server ended by itself" in done.stdout


def test_the_job_ends_with_the_servers_exit_status(
    hub: _Hub, env_prefix: Path, tmp_path: Path
) -> None:
    script = render(job(env_prefix=str(env_prefix), workdir=str(tmp_path)))
    done = _run_script(script, tmp_path, hub.url, STUB_EXIT="3")
    assert done.returncode == 3, done.stderr
    assert len(hub.posts) == 1


def test_unreachable_hub_ends_the_job_with_a_sentence(env_prefix: Path, tmp_path: Path) -> None:
    """The server starts before the report; a failed report stops it (it would otherwise live
    STUB_LIVE = 120 s, past the run's timeout) and the sentence is the output's last line."""
    script = render(job(env_prefix=str(env_prefix)))
    done = _run_script(script, tmp_path, "http://127.0.0.1:9/hub/api", STUB_LIVE="120")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "could not reach the hub at http://127.0.0.1:9/hub/api/batchspawner" in last
    assert "compute nodes must be able to open connections to the hub" in last
    assert "server ended by itself" not in done.stdout  # stopped, not left running


def test_missing_singleuser_ends_the_job_with_a_sentence(hub: _Hub, tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "python").symlink_to("/usr/bin/python3")
    done = _run_script(render(job(env_prefix=str(prefix))), tmp_path, hub.url)
    assert done.returncode == 127
    assert f"mlrp: cannot run {prefix}/bin/jupyterhub-singleuser: No such file" in done.stderr


def test_a_signal_to_the_job_reaches_the_server(
    hub: _Hub, env_prefix: Path, tmp_path: Path
) -> None:
    """A signal to the job's main process (`scancel --batch --signal`, the owner's kill) is
    passed on to JupyterLab, and the job ends with the server's own ending."""
    path = tmp_path / "job.sh"
    path.write_text(render(job(env_prefix=str(env_prefix), workdir=str(tmp_path))))
    env = _job_env(tmp_path, hub.url, STUB_LIVE="120")
    with subprocess.Popen(
        ["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as job_process:
        assert job_process.stdout is not None
        first = [job_process.stdout.readline(), job_process.stdout.readline()]  # either order
        assert any("argv" in line for line in first)  # the server runs
        assert any("mlrp: listening on" in line for line in first)  # the report is done
        job_process.terminate()
        out, _ = job_process.communicate(timeout=30)
    assert job_process.returncode == 128 + 15  # the server died of the SIGTERM passed on
    assert "server ended by itself" not in out


def test_hostile_values_never_reach_the_script(tmp_path: Path) -> None:
    """Each field, given a hostile value, is refused before render can see it."""
    base = job()
    attempts = {
        "tag": "a$(touch /tmp/pwned)",
        "partition": "gpu\n#SBATCH --uid=0",
        "output": "/tmp/x'; id; '",
        "workdir": "/home/alice /etc",
        "env_prefix": "/opt/`id`",
        "bind_ip": "127.0.0.1 --ServerApp.token=",
        "export": ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "X,ALL"),
        "singleuser_args": ("--ServerApp.default_url=/lab\nid",),
    }
    for field, value in attempts.items():
        with pytest.raises(BatchJobError):
            replace(base, **{field: value})

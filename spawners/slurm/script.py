"""The batch script of a user server, rendered only from validated values.

:class:`BatchJob` checks every value when it is made (type, range, and a strict character set
for names and paths), so a value with a newline, ``$()``, a quote or a space never reaches
:func:`render`; render then still quotes each command word with :func:`shlex.quote`, so the
script would stay safe even if a check were wrong.

The job reports its port itself: a fixed Python snippet, run with the image's own Python, binds
port 0 on the bind address, sets ``JUPYTERHUB_SERVICE_URL`` to that address (jupyterhub-singleuser
takes its address from it, over any option), starts ``jupyterhub-singleuser --ip=BIND --port=N``
in a child at once and, while JupyterLab imports, POSTs ``{"port": N}`` to
``$JUPYTERHUB_API_URL/batchspawner`` with the server's own token. It then waits for the server
(passing on signals) and exits with its status. If the hub cannot be reached from the node, the
snippet stops the server and says so as the last line of the job's output, so the spawn fails
with that sentence instead of timing out.

Environment: ``--export=NAME,…`` lists exactly the variables the job gets from the ``sbatch``
process's environment (the hub builds that environment; JUPYTERHUB_API_URL and
JUPYTERHUB_API_TOKEN must be among them); nothing else of the hub's environment crosses.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

TAG = re.compile(r"^[a-z0-9_.-]{1,64}$")
PARTITION = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Absolute paths of plain characters: no spaces, quotes, '$', ';', newlines, ':' or ','.
_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]{0,4095}$")
# The output path may also carry Slurm's filename patterns (%j job id, %u user, %x job name).
_OUTPUT_PATH = re.compile(r"^/(?:[A-Za-z0-9._/+@-]|%[jux%])*$")
REQUIRED_ENV = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL")

# Extra jupyterhub-singleuser options a profile may pass: option → pattern of its value
# (None: a flag without a value). --ip and --port are the script's own and never allowed.
SINGLEUSER_OPTIONS: dict[str, re.Pattern[str] | None] = {
    "--debug": None,
    "--ServerApp.default_url": re.compile(r"^/[A-Za-z0-9/_.-]{0,200}$"),
    "--ServerApp.root_dir": _PATH,
    "--ServerApp.shutdown_no_activity_timeout": re.compile(r"^[0-9]{1,7}$"),
    "--MappingKernelManager.cull_idle_timeout": re.compile(r"^[0-9]{1,7}$"),
    "--MappingKernelManager.cull_interval": re.compile(r"^[0-9]{1,7}$"),
    "--MappingKernelManager.cull_connected": re.compile(r"^(True|False)$"),
    "--ResourceUseDisplay.track_cpu_percent": re.compile(r"^(True|False)$"),
    "--ResourceUseDisplay.cpu_warning_threshold": re.compile(r"^[0-9.]{1,8}$"),
}

LIMITS = {"gpus": (0, 64), "cpus": (1, 4096), "memory_mb": (1, 64 * 1024 * 1024)}
MAX_WALLTIME_MINUTES = 366 * 24 * 60


class BatchJobError(ValueError):
    """A value that may not go into a batch script; the message names the field and the rule."""


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BatchJobError(f"{name} must be a whole number, not {value!r}")
    if not low <= value <= high:
        raise BatchJobError(f"{name} must be between {low} and {high}, not {value}")


def _check(name: str, value: object, pattern: re.Pattern[str], rule: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BatchJobError(f"{name} must be {rule}, not {value!r}")


def _check_path(name: str, value: object, pattern: re.Pattern[str] = _PATH) -> None:
    _check(
        name,
        value,
        pattern,
        "an absolute path of letters, digits and . _ / + @ -",
    )
    assert isinstance(value, str)
    if any(part == ".." for part in value.split("/")):
        raise BatchJobError(f"{name} must not contain '..', not {value!r}")


@dataclass(frozen=True)
class Bind:
    """One Apptainer bind mount: host `source` at `target` inside the container."""

    source: str
    target: str
    read_only: bool = False

    def __post_init__(self) -> None:
        _check_path("bind source", self.source)
        _check_path("bind target", self.target)

    def spec(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class Container:
    """Run the server inside an Apptainer image; `env_prefix` is then a path in the image."""

    image: str  # the .sif file on the shared filesystem
    binds: tuple[Bind, ...] = ()
    apptainer: tuple[str, ...] = ("apptainer",)

    def __post_init__(self) -> None:
        _check_path("image", self.image)
        if not all(isinstance(b, Bind) for b in self.binds):
            raise BatchJobError("binds must be Bind values")
        if not self.apptainer or not all(isinstance(a, str) and a for a in self.apptainer):
            raise BatchJobError("the apptainer command must be a non-empty list of words")


@dataclass(frozen=True)
class BatchJob:
    """Everything a batch script is made of, each value checked when the job is made.

    `tag` names the job ``mlrp-<tag>`` (lowercase letters, digits, ``_ . -``; at most 64).
    `walltime_minutes` becomes ``--time``; `memory_mb` ``--mem``. `output` may use ``%j``.
    `env_prefix` is the Python environment of the image (``<env_prefix>/bin/python`` and
    ``jupyterhub-singleuser``). `bind_ip` is the address the server listens on, one the hub
    can reach (127.0.0.1 in tests; the compute network's address of the node, or 0.0.0.0 when
    the cluster's network is private). `export` names the environment variables the job gets.
    """

    tag: str
    partition: str
    gpus: int
    cpus: int
    memory_mb: int
    walltime_minutes: int
    output: str
    workdir: str
    env_prefix: str
    bind_ip: str
    export: tuple[str, ...]
    singleuser_args: tuple[str, ...] = ()
    container: Container | None = field(default=None)

    def __post_init__(self) -> None:
        _check("tag", self.tag, TAG, "1-64 of a-z 0-9 _ . -")
        _check("partition", self.partition, PARTITION, "1-64 of A-Z a-z 0-9 _ . -")
        for name, (low, high) in LIMITS.items():
            _check_int(name, getattr(self, name), low, high)
        _check_int("walltime_minutes", self.walltime_minutes, 1, MAX_WALLTIME_MINUTES)
        _check_path("output", self.output, _OUTPUT_PATH)
        _check_path("workdir", self.workdir)
        _check_path("env_prefix", self.env_prefix)
        try:
            ip = ipaddress.ip_address(self.bind_ip)
        except (ValueError, TypeError):
            raise BatchJobError(f"bind_ip must be an IP address, not {self.bind_ip!r}") from None
        if str(ip) != self.bind_ip:
            raise BatchJobError(f"bind_ip must be written as {str(ip)!r}, not {self.bind_ip!r}")
        if not isinstance(self.export, tuple):
            raise BatchJobError("export must be a tuple of variable names")
        for name in self.export:
            _check("an exported variable", name, ENV_NAME, "a variable name")
        missing = [n for n in REQUIRED_ENV if n not in self.export]
        if missing:
            raise BatchJobError(f"export must include {', '.join(missing)}: the job needs them")
        if not isinstance(self.singleuser_args, tuple):
            raise BatchJobError("singleuser_args must be a tuple of options")
        for arg in self.singleuser_args:
            _check_singleuser_arg(arg)
        if self.container is not None and not isinstance(self.container, Container):
            raise BatchJobError("container must be a Container")

    @property
    def job_name(self) -> str:
        return f"mlrp-{self.tag}"


def _check_singleuser_arg(arg: object) -> None:
    if not isinstance(arg, str):
        raise BatchJobError(f"a server option must be text, not {arg!r}")
    option, eq, value = arg.partition("=")
    if option not in SINGLEUSER_OPTIONS:
        allowed = ", ".join(sorted(SINGLEUSER_OPTIONS))
        raise BatchJobError(f"server option {option!r} is not allowed (allowed: {allowed})")
    pattern = SINGLEUSER_OPTIONS[option]
    if pattern is None:
        if eq:
            raise BatchJobError(f"server option {option} takes no value, not {arg!r}")
    elif not eq or not pattern.fullmatch(value):
        raise BatchJobError(f"server option {option} has a value that is not allowed: {arg!r}")


# Run with the image's Python as: python -I -c PORT_REPORT BIND_IP SINGLEUSER [ARGS...]
# Fixed text: nothing is formatted into it; its inputs are argv and the job's environment.
# JupyterLab starts at once in a child; this process reports the port meanwhile (off the start's
# critical path), then waits for the server, passing on signals, and exits with its status. A
# failed report stops the server: the job ends with the sentence as the last line of its output.
PORT_REPORT = """\
import os, signal, socket, sys
bind, exe, *args = sys.argv[1:]
family = socket.AF_INET6 if ":" in bind else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.bind((bind, 0))
    port = s.getsockname()[1]
# jupyterhub-singleuser takes its address from this variable over any option.
host = f"[{bind}]" if ":" in bind else bind
prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
os.environ["JUPYTERHUB_SERVICE_URL"] = f"http://{host}:{port}{prefix}"
server = os.fork()
if server == 0:
    try:
        os.execv(exe, [exe, f"--ip={bind}", f"--port={port}", *args])
    except OSError as e:
        print(f"mlrp: cannot run {exe}: {e.strerror}", file=sys.stderr, flush=True)
        os._exit(127)
def forward(number, frame):
    try:
        os.kill(server, number)
    except ProcessLookupError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(sig, forward)
def wait():
    status = os.waitpid(server, 0)[1]
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code
import json, ssl, urllib.request
url = os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/batchspawner"
context = None
if url.startswith("https:"):
    context = ssl.create_default_context(cafile=os.environ.get("JUPYTERHUB_SSL_CLIENT_CA"))
    if os.environ.get("JUPYTERHUB_SSL_CERTFILE"):
        context.load_cert_chain(
            os.environ["JUPYTERHUB_SSL_CERTFILE"], os.environ.get("JUPYTERHUB_SSL_KEYFILE")
        )
request = urllib.request.Request(
    url,
    data=json.dumps({"port": port}).encode(),
    method="POST",
    headers={
        "Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"],
        "Content-Type": "application/json",
    },
)
try:
    urllib.request.urlopen(request, timeout=30, context=context).close()
except Exception as e:
    os.kill(server, signal.SIGTERM)
    wait()
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    sys.exit(
        f"mlrp: this job on {node} could not reach the hub at {url} to report "
        f"its port ({e}). The compute nodes must be able to open connections to the hub API."
    )
print(f"mlrp: listening on {bind}:{port}", flush=True)
sys.exit(wait())
"""


def server_command(job: BatchJob) -> list[str]:
    """The command the job execs: the port report, then jupyterhub-singleuser, in the image."""
    command = [
        f"{job.env_prefix}/bin/python",
        "-I",
        "-c",
        PORT_REPORT,
        job.bind_ip,
        f"{job.env_prefix}/bin/jupyterhub-singleuser",
        *job.singleuser_args,
    ]
    if job.container is None:
        return command
    return apptainer_argv(job.container, job.gpus, command)


def apptainer_argv(container: Container, gpus: int, command: Sequence[str]) -> list[str]:
    """``apptainer exec [--nv] [--bind SRC:DST[:ro]]… IMAGE COMMAND…``.

    ``--nv`` (NVIDIA libraries and devices inside) only when the job has GPUs; Apptainer then
    honours the ``CUDA_VISIBLE_DEVICES`` Slurm set. The host environment (JUPYTERHUB_*) passes
    into the container by Apptainer's default.
    """
    _check_int("gpus", gpus, *LIMITS["gpus"])
    argv = [*container.apptainer, "exec"]
    if gpus > 0:
        argv.append("--nv")
    for b in container.binds:
        argv += ["--bind", b.spec()]
    return [*argv, container.image, *command]


def render(job: BatchJob) -> str:
    """The batch script for `job` (submit it on sbatch's standard input)."""
    if not isinstance(job, BatchJob):
        raise TypeError("render needs a BatchJob")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job.job_name}",
        f"#SBATCH --partition={job.partition}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={job.cpus}",
        f"#SBATCH --mem={job.memory_mb}M",
        f"#SBATCH --time={job.walltime_minutes}",
    ]
    if job.gpus > 0:
        lines.append(f"#SBATCH --gres=gpu:{job.gpus}")
    lines += [
        f"#SBATCH --output={job.output}",
        f"#SBATCH --chdir={job.workdir}",
        f"#SBATCH --export={','.join(job.export)}",
        "# Rendered by MLRP (spawners/slurm/script.py) from checked values.",
        "set -eu",
        "exec " + shlex.join(server_command(job)),
        "",
    ]
    return "\n".join(lines)

"""Build a catalog image as an environment, a container image or an Apptainer image.

- environment: a venv of the image's Python at a prefix (default /opt/mlrp/images/NAME), the
  lock installed with --no-deps --require-hashes. Built in place (a venv is not relocatable);
  a failed build removes what it made. The prefix gets `mlrp-image.json` (the image and the
  digest of its inputs), which the platform reads to know what an environment is.
- container: the local engine (podman or docker) builds images/generated/NAME/ as
  `mlrp/NAME:<inputs>`, FROM the catalog's pinned base or a local one (--base).
- apptainer: not installable on this project's machines; the exact command is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from images.catalog import Catalog
from images.lock import lock_path

IMAGES_DIR = Path("/opt/mlrp/images")
MARKER = "mlrp-image.json"
Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


class BuildError(Exception):
    """A build that cannot run or failed; `str()` is the sentence for the admin."""


@dataclass(frozen=True)
class Built:
    name: str
    kind: str
    where: str  # the prefix, the image tag, or the .sif path
    command: list[str]  # the last command run (or, for apptainer, the one to run)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


def _check_kind(catalog: Catalog, name: str, kind: str) -> None:
    image = catalog.images[name]
    if kind not in image.kinds:
        raise BuildError(
            f"The image {name} is not built as {kind}; it is built as {', '.join(image.kinds)}."
        )


def runs_for_everyone(path: Path) -> bool:
    """Whether every account can run `path`: it and each directory above it (after symlinks)
    are open to others. A venv's python is a link to its base interpreter, so an environment
    made from a Python under /root (pyenv) would start for root only."""
    real = path.resolve()
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


def find_python(version: str) -> str:
    """A Python `version` that every account can run: the system's first, then PATH's."""
    candidates = [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    found = shutil.which(f"python{version}")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if Path(candidate).exists() and runs_for_everyone(Path(candidate)):
            return candidate
    where = f" ({found} is not open to other accounts)" if found else ""
    raise BuildError(
        f"Building this image needs Python {version} that every account can run, and there is "
        f"none here{where}. Install it (apt-get install python{version} python{version}-venv)."
    )


def env_marker(prefix: Path) -> dict[str, str] | None:
    """What `mlrp images build --as environment` wrote into `prefix`; None if nothing."""
    try:
        data = json.loads((prefix / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build_environment(
    catalog: Catalog, name: str, prefix: Path | None = None, run: Run = _run
) -> Built:
    _check_kind(catalog, name, "environment")
    image = catalog.images[name]
    if image.platform != "linux-x86_64" or os.uname().machine != "x86_64":
        raise BuildError(
            f"The image {name} is for {image.platform}; build its environment on such a "
            f"machine (this one is {os.uname().sysname.lower()}-{os.uname().machine})."
        )
    python = find_python(image.python)
    prefix = prefix or IMAGES_DIR / name
    if not prefix.is_absolute():
        raise BuildError(f"--prefix must be an absolute path; got {prefix}")
    lock = lock_path(name)
    marker = env_marker(prefix)
    if marker is not None and marker.get("inputs") == catalog.inputs_digest(name):
        return Built(name, "environment", str(prefix), [])  # already built from these pins
    if prefix.exists() and any(prefix.iterdir()):
        raise BuildError(
            f"{prefix} exists and is not an environment of {name} built from the current "
            "catalog; remove it or pick another --prefix."
        )
    steps = [
        [python, "-m", "venv", str(prefix)],
        [str(prefix / "bin" / "pip"), "install", "--no-cache-dir", "--no-deps"]
        + ["--require-hashes", "--disable-pip-version-check", "-r", str(lock)],
    ]
    try:
        for argv in steps:
            done = run(argv)
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                raise BuildError(f"Building {name} failed at `{' '.join(argv)}`:\n{tail}")
        marker_data = {"image": name, "inputs": catalog.inputs_digest(name)}
        (prefix / MARKER).write_text(json.dumps(marker_data) + "\n")
    except BaseException:
        shutil.rmtree(prefix, ignore_errors=True)  # nothing half-built is left to be used
        raise
    subprocess.run(["chmod", "-R", "a+rX", str(prefix)], check=True)
    return Built(name, "environment", str(prefix), steps[-1])


def container_tag(catalog: Catalog, name: str) -> str:
    return f"mlrp/{name}:{catalog.inputs_digest(name)}"


BUILD_SETTINGS = "/run/mlrp-build"  # where a build's pip.conf and CA bundle are mounted


def build_container(
    catalog: Catalog,
    name: str,
    engine: str = "podman",
    base: str | None = None,
    ca_bundle: Path | None = None,
    run: Run = _run,
) -> Built:
    """`ca_bundle`: the CA certificates pip must trust inside the build (a site whose traffic
    goes through a TLS-inspecting proxy; `mlrp images build` passes $PIP_CERT). It is mounted
    for the build only, beside a pip.conf naming it (the Dockerfile's PIP_CONFIG_FILE build
    argument); neither stays in the image."""
    _check_kind(catalog, name, "container")
    exe = shutil.which(engine)
    if exe is None:
        raise BuildError(f"No container engine {engine!r} here; install podman or pass --engine.")
    if ca_bundle is not None and not ca_bundle.is_file():
        raise BuildError(f"The CA bundle {ca_bundle} does not exist.")
    context = lock_path(name).parent
    argv = [exe, "build", "--network", "host", "-t", container_tag(catalog, name)]
    if base:
        argv += ["--build-arg", f"BASE={base}"]
    with tempfile.TemporaryDirectory() as tmp:
        if ca_bundle is not None:
            shutil.copyfile(ca_bundle, Path(tmp, "ca.pem"))
            Path(tmp, "pip.conf").write_text(f"[global]\ncert = {BUILD_SETTINGS}/ca.pem\n")
            for f in Path(tmp).iterdir():
                f.chmod(0o644)
            Path(tmp).chmod(0o755)
            argv += ["--volume", f"{tmp}:{BUILD_SETTINGS}:ro"]
            argv += ["--build-arg", f"PIP_CONFIG_FILE={BUILD_SETTINGS}/pip.conf"]
        argv += ["-f", str(context / "Dockerfile"), str(context)]
        done = run(argv)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise BuildError(f"Building the container image of {name} failed:\n{tail}")
    return Built(name, "container", container_tag(catalog, name), argv)


def apptainer_command(catalog: Catalog, name: str, sif: Path) -> Built:
    _check_kind(catalog, name, "apptainer")
    definition = lock_path(name).parent / "apptainer.def"
    # Apptainer resolves %files sources against the current directory: run it from there.
    argv = ["apptainer", "build", str(sif), definition.name]
    return Built(name, "apptainer", str(sif), ["cd", str(definition.parent), "&&", *argv])

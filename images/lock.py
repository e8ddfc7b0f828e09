"""Resolve an image's pins into its environment lock: `python -m images.lock NAME...`.

Needs PyPI. pip resolves the catalog's pins for the image's own platform and Python (not this
machine's: the MLX lock is resolved for macOS arm64 on Linux), wheels only, and the lock lists
every distribution with its sha256, installable with `pip install --no-deps --require-hashes`.
Its header records the digest of the inputs (catalog.inputs_digest): a test fails when the
catalog changed and the lock was not made again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from images.catalog import GENERATED, Catalog, load

# pip --platform tags per catalog platform: every manylinux glibc up to Debian 12's (2.36).
PIP_PLATFORMS = {
    "linux-x86_64": [
        *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
        "manylinux2014_x86_64",
        "linux_x86_64",
    ],
    "macos-arm64": ["macosx_14_0_arm64"],
}
LOCK_NAME = "requirements.lock"


def lock_path(name: str) -> Path:
    return GENERATED / name / LOCK_NAME


def pip_argv(catalog: Catalog, name: str, report: Path, pip: str = sys.executable) -> list[str]:
    image = catalog.images[name]
    argv = [pip, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
    argv += ["--report", str(report), "--only-binary=:all:", "--implementation", "cp"]
    argv += ["--python-version", image.python]
    for tag in PIP_PLATFORMS[image.platform]:
        argv += ["--platform", tag]
    return argv + [f"{req}=={version}" for req, version in catalog.requirements(name).items()]


def lock_text(catalog: Catalog, name: str, report: dict) -> str:
    image = catalog.images[name]
    lines = [
        f"# Environment lock of image {name} (images/catalog.yaml), for {image.platform},",
        f"# Python {image.python}. Made by `python -m images.lock {name}`; do not edit.",
        f"# inputs: {catalog.inputs_digest(name)}",
    ]
    pins = []
    for item in report["install"]:
        meta = item["metadata"]
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        pins.append(f"{meta['name'].lower()}=={meta['version']} --hash=sha256:{sha}")
    return "\n".join(lines + sorted(pins)) + "\n"


def make_lock(catalog: Catalog, name: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.json")
        done = subprocess.run(pip_argv(catalog, name, report), capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
            raise SystemExit(f"images.lock: pip cannot resolve {name}:\n" + "\n".join(errors))
        text = lock_text(catalog, name, json.loads(report.read_text()))
    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str]) -> int:
    catalog = load()
    names = argv or list(catalog.images)
    unknown = [n for n in names if n not in catalog.images]
    if unknown:
        print(f"images.lock: no image {', '.join(unknown)} in the catalog", file=sys.stderr)
        return 2
    for name in names:
        print(f"{name}: {make_lock(catalog, name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

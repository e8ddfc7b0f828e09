"""What a curated image promises inside, checked the same way in an environment, a container
and a server started from either: each framework imports, at the catalog's version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import REPO, code_env

from images.catalog import Catalog

# The course image's distributions and the module each is imported as.
IMPORTS = {
    "numpy": "numpy",
    "pandas": "pandas",
    "matplotlib": "matplotlib",
    "scikit-learn": "sklearn",
    "jupyterlab": "jupyterlab",
    "ipywidgets": "ipywidgets",
    "dask": "dask",
    "distributed": "distributed",
    "ray": "ray",
}
# Prints one JSON line: versions, the environment's prefix, uid, CUDA_VISIBLE_DEVICES.
PROBE = f"""
import importlib, json, os, sys
from importlib.metadata import version
mods = {json.dumps(IMPORTS)}
for m in mods.values():
    importlib.import_module(m)
print(json.dumps({{
    "versions": {{d: version(d) for d in [*mods, "jupyterhub"]}},
    "prefix": sys.prefix,
    "uid": os.getuid(),
    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
}}))
"""


def expected_versions(catalog: Catalog, name: str) -> dict[str, str]:
    pins = catalog.requirements(name)
    return {d: pins[d] for d in [*IMPORTS, "jupyterhub"]}


def build_env(name: str, prefix: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`mlrp images build NAME --as env --prefix PREFIX`, run from the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", "images", "build", name, "--as", "env"]
        + ["--prefix", str(prefix)],
        cwd=REPO,
        env=code_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )

"""The bootstrap installs every package the distribution has: its copy of the checkout (CODE in
hub/bootstrap.sh) and pyproject.toml's package list cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_bootstrap_copies_every_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    found = re.search(r"^CODE=\(([^)]*)\)$", (REPO / "hub" / "bootstrap.sh").read_text(), re.M)
    assert found, "hub/bootstrap.sh defines CODE=(...)"
    assert packages <= set(found.group(1).split()), (packages, found.group(1))
    assert set(project["tool"]["mypy"]["packages"]) == packages

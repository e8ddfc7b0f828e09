"""The image catalog: the shipped one is valid; a broken one is refused naming each key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from images.catalog import CATALOG, CatalogError, load, parse

pytestmark = pytest.mark.unit


def _data() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(CATALOG.read_text()))


def test_the_shipped_catalog_has_the_curated_set() -> None:
    catalog = load()
    assert set(catalog.images) == {"course-cpu", "cuda-pytorch", "cuda-jax", "cuda-full", "mlx"}
    full = catalog.images["cuda-full"]
    assert {"torch", "jax[cuda12]", "tensorflow", "transformers"} <= set(full.frameworks)
    assert catalog.images["mlx"].platform == "macos-arm64"
    assert catalog.images["mlx"].kinds == ["environment"]
    assert catalog.base.reference.startswith("docker.io/library/python:3.11-slim-bookworm@sha256:")
    assert {"jupyterhub", "jupyterlab", "ipywidgets", "dask", "distributed", "ray"} <= set(
        catalog.stack
    )


def test_the_stack_is_the_hubs_own_jupyterhub() -> None:
    """jupyterhub-singleuser in every image is the version of the hub the platform installs
    (JupyterHub 6; it warns on a mismatch). On the JupyterHub 5 pass of a full run the catalog
    still follows the platform's default, 6.x."""
    import jupyterhub

    pinned, hub = load().stack["jupyterhub"], jupyterhub.__version__
    if pinned.split(".")[0] == hub.split(".")[0]:
        assert pinned == hub
    else:
        assert (pinned.split(".")[0], hub.split(".")[0]) == ("6", "5"), (pinned, hub)


def _problems(mutate: Any) -> list[str]:
    data = _data()
    mutate(data)
    with pytest.raises(CatalogError) as e:
        parse(data, "catalog.yaml")
    assert str(e.value).startswith("catalog.yaml is not a valid image catalog:")
    return e.value.problems


BAD = [
    (
        lambda d: d["images"]["cuda-jax"].pop("cuda"),
        "images.cuda-jax: cuda: an nvidia image says which CUDA runtime it ships",
    ),
    (
        lambda d: d["images"]["cuda-jax"].update(cuda="12.7"),
        "images.cuda-jax.cuda: CUDA 12.7 is not in the driver table",
    ),
    (
        lambda d: d["images"]["cuda-jax"].update(cuda="twelve"),
        "images.cuda-jax: cuda: must be X.Y such as 12.4; got 'twelve'",
    ),
    (
        lambda d: d["images"]["course-cpu"]["frameworks"].update(numpy=">=2"),
        "images.course-cpu.frameworks: framework numpy: '>=2' is not an exact version",
    ),
    (
        lambda d: d["images"]["course-cpu"]["frameworks"].update({"numpy; os_name": "2.0"}),
        "images.course-cpu.frameworks: 'numpy; os_name' is not a package name",
    ),
    (
        lambda d: d["images"]["mlx"].update(kinds=["environment", "container"]),
        "images.mlx: kinds: an apple image is an environment only",
    ),
    (
        lambda d: d["images"]["course-cpu"].update(cuda="12.4"),
        "images.course-cpu: cuda and min_driver are for nvidia images, not cpu",
    ),
    (
        lambda d: d["images"]["course-cpu"].update(kinds=["vm"]),
        "images.course-cpu.kinds[0]: Input should be 'environment', 'container' or 'apptainer'",
    ),
    (
        lambda d: d["images"]["course-cpu"].update(acelerator="cpu"),
        "images.course-cpu.acelerator: unknown key; did you mean 'accelerator'?",
    ),
    (
        lambda d: d["base"].update(digest="sha256:abc"),
        "base.digest: must be sha256: and 64 hex digits; got 'sha256:abc'",
    ),
    (lambda d: d["stack"].pop("jupyterhub"), "stack: jupyterhub must be pinned"),
    (
        lambda d: d["images"]["cuda-jax"]["frameworks"].update(ray="2.60.0"),
        "images.cuda-jax: ray is pinned by stack: for every image alike; remove it here",
    ),
    (
        lambda d: d["images"].update({"Bad_Name": d["images"]["course-cpu"]}),
        "images.Bad_Name.[key]: 'Bad_Name' is not allowed here",
    ),
    (
        lambda d: d["images"]["cuda-jax"].update(min_driver="new"),
        "images.cuda-jax.min_driver: must be a driver version such as 570.124.06; got 'new'",
    ),
    (lambda d: d.update(version=2), "version: Input should be 1"),
]


@pytest.mark.parametrize(("mutate", "expected"), BAD)
def test_a_broken_catalog_names_the_key(mutate: Any, expected: str) -> None:
    found = _problems(mutate)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_at_once() -> None:
    def two(d: dict[str, Any]) -> None:
        d["images"]["course-cpu"]["frameworks"]["numpy"] = "latest"
        d["base"]["digest"] = "nope"

    found = _problems(two)
    assert len(found) == 2, found


@pytest.mark.parametrize(
    ("text", "problem"),
    [("images: [", "cannot read"), ("", "(top level)"), ("- a\n- b\n", "(top level)")],
)
def test_unreadable_catalogs(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as e:
        load(path)
    assert problem in str(e.value)


def test_a_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="file not found"):
        load(tmp_path / "nope.yaml")


def test_inputs_digest_follows_the_pins() -> None:
    catalog = load()
    before = catalog.inputs_digest("cuda-pytorch")
    data = _data()
    data["images"]["cuda-pytorch"]["frameworks"]["torch"] = "2.5.1"
    assert parse(data).inputs_digest("cuda-pytorch") != before
    data = _data()
    data["images"]["cuda-pytorch"]["description"] = "Other words."
    assert parse(data).inputs_digest("cuda-pytorch") == before  # words are not inputs

"""Which node can run which curated image: the driver table and the verdicts, table-driven."""

from __future__ import annotations

import pytest

from images.catalog import load
from images.compat import Node, check_all, verdict
from images.drivers import cuda_key, driver_key, load_table

pytestmark = pytest.mark.unit

CATALOG = load()

# Rows: the node's NVIDIA driver ("none": no driver); columns: the catalog's images, judged on a
# linux-x86_64 node for a session with 1 GPU. ok = allowed, no = refused.
MATRIX = """
driver      course-cpu  cuda-pytorch  cuda-jax  cuda-full  mlx
none        ok          no            no        no         no
450.80.02   ok          no            no        no         no
535.104.05  ok          no            no        no         no
550.54.13   ok          no            no        no         no
550.54.14   ok          ok            no        ok         no
570.124.06  ok          ok            no        ok         no
575.51.02   ok          ok            no        ok         no
575.51.03   ok          ok            ok        ok         no
580.65.06   ok          ok            ok        ok         no
"""


def _matrix() -> list[tuple[str | None, str, bool]]:
    header, *rows = [line.split() for line in MATRIX.strip().splitlines()]
    images = header[1:]
    assert images == list(CATALOG.images), "the matrix covers every image of the catalog"
    cases = []
    for driver, *cells in rows:
        for image, cell in zip(images, cells, strict=True):
            cases.append((None if driver == "none" else driver, image, cell == "ok"))
    return cases


@pytest.mark.parametrize(("driver", "image", "allowed"), _matrix())
def test_driver_by_image(driver: str | None, image: str, allowed: bool) -> None:
    v = verdict(CATALOG, image, Node("linux-x86_64", driver), gpus=1)
    assert v.allowed is allowed, v.sentence()
    if not allowed:
        assert v.sentence().startswith(f"The image {image} cannot run on this node")


def test_an_old_driver_is_refused_with_the_reason_and_the_alternatives() -> None:
    v = verdict(CATALOG, "cuda-jax", Node("linux-x86_64", "570.124.06", name="gpu07"), gpus=2)
    assert v.sentence() == (
        "The image cuda-jax cannot run on gpu07: it ships CUDA 12.9, which needs NVIDIA driver "
        "575.51.03 or newer, and the driver there is 570.124.06 (which supports CUDA up to "
        "12.8). "
        "Images that can: course-cpu, cuda-pytorch, cuda-full."
    )


def test_a_cuda_12_8_image_on_a_12_2_driver_is_refused() -> None:
    """The issue's own example, on a catalog image set to CUDA 12.8."""
    image = CATALOG.images["cuda-pytorch"].model_copy(update={"cuda": "12.8"})
    catalog = CATALOG.model_copy(update={"images": {**CATALOG.images, "cuda-pytorch": image}})
    v = verdict(catalog, "cuda-pytorch", Node("linux-x86_64", "535.54.03"), gpus=1)
    assert not v.allowed
    assert "needs NVIDIA driver 570.26 or newer" in v.sentence()
    assert "(which supports CUDA up to 12.2)" in v.sentence()


def test_mlx_on_linux_is_refused_and_runs_on_a_mac() -> None:
    v = verdict(CATALOG, "mlx", Node("linux-x86_64", "580.65.06"), gpus=0)
    assert v.sentence().startswith(
        "The image mlx cannot run on this node: it is an MLX image for Apple-Silicon Macs "
        "(macOS arm64), and the platform there is linux-x86_64."
    )
    assert verdict(CATALOG, "mlx", Node("macos-arm64"), gpus=0).allowed
    on_mac = {v.image: v.allowed for v in check_all(CATALOG, Node("macos-arm64"))}
    assert on_mac == {
        "course-cpu": False,
        "cuda-pytorch": False,
        "cuda-jax": False,
        "cuda-full": False,
        "mlx": True,
    }


def test_a_cuda_image_without_gpus_runs_on_cpu_where_there_is_no_driver() -> None:
    v = verdict(CATALOG, "cuda-pytorch", Node("linux-x86_64", None), gpus=0)
    assert v.allowed and v.reason == "CPU only: there is no NVIDIA driver there"
    refused = verdict(CATALOG, "cuda-pytorch", Node("linux-x86_64", None), gpus=1)
    assert "and there is no NVIDIA driver there" in refused.sentence()
    assert refused.alternatives == ("course-cpu",)


def test_min_driver_overrides_the_table() -> None:
    image = CATALOG.images["cuda-jax"].model_copy(update={"min_driver": "525.60.13"})
    catalog = CATALOG.model_copy(update={"images": {**CATALOG.images, "cuda-jax": image}})
    assert verdict(catalog, "cuda-jax", Node("linux-x86_64", "535.104.05"), gpus=1).allowed


def test_no_alternative_says_to_ask() -> None:
    v = verdict(CATALOG, "cuda-jax", Node("linux-aarch64", "580.65.06"), gpus=1)
    assert v.sentence().endswith("No image of the catalog can; ask your administrator.")


# -- the driver table -----------------------------------------------------------------------
def test_the_table_grows_with_the_cuda_version_and_names_its_source() -> None:
    table = load_table()
    assert table.source.startswith("https://docs.nvidia.com/cuda/cuda-toolkit-release-notes")
    ordered = sorted(table.minimum, key=cuda_key)
    drivers = [driver_key(table.minimum[c]) for c in ordered]
    assert drivers == sorted(drivers) and len(set(drivers)) == len(drivers)
    assert table.minimum["12.0"] == "525.60.13" and table.minimum["12.4"] == "550.54.14"


@pytest.mark.parametrize(
    ("driver", "highest"),
    [("450.51.05", "11.0"), ("535.54.03", "12.2"), ("560.35.05", "12.6"), ("400.1", None)],
)
def test_highest_cuda_of_a_driver(driver: str, highest: str | None) -> None:
    assert load_table().highest_cuda(driver) == highest


@pytest.mark.parametrize("bad", ["", "570", "five.hundred", "570.124.06.1", "570..1"])
def test_driver_versions_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an NVIDIA driver version"):
        driver_key(bad)


def test_an_unknown_driver_is_not_judged_but_the_platform_is() -> None:
    node = Node("linux-x86_64", None, "the cluster's nodes", driver_known=False)
    v = verdict(CATALOG, "cuda-jax", node, gpus=4)
    assert v.allowed and "not known, so not checked" in v.reason
    mlx = verdict(CATALOG, "mlx", node, gpus=0)
    assert mlx.sentence().startswith("The image mlx cannot run on the cluster's nodes: it is an")

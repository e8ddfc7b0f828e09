"""Whether a node can run an image: platform, accelerator and NVIDIA driver, in sentences.

The same verdict is given by `mlrp images check` and before every spawn on every backend: a
refusal names the reason and the catalog's images this node can run instead.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

from images.drivers import driver_key

if TYPE_CHECKING:  # the catalog's model imports config.schema, which imports the backends
    from images.catalog import Catalog, Image


@dataclass(frozen=True)
class Node:
    """What an image needs to know of a node (or of all the nodes a backend uses). `driver`:
    the NVIDIA driver version, None when there is none, or when it is not known
    (`driver_known` False: CUDA images are then not judged by driver). `platform`:
    linux-x86_64, linux-aarch64, macos-arm64. `name`: how sentences name it."""

    platform: str
    driver: str | None = None
    name: str = "this node"
    driver_known: bool = True


def host_platform() -> str:
    """This machine as the catalog names platforms: linux-x86_64, linux-aarch64, macos-arm64."""
    system = {"Linux": "linux", "Darwin": "macos"}.get(platform.system(), platform.system().lower())
    machine = {"AMD64": "x86_64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())
    if system == "linux" and machine == "arm64":
        machine = "aarch64"
    if system == "macos" and machine == "aarch64":
        machine = "arm64"
    return f"{system}-{machine}"


@dataclass(frozen=True)
class Verdict:
    image: str
    allowed: bool
    reason: str  # refused: why; allowed: how it runs there ("CUDA 12.4 on driver 570.124.06")
    alternatives: tuple[str, ...] = ()

    def sentence(self) -> str:
        if self.allowed:
            return f"{self.image}: runs ({self.reason})."
        text = f"The image {self.image} cannot run on {self.reason}."
        if self.alternatives:
            text += f" Images that can: {', '.join(self.alternatives)}."
        else:
            text += " No image of the catalog can; ask your administrator."
        return text


def required_driver(catalog: Catalog, image: Image) -> str | None:
    """The NVIDIA driver an image needs at least; None for images without CUDA."""
    if image.cuda is None:
        return None
    return image.min_driver or catalog.drivers.minimum[image.cuda]


def _judge(catalog: Catalog, name: str, node: Node, gpus: int) -> tuple[bool, str]:
    image = catalog.images[name]
    where = node.name
    if image.accelerator == "apple":
        if node.platform != "macos-arm64":
            return False, (
                f"{where}: it is an MLX image for Apple-Silicon Macs (macOS arm64), and the "
                f"platform there is {node.platform}"
            )
        return True, "MLX on Apple Silicon"
    if node.platform != image.platform:
        return False, (
            f"{where}: it is built for {image.platform}, and the platform there is {node.platform}"
        )
    if image.accelerator == "cpu":
        return True, "CPU"
    needed = required_driver(catalog, image)
    assert needed is not None and image.cuda is not None  # an nvidia image (catalog checks it)
    if not node.driver_known:
        return True, f"CUDA {image.cuda}; the NVIDIA driver there is not known, so not checked"
    if node.driver is None:
        if gpus > 0:
            return False, (
                f"{where}: it needs an NVIDIA driver {needed} or newer for CUDA {image.cuda}, "
                "and there is no NVIDIA driver there"
            )
        return True, "CPU only: there is no NVIDIA driver there"
    if driver_key(node.driver) < driver_key(needed):
        top = catalog.drivers.highest_cuda(node.driver)
        supports = f"which supports CUDA up to {top}" if top else "older than CUDA 11"
        return False, (
            f"{where}: it ships CUDA {image.cuda}, which needs NVIDIA driver {needed} or "
            f"newer, and the driver there is {node.driver} ({supports})"
        )
    return True, f"CUDA {image.cuda} on driver {node.driver}"


def verdict(catalog: Catalog, name: str, node: Node, gpus: int = 0) -> Verdict:
    """Can `node` run image `name` with `gpus` GPUs? Refusals list the images that can."""
    allowed, reason = _judge(catalog, name, node, gpus)
    if allowed:
        return Verdict(name, True, reason)
    others = tuple(
        other for other in catalog.images if other != name and _judge(catalog, other, node, gpus)[0]
    )
    return Verdict(name, False, reason, others)


def check_all(catalog: Catalog, node: Node, gpus: int = 0) -> list[Verdict]:
    return [verdict(catalog, name, node, gpus) for name in catalog.images]

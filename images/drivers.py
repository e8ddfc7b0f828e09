"""NVIDIA's CUDA toolkit / minimum driver table (images/cuda_drivers.yaml, with its source)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("cuda_drivers.yaml")
DRIVER = re.compile(r"\d{2,4}(\.\d{1,3}){1,2}")


def driver_key(version: str) -> tuple[int, ...]:
    """'570.124.06' -> (570, 124, 6), for comparing driver versions."""
    if not DRIVER.fullmatch(version):
        raise ValueError(f"{version!r} is not an NVIDIA driver version such as 570.124.06")
    return tuple(int(part) for part in version.split("."))


def cuda_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


@dataclass(frozen=True)
class DriverTable:
    source: str
    minimum: dict[str, str]  # CUDA X.Y -> minimum driver

    def unknown(self, cuda: str) -> str | None:
        """A sentence when `cuda` is not in the table (None when it is)."""
        if cuda in self.minimum:
            return None
        known = ", ".join(sorted(self.minimum, key=cuda_key))
        return (
            f"CUDA {cuda} is not in the driver table (images/cuda_drivers.yaml knows {known}); "
            f"add its row from {self.source}, or set min_driver for this image"
        )

    def highest_cuda(self, driver: str) -> str | None:
        """The newest CUDA X.Y a node with `driver` fully supports; None: older than any row."""
        have = driver_key(driver)
        fits = [c for c, d in self.minimum.items() if driver_key(d) <= have]
        return max(fits, key=cuda_key) if fits else None


def load_table(path: Path = TABLE) -> DriverTable:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    minimum = {str(k): str(v) for k, v in data["minimum_driver"].items()}
    for cuda, driver in minimum.items():
        if not re.fullmatch(r"\d{2}\.\d", cuda):
            raise ValueError(f"{path}: {cuda!r} is not a CUDA version X.Y")
        driver_key(driver)
    return DriverTable(source=str(data["source"]), minimum=minimum)

"""The image catalog (images/catalog.yaml): what each curated image is, pinned.

One entry per image is the single source of its Dockerfile, Apptainer definition and
environment lock (images/render.py, images/lock.py). Validated like the deployment file: every
problem at once, each naming its key path (`images.cuda-pytorch.cuda: ...`).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.schema import describe
from images.drivers import DriverTable, load_table

CATALOG = Path(__file__).with_name("catalog.yaml")
LOCKS = Path(__file__).with_name("locks")
GENERATED = Path(__file__).with_name("generated")

SLUG = r"^[a-z][a-z0-9-]{0,30}$"
# A pip requirement name, with extras: torch, jax[cuda12], scikit-learn.
REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?")
# An exact release: 2.6.0, 2026.8.0, 4.56.2, 1.0rc1, 2.6.0.post1.
EXACT = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CUDA = re.compile(r"\d{2}\.\d")
PLATFORMS = {"cpu": "linux-x86_64", "nvidia": "linux-x86_64", "apple": "macos-arm64"}

Accelerator = Literal["cpu", "nvidia", "apple"]
Kind = Literal["environment", "container", "apptainer"]


class CatalogError(Exception):
    """A catalog that cannot be used; `str()` lists every problem, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not a valid image catalog:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _pins(value: dict[str, str], what: str) -> dict[str, str]:
    for name, version in value.items():
        if not REQUIREMENT.fullmatch(name):
            raise ValueError(f"{name!r} is not a package name (such as torch or jax[cuda12])")
        if not isinstance(version, str) or not EXACT.fullmatch(version):
            raise ValueError(
                f"{what} {name}: {version!r} is not an exact version; pin it, e.g. '2.6.0'"
            )
    return value


class Base(_Strict):
    """The container base, pinned by tag and digest. No registry is reachable on a build machine
    without one: `mlrp images build --as container` then builds FROM a local base instead."""

    image: str = Field(pattern=r"^[a-z0-9./_-]+$", description="e.g. docker.io/library/python")
    tag: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    digest: str = Field(description="sha256:<64 hex> of the tag when it was pinned")

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not DIGEST.fullmatch(v):
            raise ValueError(f"must be sha256: and 64 hex digits; got {v!r}")
        return v

    @property
    def reference(self) -> str:
        return f"{self.image}:{self.tag}@{self.digest}"


class Image(_Strict):
    title: str = Field(min_length=1, max_length=60)
    description: str = Field(min_length=1, max_length=300, description="what it is for")
    accelerator: Accelerator
    kinds: list[Kind] = Field(min_length=1)
    python: str = Field(pattern=r"^3\.\d{1,2}$")
    cuda: str | None = Field(None, description="the CUDA runtime the image ships (X.Y)")
    min_driver: str | None = Field(
        None, description="override the NVIDIA driver table's minimum for `cuda`"
    )
    frameworks: dict[str, str] = Field(
        min_length=1, description="what the image promises, pinned: shown in the form"
    )
    packages: dict[str, str] = Field(default_factory=dict, description="other pins")
    apt: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.+-]+$")]] = Field(
        default_factory=list, description="Debian packages of the container and Apptainer kinds"
    )
    start_seconds: int = Field(ge=1, le=600, description="typical start time, shown in the form")

    @field_validator("frameworks")
    @classmethod
    def _frameworks(cls, v: dict[str, str]) -> dict[str, str]:
        return _pins(v, "framework")

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: dict[str, str]) -> dict[str, str]:
        return _pins(v, "package")

    @field_validator("min_driver")
    @classmethod
    def _driver(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{3}(\.\d{1,3}){1,2}", v):
            raise ValueError(f"must be a driver version such as 570.124.06; got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Image:
        if len(set(self.kinds)) != len(self.kinds):
            raise ValueError("kinds: each kind once")
        if self.accelerator == "nvidia":
            if self.cuda is None:
                raise ValueError("cuda: an nvidia image says which CUDA runtime it ships")
            if not CUDA.fullmatch(self.cuda):
                raise ValueError(f"cuda: must be X.Y such as 12.4; got {self.cuda!r}")
        elif self.cuda is not None or self.min_driver is not None:
            raise ValueError(f"cuda and min_driver are for nvidia images, not {self.accelerator}")
        if self.accelerator == "apple" and self.kinds != ["environment"]:
            raise ValueError(
                "kinds: an apple image is an environment only (MLX runs natively on macOS, "
                "not in containers)"
            )
        both = set(self.frameworks) & set(self.packages)
        if both:
            raise ValueError(f"{', '.join(sorted(both))}: in both frameworks and packages")
        return self

    @property
    def platform(self) -> str:
        """Where it runs: linux-x86_64 or macos-arm64."""
        return PLATFORMS[self.accelerator]

    @property
    def builds_on_linux(self) -> bool:
        return self.platform == "linux-x86_64"


class Catalog(_Strict):
    version: Literal[1]
    base: Base = Field(description="the container base of every Linux image")
    stack: dict[str, str] = Field(
        min_length=1,
        description="what every image gets, pinned to the hub's side: jupyterhub, jupyterlab, "
        "ipywidgets, dask, distributed, ray",
    )
    images: dict[Annotated[str, Field(pattern=SLUG)], Image] = Field(min_length=1)

    @field_validator("stack")
    @classmethod
    def _stack(cls, v: dict[str, str]) -> dict[str, str]:
        _pins(v, "stack package")
        if "jupyterhub" not in v:
            raise ValueError("jupyterhub must be pinned (jupyterhub-singleuser starts the server)")
        return v

    @model_validator(mode="after")
    def _no_overrides(self) -> Catalog:
        for name, image in self.images.items():
            clash = (set(image.frameworks) | set(image.packages)) & set(self.stack)
            if clash:
                raise ValueError(
                    f"images.{name}: {', '.join(sorted(clash))} is pinned by stack: for every "
                    "image alike; remove it here"
                )
        return self

    def requirements(self, name: str) -> dict[str, str]:
        """Every pin of image `name`: the stack, its frameworks, its packages."""
        image = self.images[name]
        return {**self.stack, **image.frameworks, **image.packages}

    def inputs_digest(self, name: str) -> str:
        """What the lock of `name` is resolved from; a lock whose header differs is stale."""
        image = self.images[name]
        data = {"python": image.python, "platform": image.platform, **self.requirements(name)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @cached_property
    def drivers(self) -> DriverTable:
        return load_table()


def parse(data: Any, source: str = "catalog") -> Catalog:
    """Validate catalog data; CatalogError listing every problem, each naming its key path."""
    if not isinstance(data, dict):
        raise CatalogError(
            source, ["(top level): must be a mapping with version, base, stack, images"]
        )
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(source, describe(e.errors(), Catalog)) from None
    problems = [
        f"images.{name}.cuda: {problem}"
        for name, image in catalog.images.items()
        if image.cuda is not None and image.min_driver is None
        for problem in [catalog.drivers.unknown(image.cuda)]
        if problem
    ]
    if problems:
        raise CatalogError(source, problems)
    return catalog


def load(path: Path = CATALOG) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CatalogError(str(path), [f"cannot read: {e}"]) from None
    return parse(data, str(path))


@cache
def shipped() -> Catalog:
    """The installed catalog, read once per process (the hub checks every spawn against it)."""
    return load()

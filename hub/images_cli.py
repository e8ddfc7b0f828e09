"""`mlrp images list | show NAME | check [--driver VERSION] | build NAME --as KIND`.

The catalog is the installed package's (images/catalog.yaml); `--catalog FILE` reads another
(e.g. a site's own copy). Exit status as for every mlrp command: 0 ok, 2 bad input or a catalog
with problems.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from config.suggest import did_you_mean
from images.build import (
    BuildError,
    apptainer_command,
    build_container,
    build_environment,
)
from images.catalog import CATALOG, Catalog, CatalogError, load
from images.check import NO_HADOLINT, find_hadolint, problems
from images.compat import Node, check_all, host_platform, required_driver
from images.drivers import DRIVER

NVIDIA_PROC = Path("/proc/driver/nvidia/version")


class ImagesError(Exception):
    """A sentence for the admin; exit status 2."""


def discover_driver() -> tuple[str | None, str]:
    """This node's NVIDIA driver version and where it was read: NVML, else the kernel module's
    /proc file; (None, why) when there is no NVIDIA driver."""
    from spawners.gpus import read_nvml

    report = read_nvml()
    if report.driver:
        return report.driver, "NVML"
    try:
        text = NVIDIA_PROC.read_text()
    except OSError:
        return None, f"no NVIDIA driver ({report.error or 'NVML found none'})"
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    if found:
        return found.group(1), str(NVIDIA_PROC)
    return None, f"no driver version in {NVIDIA_PROC}"


def _catalog(args: argparse.Namespace) -> Catalog:
    return load(Path(args.catalog)) if args.catalog else load()


def _name(catalog: Catalog, name: str) -> str:
    if name not in catalog.images:
        raise ImagesError(
            f"There is no image {name!r} in the catalog"
            + (did_you_mean(name, catalog.images) or f"; images: {', '.join(catalog.images)}.")
        )
    return name


def cmd_list(catalog: Catalog, args: argparse.Namespace) -> int:
    rows = [("NAME", "ACCELERATOR", "CUDA", "BUILT AS", "START", "TITLE")]
    for name, image in catalog.images.items():
        rows.append(
            (
                name,
                image.accelerator,
                image.cuda or "-",
                ",".join(image.kinds),
                f"~{image.start_seconds} s",
                image.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def cmd_show(catalog: Catalog, args: argparse.Namespace) -> int:
    name = _name(catalog, args.name)
    image = catalog.images[name]
    print(f"{name}: {image.title}")
    print(f"  {' '.join(image.description.split())}")
    print(f"  accelerator: {image.accelerator} ({image.platform}), Python {image.python}")
    if image.cuda:
        print(
            f"  CUDA runtime {image.cuda}: needs NVIDIA driver {required_driver(catalog, image)}+"
        )
    print(f"  frameworks: {', '.join(f'{k} {v}' for k, v in image.frameworks.items())}")
    if image.packages:
        print(f"  packages: {', '.join(f'{k} {v}' for k, v in image.packages.items())}")
    print(f"  stack: {', '.join(f'{k} {v}' for k, v in catalog.stack.items())}")
    print(f"  built as: {', '.join(image.kinds)}; typical start ~{image.start_seconds} s")
    if {"container", "apptainer"} & set(image.kinds):
        print(f"  container base: {catalog.base.reference}")
    print(f"  inputs digest: {catalog.inputs_digest(name)}")
    return 0


def _node(args: argparse.Namespace) -> tuple[Node, str]:
    plat = args.platform or host_platform()
    if args.driver is not None:
        if args.driver.lower() == "none":
            return Node(plat, None), "--driver none"
        if not DRIVER.fullmatch(args.driver):
            raise ImagesError(
                f"--driver {args.driver!r} is not an NVIDIA driver version such as 570.124.06 "
                "(or none)."
            )
        return Node(plat, args.driver), "--driver"
    driver, source = discover_driver()
    return Node(plat, driver), source


def cmd_check(catalog: Catalog, args: argparse.Namespace) -> int:
    if not 0 <= args.gpus <= 64:
        raise ImagesError(f"--gpus must be between 0 and 64; got {args.gpus}.")
    node, source = _node(args)
    found = problems(catalog, lint=not args.no_lint)
    print(f"catalog: {len(catalog.images)} images, {len(found)} problem(s)")
    for p in found:
        print(f"  - {p}")
    if not args.no_lint and find_hadolint() is None:
        print(f"  ({NO_HADOLINT})")
    driver = f"NVIDIA driver {node.driver}" if node.driver else "no NVIDIA driver"
    top = catalog.drivers.highest_cuda(node.driver) if node.driver else None
    cuda = f", CUDA up to {top}" if top else ""
    print(f"this node: {node.platform}, {driver}{cuda} (from {source})")
    for v in check_all(catalog, node, gpus=args.gpus):
        print(f"  runs     {v.image}: {v.reason}" if v.allowed else f"  refused  {v.sentence()}")
    return 2 if found else 0


def cmd_build(catalog: Catalog, args: argparse.Namespace) -> int:
    name = _name(catalog, args.name)
    kind = "environment" if args.kind == "env" else args.kind
    try:
        if kind == "environment":
            prefix = Path(args.prefix) if args.prefix else None
            built = build_environment(catalog, name, prefix)
            print(
                f"{name}: environment at {built.where}" + ("" if built.command else " (as built)")
            )
        elif kind == "container":
            ca = args.ca_bundle or os.environ.get("PIP_CERT") or None
            built = build_container(
                catalog,
                name,
                engine=args.engine,
                base=args.base,
                ca_bundle=Path(ca) if ca else None,
            )
            print(f"{name}: container image {built.where}")
        else:
            sif = Path(args.prefix or f"{name}.sif")
            built = apptainer_command(catalog, name, sif)
            print(
                "Apptainer is not installed on this machine (it is not packaged for Debian 12); "
                "on a machine with Apptainer, run:"
            )
            print("  " + " ".join(built.command))
    except BuildError as e:
        raise ImagesError(str(e)) from None
    return 0


COMMANDS: dict[str, Any] = {
    "list": cmd_list,
    "show": cmd_show,
    "check": cmd_check,
    "build": cmd_build,
}


def cmd_images(args: argparse.Namespace) -> int:
    try:
        catalog = _catalog(args)
        return int(COMMANDS[args.images_command](catalog, args))
    except (CatalogError, ImagesError) as e:
        print(f"mlrp: {e}", file=sys.stderr)
        return 2


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    images = sub.add_parser("images", help="the curated images: list, show, check, build")
    images_sub = images.add_subparsers(
        dest="images_command", required=True, parser_class=parser_class
    )
    listing = images_sub.add_parser("list", help="the catalog's images")
    show = images_sub.add_parser("show", help="one image: frameworks, CUDA, driver, base")
    show.add_argument("name")
    check = images_sub.add_parser(
        "check", help="validate the catalog; which images this node (or --driver) can run"
    )
    check.add_argument("--driver", help="judge for this NVIDIA driver (or none) instead")
    check.add_argument(
        "--platform",
        choices=["linux-x86_64", "linux-aarch64", "macos-arm64"],
        help="judge for this platform instead of this machine's",
    )
    check.add_argument("--gpus", type=int, default=1, help="GPUs a session asks for (default 1)")
    check.add_argument("--no-lint", action="store_true", help="skip hadolint")
    build = images_sub.add_parser("build", help="build an image as environment or container")
    build.add_argument("name")
    build.add_argument(
        "--as", dest="kind", required=True, choices=["environment", "env", "container", "apptainer"]
    )
    build.add_argument("--prefix", help="environment: where (default /opt/mlrp/images/NAME)")
    build.add_argument("--engine", default="podman", help="container: podman or docker")
    build.add_argument("--base", help="container: build FROM this local image instead")
    build.add_argument(
        "--ca-bundle", help="container: CA certificates pip trusts in the build (default $PIP_CERT)"
    )
    for p in (listing, show, check, build):
        p.add_argument("--catalog", default=os.environ.get("MLRP_CATALOG"), help=f"({CATALOG})")
    images.set_defaults(func=cmd_images)

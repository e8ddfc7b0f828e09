"""Placement backends: where a profile's server runs. One module per backend.

Backends are found by name through the ``mlrp.backends`` entry point group, declared in
pyproject.toml (``local = "spawners.backends.local:LocalBackend"``); a site's own backend is a
package declaring one more. That table is the only list of backends: the YAML schema's choices
for ``backend:`` and the hub's loader both read it. Run from a checkout that is not installed
(the test suite), the same table is read from the checkout's pyproject.toml.
"""

from __future__ import annotations

import importlib
import tomllib
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from spawners.backends.base import (
    Backend,
    Capacity,
    Emit,
    FormField,
    NoOptions,
    PlacedServer,
    Poll,
    PollStatus,
)

GROUP = "mlrp.backends"
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


class UnknownBackend(LookupError):
    """No backend of that name is installed; `str()` is a sentence for the admin."""


def _checkout_entry_points() -> dict[str, str]:
    """The entry points of the checkout this module runs from, if it is one (not installed)."""
    try:
        project = tomllib.loads(_CHECKOUT_PYPROJECT.read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return {}
    if project.get("name") != "mlrp":
        return {}
    return dict(project.get("entry-points", {}).get(GROUP, {}))


@cache
def available() -> dict[str, str]:
    """Backend name → "module:Class", from installed entry points and the checkout's own."""
    found = _checkout_entry_points()
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def backend_class(name: str) -> type[Backend]:
    target = available().get(name)
    if target is None:
        known = ", ".join(sorted(available())) or "none"
        raise UnknownBackend(f"there is no placement backend {name!r}; installed backends: {known}")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UnknownBackend(f"entry point {name} = {target} is not a placement backend class")
    return cls


__all__ = [
    "GROUP",
    "Backend",
    "Capacity",
    "Emit",
    "FormField",
    "NoOptions",
    "PlacedServer",
    "Poll",
    "PollStatus",
    "UnknownBackend",
    "available",
    "backend_class",
]

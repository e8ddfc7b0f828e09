"""Placement backends: where a profile's server runs. One module per backend.

`BACKENDS` maps the YAML's `backend:` value to a class. Slurm, containers and cloud nodes arrive as
new modules implementing `PlacementBackend` (base.py) and one line here.
"""

from spawners.backends.base import Capacity, PlacementBackend
from spawners.backends.local import LocalBackend

BACKENDS: dict[str, type[PlacementBackend]] = {"local": LocalBackend}

__all__ = ["BACKENDS", "Capacity", "PlacementBackend"]

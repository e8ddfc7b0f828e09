"""The annotated example deployment (`mlrp config example`).

It is package data (pyproject.toml: ``config = ["examples/*.yaml"]``), so an installed mlrp
carries it, and messages can point to it wherever mlrp is installed, unlike a path in a clone.
"""

from __future__ import annotations

from importlib.resources import files

SINGLE_NODE = "examples/single-node.yaml"


def example_text() -> str:
    """The example YAML: every key, with its default unless noted, and a comment."""
    return files("config").joinpath(SINGLE_NODE).read_text(encoding="utf-8")

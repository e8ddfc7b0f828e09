"""Did-you-mean for the deployment YAML: the nearest known key or value to a misspelt one.

The known keys at a place in the file are read from the schema itself (`model_at` walks the
pydantic models along an error's location), so a key added to a section is suggested without
a list kept here.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

# difflib's ratio: 0.6 finds memmory→memory, gpu→gpus, idle_timout→idle_timeout, while
# "cpu" is not offered for "image".
CUTOFF = 0.6


def nearest(word: str, known: Iterable[str]) -> str | None:
    """The known word closest to `word`, or None when none is close enough to be a typo."""
    candidates = [k for k in known if k != word]
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=CUTOFF)
    if not found:  # capitals: "INFO" for "info" scores low, but is an obvious fix
        lowered = {k.lower(): k for k in candidates}
        found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=CUTOFF)
        found = [lowered[f] for f in found]
    return found[0] if found else None


def did_you_mean(word: object, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" to append to a message, or "" when there is nothing to offer."""
    if not isinstance(word, str):
        return ""
    found = nearest(word, known)
    return f"; did you mean {found!r}?" if found else ""


def _models_in(annotation: Any) -> list[Any]:
    """The types an annotation may hold: `X | None` and `Annotated[X, ...]` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in _models_in(arg)]
    return [annotation]


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one step into a value: a list's item, a mapping's value, a model's field."""
    for candidate in _models_in(annotation):
        origin = get_origin(candidate)
        if isinstance(part, int) and origin is list:
            return get_args(candidate)[0]
        if isinstance(part, str) and origin is dict:
            return get_args(candidate)[1]
        if (
            isinstance(part, str)
            and isinstance(candidate, type)
            and issubclass(candidate, BaseModel)
        ):
            field = candidate.model_fields.get(part)
            if field is not None:
                return field.annotation
    return None


def annotation_at(root: type[BaseModel], loc: Iterable[int | str]) -> Any:
    """The schema's annotation for the value at `loc` (an error's location), or None."""
    annotation: Any = root
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return annotation


def model_at(root: type[BaseModel], loc: Iterable[int | str]) -> type[BaseModel] | None:
    """The model (section) whose keys are allowed at `loc`, or None."""
    for candidate in _models_in(annotation_at(root, loc)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def choices_at(root: type[BaseModel], loc: Iterable[int | str]) -> list[str]:
    """The allowed words of an enum-like (Literal) key at `loc`; empty for any other key."""
    return [
        str(value)
        for candidate in _models_in(annotation_at(root, loc))
        if get_origin(candidate) is Literal
        for value in get_args(candidate)
    ]

"""Every problem of a deployment file in one run, not one stage per run.

pydantic reports all field errors of a file at once, but runs a model's own checks (a
profile naming a missing group, TLS without a certificate) only once every field of that model
is valid, and the node checks need a whole model. So `collect` validates, notes the problems,
puts a stand-in in place of each broken part (usually: drops it, so its default applies) and
validates again, until no new problem appears. Stand-ins are chosen so that no check can fail
*because* of one: they are listed in `StandIns`, which the cross-references read, and a value a
section's own check rests on is replaced by one that check accepts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from config.schema import STAND_INS, TOP_LEVEL_NOT_A_MAPPING, MLRPConfig, StandIns, describe

# Each round can only reach one level deeper (section fields → a section's own check → the
# cross-references); the bound only guards against a stand-in that keeps failing.
MAX_ROUNDS = 8
# hub's own check (no passwords in clear) rests on these; a broken one is replaced by the safe
# loopback setting, so the check neither runs on a guess nor blames the stand-in.
HUB_CLEAR_TEXT_KEYS = ("ip", "tls", "behind_tls_proxy")

Loc = tuple[int | str, ...]


@dataclass
class Collected:
    """`problems`: every problem found, each naming its key path (none: `config` is the valid
    file). `config`: when there are problems, the file with stand-ins for its broken parts, for
    the checks that need a whole model (GPUs, node limits) to run on the rest; None when the
    file could not be made whole. `replaced`: the key paths that were given a stand-in."""

    config: MLRPConfig | None
    problems: list[str] = field(default_factory=list)
    replaced: set[Loc] = field(default_factory=set)

    def rests_on_stand_in(self, *prefix: int | str) -> bool:
        """Whether anything at or under `prefix` was replaced (e.g. "gpus": the inventory
        would be judged on a stand-in)."""
        return any(loc[: len(prefix)] == prefix for loc in self.replaced)

    def unnamed(self) -> set[int]:
        """Profiles whose slug is a stand-in: messages name them by index only."""
        return {
            loc[1]
            for loc in self.replaced
            if loc[0] == "profiles" and isinstance(loc[1], int) and loc[2:] in ((), ("slug",))
        }


def _names(section: Any) -> frozenset[str]:
    """The names a file defines under images: or groups:, whatever their settings."""
    if not isinstance(section, dict):
        return frozenset()
    return frozenset(k for k in section if isinstance(k, str))


def _drop(data: dict[str, Any], loc: Loc) -> None:
    """Remove the value at `loc`; nothing to do when a stand-in already replaced what held it
    (an unknown key inside an image whose settings were dropped)."""
    parent: Any = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(parent, dict):
        parent.pop(loc[-1], None)


def _stand_in(data: dict[str, Any], loc: Loc, kind: str, replaced: set[Loc]) -> bool:
    """Put a stand-in where the error at `loc` is; False when none makes sense (nothing more
    can be learnt from the file, then)."""
    if kind == "extra_forbidden":
        _drop(data, loc)  # an unknown key replaces nothing: no stand-in to record
        return True
    if loc[-1] == "[key]":  # a name under images:/groups: that is not allowed
        _drop(data, loc[:-1])
        replaced.add(loc[:-1])
        return True
    if loc[0] == "profiles":
        return _profile_stand_in(data, loc, replaced)
    if loc[0] == "hub" and len(loc) >= 2 and loc[1] in HUB_CLEAR_TEXT_KEYS:
        hub = data["hub"]
        for key in HUB_CLEAR_TEXT_KEYS:
            hub.pop(key, None)
        hub["ip"] = "127.0.0.1"
        replaced.add(loc[:2])
        return True
    if kind == "missing":  # every other key has a default
        return False
    target = loc[:2]
    _drop(data, target)
    replaced.add(target)
    return True


def _profile_stand_in(data: dict[str, Any], loc: Loc, replaced: set[Loc]) -> bool:
    if len(loc) < 2 or not isinstance(loc[1], int):
        return False  # profiles: missing, empty or not a list; there is nothing to go on
    i = loc[1]
    placeholder = f"no-slug-{i}"  # a valid slug: only the cross-references read it
    if len(loc) == 2:  # the entry is not a mapping
        data["profiles"][i] = {"slug": placeholder, "name": "?"}
        replaced.add(loc)
        return True
    target = loc[:3]
    profile = data["profiles"][i]
    if target[2] == "slug":
        profile["slug"] = placeholder
    elif target[2] == "name":
        profile["name"] = "?"
    else:
        profile.pop(target[2], None)  # its default; gpus: 0, so GPUChoices' check rests on nothing
    replaced.add(target)
    return True


def collect(data: Any) -> Collected:
    """Validate a deployment's data, collecting every problem rather than the first stage's."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return Collected(None, [TOP_LEVEL_NOT_A_MAPPING])
    data = copy.deepcopy(data)
    found = Collected(None)
    images, groups = _names(data.get("images")), _names(data.get("groups"))
    cross_checked = False
    for _ in range(MAX_ROUNDS):
        lenient = StandIns(frozenset(found.replaced), images, groups, cross_checked)
        try:
            found.config = MLRPConfig.model_validate(data, context={STAND_INS: lenient})
            return found
        except ValidationError as err:
            errors = err.errors(include_url=False)
        new = [p for p in describe(errors) if p not in found.problems]
        if not new:
            return found
        found.problems += new
        for e in errors:
            loc = tuple(e["loc"])
            if not loc:  # the cross-references: reported; the next round builds the model
                cross_checked = True
                continue
            if not _stand_in(data, loc, str(e["type"]), found.replaced):
                return found
    return found

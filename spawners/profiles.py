"""The backend-neutral profile model and validation of what a user asks for.

A profile is what the spawn form offers: an image, a placement backend and resources, visible to
some groups. `parse_request` turns untrusted input (form fields or an API body) into a
`SpawnRequest` or raises `OptionsError` whose text is safe to show the user. Nothing a user types
is used other than to pick among values the admin configured.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_ECHO = 40


@dataclass(frozen=True)
class Profile:
    slug: str
    name: str
    backend: str
    image: str
    image_env: str
    description: str = ""
    gpu_choices: tuple[int, ...] = (0,)
    default_gpus: int = 0
    cpus: float | None = None
    memory_bytes: int | None = None
    idle_timeout: int | None = None
    groups: tuple[str, ...] = field(default_factory=tuple)
    max_processes: int | None = None  # tasks (processes and threads) at once; None = no limit
    # The backend's own options (`placement:` in the YAML), validated by its ProfileOptions;
    # kept as sorted items so that a Profile stays hashable.
    placement: tuple[tuple[str, Any], ...] = ()
    apptainer: str = ""  # an Apptainer image (.sif) the server runs in (Slurm), or none
    catalog: str = ""  # the curated image (images/catalog.yaml) image_env was built as, or none

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.placement)

    def visible_to(self, groups: Iterable[str], admin: bool = False) -> bool:
        return admin or not self.groups or bool(set(self.groups) & set(groups))

    @property
    def max_gpus(self) -> int:
        return max(self.gpu_choices)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        """From the traitlets form (render.py writes these dicts from the YAML)."""
        choices = tuple(int(x) for x in d.get("gpu_choices", (0,)))
        return cls(
            slug=d["slug"],
            name=d["name"],
            backend=d.get("backend", "local"),
            image=d.get("image", "default"),
            image_env=d["image_env"],
            description=d.get("description", ""),
            gpu_choices=choices,
            default_gpus=int(d.get("default_gpus", choices[0])),
            cpus=d.get("cpus"),
            memory_bytes=d.get("memory_bytes"),
            idle_timeout=d.get("idle_timeout"),
            groups=tuple(d.get("groups", ())),
            max_processes=d.get("max_processes"),
            placement=tuple(sorted(dict(d.get("placement") or {}).items())),
            apptainer=d.get("apptainer") or "",
            catalog=d.get("catalog") or "",
        )


@dataclass(frozen=True)
class SpawnRequest:
    profile: Profile
    gpus: int
    # The person's choices among what the profile's backend offers (Slurm: partition, walltime,
    # CPUs, memory), checked by that backend (`Backend.parse_choices`); sorted items.
    choices: tuple[tuple[str, Any], ...] = ()

    @property
    def chosen(self) -> dict[str, Any]:
        return dict(self.choices)

    def as_user_options(self) -> dict[str, Any]:
        return {"profile": self.profile.slug, "gpus": self.gpus, **self.chosen}


# Checks the options beyond profile and gpus for the chosen profile (its backend's choices):
# their normalised values, or OptionsError.
Choose = Callable[[Profile, Mapping[str, Any]], Mapping[str, Any]]


# jupyter-resource-usage (in the default image) shows CPU use only when asked. Its CPU warning
# compares a percentage (100 per busy CPU) with CPU_LIMIT, a CPU count, so it would flash red
# at 1 % of one CPU: it is turned off, and the bar still shows use against the limit.
DISPLAY_ARGS = (
    "--ResourceUseDisplay.track_cpu_percent=True",
    "--ResourceUseDisplay.cpu_warning_threshold=0",
)


def echo(value: Any) -> str:
    """`value` as a user typed it, shortened, for a sentence."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def idle_args(idle_timeout: int | None) -> list[str]:
    """jupyterhub-singleuser options that stop an idle server (and its idle kernels) after
    `idle_timeout` seconds, on every backend; none without a timeout."""
    if not idle_timeout:
        return []
    t = idle_timeout
    return [
        f"--ServerApp.shutdown_no_activity_timeout={t}",
        f"--MappingKernelManager.cull_idle_timeout={t}",
        f"--MappingKernelManager.cull_interval={min(300, max(30, t // 4))}",
        "--MappingKernelManager.cull_connected=True",
    ]


class OptionsError(ValueError):
    """Bad spawn options. `str(e)` is a sentence for the user."""


def _single(values: list[str], key: str) -> str:
    """A form field arrives as a list of strings; exactly one is allowed."""
    if len(values) != 1:
        raise OptionsError(f"Send exactly one value for {key!r}.")
    return values[0]


def _form_int(text: str, key: str) -> int:
    """A whole number typed into (or picked from) the form."""
    if re.fullmatch(r"\s*-?[0-9]{1,5}\s*", text, flags=re.ASCII):
        return int(text)
    raise OptionsError(f"{key} must be a whole number, not {echo(text)}.")


def form_to_options(
    form: Mapping[str, list[str]],
    slugs: Iterable[str],
    extra: Mapping[str, Mapping[str, bool]] | None = None,
) -> dict[str, Any]:
    """The spawn form's fields → user_options of the same types an API body must have.

    Each visible profile with a GPU choice has a select named gpus-<slug>; a browser sends all of
    them, and only the chosen profile's counts. `extra` names, per profile slug, the fields its
    backend adds (<name>-<slug>; name → whether it is a whole number, else text). Any other
    field is refused.
    """
    fields = {k: v for k, v in form.items() if k != "_xsrf"}
    options: dict[str, Any] = {"profile": _single(fields.pop("profile", [""]), "profile")}
    for slug in slugs:
        names = {"gpus": True, **dict((extra or {}).get(slug, {}))}
        for name, numeric in names.items():
            values = fields.pop(f"{name}-{slug}", None)
            if values is None or slug != options["profile"]:
                continue
            value = _single(values, name)
            options[name] = _form_int(value, name) if numeric else value
    if fields:
        raise OptionsError(
            f"Unexpected field(s) in the form: {echo(sorted(fields))}. "
            "Reload the page and submit the form as shown."
        )
    return options


def unknown_options(extra: Mapping[str, Any], allowed: Iterable[str] = ()) -> OptionsError:
    quoted = [f"'{n}'" for n in ("profile", "gpus", *allowed)]
    names = ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return OptionsError(f"Unknown option(s) {echo(sorted(extra))}; allowed are {names}.")


def no_choices(profile: Profile, extra: Mapping[str, Any]) -> Mapping[str, Any]:
    """A backend that offers nothing beyond profile and gpus."""
    if extra:
        raise unknown_options(extra)
    return {}


def parse_request(
    options: Mapping[str, Any] | None,
    visible: list[Profile],
    choose: Choose = no_choices,
    allowed: Iterable[str] = (),
) -> SpawnRequest:
    """Validate user_options (an API body, or what form_to_options made) against the profiles
    this user may see. Types are strict, as JSON gives them: `profile` a string, `gpus` a number.
    Any other option goes to `choose`, the chosen profile's backend's check; one that no
    visible profile's backend offers (`allowed`) is refused first.
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise OptionsError('Spawn options must be an object such as {"profile": "cpu"}.')
    extra = {k: v for k, v in options.items() if k not in ("profile", "gpus")}
    allowed = tuple(allowed)
    unknown = {k: v for k, v in extra.items() if k not in allowed}
    if unknown:  # refused before anything else, whatever the profile
        raise unknown_options(unknown, allowed)
    if not visible:
        raise OptionsError("No profile is available to you. Ask your administrator for access.")
    by_slug = {p.slug: p for p in visible}
    names = ", ".join(by_slug)
    slug = options.get("profile", visible[0].slug if len(visible) == 1 else "")
    if not isinstance(slug, str):
        raise OptionsError(
            f"profile must be a string naming one of: {names}; not {echo(slug)}. "
            'Send e.g. {"profile": "' + visible[0].slug + '"}.'
        )
    if slug not in by_slug:
        if not slug:
            raise OptionsError(f"Pick a profile: one of {names}.")
        raise OptionsError(f"There is no profile {echo(slug)} for you. Pick one of: {names}.")
    profile = by_slug[slug]
    gpus = options.get("gpus", profile.default_gpus)
    if isinstance(gpus, bool) or not isinstance(gpus, int):
        raise OptionsError(f"gpus must be a whole number such as 1, not {echo(gpus)}.")
    if gpus not in profile.gpu_choices:
        allowed = ", ".join(str(c) for c in profile.gpu_choices)
        raise OptionsError(
            f"Profile {profile.name!r} offers {allowed} GPU(s); you asked for {echo(gpus)}. "
            "Pick one of those."
        )
    choices = choose(profile, extra)
    return SpawnRequest(profile=profile, gpus=gpus, choices=tuple(sorted(choices.items())))

"""The one YAML file a deployment is configured with, as a validated model.

`load(path)` turns YAML into `MLRPConfig` or raises `ConfigError` whose lines each name the key
path (``profiles[1].gpus``) and what is allowed. Nothing here touches JupyterHub: `render.py` maps
the model onto traitlets. Unknown keys are errors everywhere (a typo must not be silently ignored),
and come with the nearest known key. Every problem of a file is reported in one go: `parse` lets
`config.collect` put stand-ins in place of broken parts and validate again, so the checks that
pydantic runs only on valid sections (the cross-references below) still speak.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.suggest import choices_at, did_you_mean, model_at
from images.drivers import DRIVER
from spawners.accounts import NOBODY_UID, UID_MIN, UNIX_NAME, AccountPolicy, find_account
from spawners.backends import available, backend_class
from spawners.cgroups import memory_size

# Enough for JupyterLab with a dozen kernels each running one thread per core of a 64-core node.
DEFAULT_MAX_PROCESSES = 4096
SLUG_RE = r"^[a-z0-9][a-z0-9-]{0,39}$"
GROUP_RE = r"^[a-z0-9][a-z0-9_-]{0,39}$"
USER_RE = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_ANNOUNCEMENT = 500  # characters of hub.announcement

# Defaults follow where this MLRP is installed (hub/bootstrap.sh: $MLRP_PREFIX/venv and
# $MLRP_PREFIX/node), not a fixed /opt/mlrp: the environment the hub runs from is also the
# default image, and the proxy sits beside it.
PLATFORM_ENV = Path(sys.prefix)
DEFAULT_PROXY = PLATFORM_ENV.parent / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
# Installed with the package (pyproject.toml, package-data), so it exists wherever mlrp does.
EXAMPLE_HINT = "Every key, with a comment: `mlrp config example`."


class ConfigError(Exception):
    """A deployment file that cannot be used; `str()` is the message for the admin."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is not a valid MLRP configuration:\n{lines}\n{EXAMPLE_HINT}")


# The validation-context key under which `config.collect` passes its `StandIns`.
STAND_INS = "mlrp_stand_ins"


@dataclass(frozen=True)
class StandIns:
    """What `config.collect` put in place of broken parts of a file so that the rest could still
    be validated. The cross-checks skip whatever rests on a stand-in instead of blaming it (a
    profile whose slug was missing is not "used by two profiles"; an image whose settings are
    wrong is still an image the file defines). Without it (a normal parse) nothing is skipped."""

    replaced: frozenset[tuple[int | str, ...]] = frozenset()  # key paths given a stand-in
    images: frozenset[str] = frozenset()  # names the file defines under images:, broken ones too
    groups: frozenset[str] = frozenset()  # the same under groups:
    cross_checked: bool = False  # the cross-references were reported already in this run

    def covers(self, *loc: int | str) -> bool:
        """Whether the value at `loc` is, or lies inside, a stand-in."""
        return any(loc[:n] in self.replaced for n in range(1, len(loc) + 1))


def stand_ins(info: ValidationInfo) -> StandIns:
    found = (info.context or {}).get(STAND_INS) if isinstance(info.context, dict) else None
    return found if isinstance(found, StandIns) else StandIns()


def parse_memory(value: str | int) -> int:
    """'4G', '512M', '1.5GiB' or a byte count → bytes."""
    if isinstance(value, bool):
        raise ValueError("memory must be a size such as 4G or 512M, not true/false")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("memory must be positive")
        return value
    try:
        size = memory_size(str(value))
    except ValueError:
        raise ValueError(f"memory must be a size such as 4G or 512M; got {value!r}") from None
    if size <= 0:
        raise ValueError("memory must be positive")
    return size


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """YAML's yes/no/on/off are booleans; pydantic would quietly read them as 1 and 0."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and field.annotation is not bool:
            raise ValueError(f"true/false is not allowed here; got {v}")
        return v


LOOPBACK = ("localhost", "::1")
# An NVIDIA driver version (570.124.06, 570.26), as images/drivers.py reads it, or "none".
DRIVER_PATTERN = rf"^(none|{DRIVER.pattern})$"


def is_loopback(ip: str) -> bool:
    return ip in LOOPBACK or ip.startswith("127.")


class TLSSection(_Strict):
    cert: Path | None = Field(None, description="PEM certificate (chain) for the hub's address.")
    key: Path | None = Field(None, description="Its PEM private key.")
    self_signed: bool = Field(
        False,
        description="Make (once) and use a self-signed certificate in <data_dir>/tls/: for a "
        "lab network; browsers warn until people accept it.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> TLSSection:
        given = (self.cert is not None, self.key is not None)
        if given[0] != given[1]:
            raise ValueError("give both cert and key (PEM files), or neither")
        if all(given) == self.self_signed:
            raise ValueError(
                "set either cert and key (your certificate) or self_signed: true, not both"
                if self.self_signed
                else "set cert and key (PEM files), or self_signed: true"
            )
        for path in (self.cert, self.key):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such file")
        return self


class HubSection(_Strict):
    ip: str = Field("127.0.0.1", description="Address the proxy listens on for browsers.")
    port: int = Field(8000, ge=1, le=65535, description="Port the proxy listens on.")
    hub_port: int = Field(8081, ge=1, le=65535, description="Hub API port (loopback only).")
    proxy_api_port: int = Field(8001, ge=1, le=65535, description="Proxy REST API (loopback).")
    data_dir: Path = Field(Path("/var/lib/mlrp"), description="SQLite, logs, secrets.")
    proxy_command: list[str] = Field(
        default_factory=lambda: [str(DEFAULT_PROXY)],
        description="configurable-http-proxy command (installed by hub/bootstrap.sh beside the "
        "environment MLRP runs from).",
    )
    poll_interval: int = Field(
        10, ge=1, le=3600, description="Seconds between checks that servers are alive."
    )
    start_timeout: int = Field(120, ge=5, le=3600)
    reconcile_interval: int = Field(
        60,
        ge=5,
        le=3600,
        description="Seconds between the hub's checks that what placements hold (GPU leases, "
        "jobs, processes) belongs to a server it runs; the rest is cleaned and logged.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tls: TLSSection | None = Field(None, description="HTTPS on the hub's address.")
    behind_tls_proxy: bool = Field(
        False,
        description="A TLS-terminating proxy (nginx, Caddy…) is in front: plain HTTP beyond "
        "loopback is then allowed, as the proxy is what browsers reach.",
    )
    announcement: str = Field(
        "",
        description="One line of plain text shown on the login, home and spawn pages (e.g. a "
        f"maintenance window), at most {MAX_ANNOUNCEMENT} characters; HTML is shown as text.",
    )

    @field_validator("announcement", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if v is None:  # `announcement:` with nothing after it
            return ""
        if not isinstance(v, str):
            example = '"Maintenance Saturday 9-12"'
            raise ValueError(f"must be text, in quotes if in doubt, such as {example}; got {v}")
        return v

    @field_validator("announcement")
    @classmethod
    def _one_short_line(cls, v: str) -> str:
        v = v.strip()
        if any(unicodedata.category(ch) == "Cc" for ch in v):
            raise ValueError("must be one line of plain text, without line breaks or tabs")
        if len(v) > MAX_ANNOUNCEMENT:
            raise ValueError(
                f"is {len(v)} characters long; keep it to {MAX_ANNOUNCEMENT} or fewer, as it "
                "is shown as one line on every page"
            )
        return v

    @model_validator(mode="after")
    def _no_passwords_in_clear(self) -> HubSection:
        if not is_loopback(self.ip) and self.tls is None and not self.behind_tls_proxy:
            shown = self.ip or "all addresses"
            raise ValueError(
                f"ip: listening on {shown} over plain HTTP would send passwords across the "
                "network in clear. Set hub.tls (cert and key, or self_signed: true), or "
                "hub.behind_tls_proxy: true if a TLS proxy is in front, or keep ip: 127.0.0.1."
            )
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def public_url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{self.scheme}://{host}:{self.port}/"


class LoginSection(_Strict):
    kind: Literal["native"] = Field(
        "native",
        description="native: accounts with passwords kept (scrypt-hashed) in the MLRP database.",
    )
    admin_users: list[Annotated[str, Field(pattern=USER_RE)]] = Field(
        default_factory=lambda: ["admin"]
    )
    min_password_length: int = Field(10, ge=8, le=128)
    failures_before_delay: int = Field(
        5,
        ge=1,
        le=100,
        description="Wrong passwords a name may have before each further try waits (1 s, "
        "doubling); an address gets four times as many.",
    )
    max_login_delay: int = Field(
        900, ge=1, le=86400, description="Longest wait, in seconds, after wrong passwords."
    )


class AccountsSection(_Strict):
    mode: Literal["system", "existing", "single-user"] = Field(
        "system",
        description=(
            "system: one Unix account per hub user, created on first spawn (hub runs as root). "
            "existing: the accounts exist already (a cluster's LDAP/SSSD): each hub user runs as "
            "the account of their name, or the one accounts.map names; none is ever created, "
            "and a person without one cannot start a server. single-user: every server runs "
            "as the user who started the hub; for one developer on a laptop only."
        ),
    )
    prefix: str = Field("mlrp-", pattern=r"^[a-z][a-z0-9]{0,7}-$")
    home_root: Path = Path("/home")
    umask: str = Field(
        "077",
        pattern=r"^0?[0-7]{3}$",
        description="umask of people's servers and what they start (octal, e.g. 077 or 027); "
        "077 keeps every file a person creates private to them.",
    )
    map: dict[str, str] = Field(
        default_factory=dict,
        description="mode existing only: hub user → their existing Unix account, for people "
        "whose Unix name differs from their hub name (e.g. {alice: asmith}); everyone not "
        f"listed runs as the account of their own name. Never root or a system account (uid "
        f"below {UID_MIN}).",
    )

    @field_validator("umask", mode="before")
    @classmethod
    def _umask_is_text(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            # YAML 1.1 reads 077 as octal (63) and 77 as decimal: a number is never safe here.
            raise ValueError(
                f'write the umask in quotes, e.g. umask: "077" (unquoted, YAML read the number '
                f"{v!r})"
            )
        return v

    @field_validator("map", mode="before")
    @classmethod
    def _map(cls, v: Any) -> Any:
        if v is None:  # `map:` with nothing after it
            return {}
        if not isinstance(v, dict):
            raise ValueError(
                f"must be a mapping of hub user to Unix account, such as {{alice: asmith}}; got "
                f"{v!r}"
            )
        problems = [p for hub, unix in v.items() if (p := _map_problem(hub, unix))]
        targets: dict[str, list[str]] = {}
        for hub, unix in v.items():
            if isinstance(unix, str):
                targets.setdefault(unix, []).append(str(hub))
        for unix, hubs in targets.items():
            if len(hubs) > 1:
                problems.append(
                    f"{', '.join(hubs)} map to the same Unix account {unix}; an account belongs "
                    "to one person"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _map_needs_existing(self) -> AccountsSection:
        if "map" in self.model_fields_set and self.map and self.mode != "existing":
            raise ValueError(
                f"map: only used with mode: existing (accounts that exist already); with mode: "
                f"{self.mode} accounts are {MADE_BY_MODE[self.mode]}. Set mode: existing or "
                "remove map."
            )
        return self

    def policy(self) -> AccountPolicy:
        """What spawners and `mlrp` act on (spawners.accounts)."""
        return AccountPolicy(self.mode, self.prefix, self.home_root, self.map)


MADE_BY_MODE = {
    "system": "created by MLRP as <prefix><hub name>",
    "single-user": "not used (every server runs as the hub's own account)",
}


def _map_problem(hub: Any, unix: Any) -> str | None:
    """What is wrong with one `accounts.map` entry, or None."""
    if not isinstance(hub, str) or not re.fullmatch(USER_RE, hub):
        return (
            f"{hub!r} is not a hub user name (1-64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit)"
        )
    if not isinstance(unix, str):
        return f"{hub}: the Unix account must be a name, such as asmith; got {unix!r}"
    if not UNIX_NAME.fullmatch(unix):
        return (
            f"{hub}: {unix!r} is not a Unix account name MLRP can use (1-32 of a-z, 0-9, '_' "
            "and '-', starting with a letter or '_')"
        )
    found = find_account(unix)
    if unix == "root" or (found is not None and found.uid == 0):
        return f"{hub}: {unix} is root (uid 0); a hub user never runs as root"
    if found is not None and (found.uid < UID_MIN or found.uid == NOBODY_UID):
        return (
            f"{hub}: {unix} is a system account (uid {found.uid}; people's accounts have uids "
            f"from {UID_MIN}); a hub user never runs as one"
        )
    return None


class GPUSection(_Strict):
    source: Literal["auto", "nvml", "config"] = Field(
        "auto",
        description="auto: NVML when the driver is present, else `devices`. nvml: require it.",
    )
    devices: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]] = Field(
        default_factory=list,
        description="GPU indices or UUIDs, used when NVML is absent or source is config.",
    )
    driver: str | None = Field(
        None,
        pattern=DRIVER_PATTERN,
        description="This node's NVIDIA driver (e.g. 570.124.06, or none), for the check that a "
        "profile's catalog image can run here, when NVML cannot tell (GPUs under devices).",
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _ints_as_strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        return v

    @field_validator("devices")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each GPU may be listed only once")
        return v


class ImageSection(_Strict):
    description: str = ""
    catalog: str | None = Field(
        None,
        description="The curated image (mlrp images list) this environment was built as: "
        "checked against the node's driver and platform before every spawn, shown in the form.",
    )
    env: Path = Field(
        PLATFORM_ENV,
        description="Python environment (prefix) with jupyterhub-singleuser and jupyterlab; "
        "default: the environment MLRP itself runs from.",
    )
    apptainer: Path | None = Field(
        None,
        description="Slurm profiles only: run the server inside this Apptainer image (a .sif "
        "on the filesystem the nodes share) with `apptainer exec --nv`; `env` is then the "
        "environment's path inside the image. The person's home is bound into it.",
    )

    @field_validator("catalog")
    @classmethod
    def _in_catalog(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from images.catalog import CatalogError, shipped

        try:
            names = list(shipped().images)
        except CatalogError as e:
            raise ValueError(str(e)) from None
        if v not in names:
            raise ValueError(
                f"no image {v!r} in the catalog (mlrp images list)"
                + (did_you_mean(v, names) or f"; images: {', '.join(names)}")
            )
        return v

    @field_validator("apptainer")
    @classmethod
    def _sif_path(cls, v: Path | None) -> Path | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9._/+@-]*", str(v)):
            raise ValueError(
                f"must be an absolute path of letters, digits and . _ / + @ -; got {str(v)!r}"
            )
        return v


class GPUChoices(_Strict):
    choices: list[Annotated[int, Field(ge=0, le=64)]] = Field(min_length=1)
    default: int | None = None

    @model_validator(mode="after")
    def _default_in_choices(self) -> GPUChoices:
        if self.default is not None and self.default not in self.choices:
            raise ValueError(f"default {self.default} is not one of choices {self.choices}")
        return self


class ProfileSection(_Strict):
    slug: str = Field(pattern=SLUG_RE)
    name: str = Field(min_length=1, max_length=80)
    description: str = Field("", max_length=400)
    backend: str = Field(
        "local",
        description="Where this profile's servers run: a placement backend installed through "
        "the mlrp.backends entry points (local: this node).",
    )
    placement: dict[str, Any] = Field(
        default_factory=dict,
        description="The backend's own options for this profile (for slurm: partition, "
        "walltime…), checked by that backend.",
    )
    image: str = "default"
    gpus: int | GPUChoices = 0
    cpus: float | None = Field(None, gt=0, le=512)
    memory: str | int | None = None
    idle_timeout: int | None = Field(
        None, ge=60, description="Seconds of inactivity before this profile's server stops."
    )
    groups: list[str] = Field(
        default_factory=list, description="Groups that may see this profile; empty = everyone."
    )
    max_processes: int = Field(
        DEFAULT_MAX_PROCESSES,
        ge=16,
        le=4_194_304,
        description="Processes and threads a server may have at once (cgroup pids limit): "
        "a fork bomb stops there instead of taking the node down.",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return GPUChoices.model_validate(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 64:
            raise ValueError(
                f"must be a whole number of GPUs from 0 to 64, or a mapping such as "
                f"{{choices: [1, 2], default: 1}}; got {v!r}"
            )
        return v

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        names = available()
        if v not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ValueError(
                f"there is no placement backend {v!r}; installed: {known}" + did_you_mean(v, names)
            )
        return v

    @field_validator("placement", mode="before")
    @classmethod
    def _placement_mapping(cls, v: Any) -> Any:
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"must be a mapping of the backend's options; got {v!r:.60}")
        return v

    @field_validator("placement")
    @classmethod
    def _placement_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked by the profile's backend (its ProfileOptions model), and normalised."""
        name = info.data.get("backend")
        if name is None:
            return v  # the backend is wrong; its own problem says so
        backend = backend_class(name)
        try:
            options = backend.parse_options(v)
        except ValidationError as e:
            raise ValueError(_options_problems(name, e)) from None
        return options.model_dump(mode="json", exclude_unset=True)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        if v is not None:
            parse_memory(v)  # before pydantic turns `true` into 1
        return v

    @property
    def gpu_choices(self) -> list[int]:
        return [self.gpus] if isinstance(self.gpus, int) else list(self.gpus.choices)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else parse_memory(self.memory)


def _options_problems(backend: str, error: ValidationError) -> str:
    """A backend's complaints about `placement:`, one clause per key."""
    parts = []
    for e in error.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(placement)"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"{backend} profiles have no option {where!r}"
            parts.append(msg)
            continue
        if e["type"] == "missing":
            msg = f"required by {backend} profiles"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


class SlurmSection(_Strict):
    """How the hub reaches a Slurm cluster (profiles with `backend: slurm`)."""

    conf: Path | None = Field(
        None,
        description="The cluster's slurm.conf (SLURM_CONF); default: Slurm's own "
        "(/etc/slurm/slurm.conf).",
    )
    bin_dir: Path = Field(
        Path("/usr/bin"), description="Where sbatch, squeue, scancel and scontrol are."
    )
    server_ip: str = Field(
        "0.0.0.0",
        description="Address sessions listen on, on their node; the hub must reach it. "
        "0.0.0.0: every address of the node.",
    )
    hub_api_address: str | None = Field(
        None,
        description="An address of this host that compute nodes reach: the hub's API then "
        "listens there (hub.hub_port) as well as for local servers, and jobs report to it. "
        "Default: loopback only, enough when the nodes are this host.",
    )
    node_addresses: dict[str, str] = Field(
        default_factory=dict,
        description="Node name → address the hub reaches it at, where Slurm's NodeAddr is "
        "not reachable from the hub.",
    )
    output_dir: str = Field(
        "{home}/.mlrp/slurm",
        description="Where each session's job output goes, on a filesystem the nodes and the "
        "hub share; {home} and {user} are replaced.",
    )
    poll_interval: int = Field(
        10, ge=1, le=600, description="Seconds between the one squeue for all sessions."
    )
    connect_timeout: int = Field(
        30,
        ge=1,
        le=600,
        description="Seconds the hub tries to connect to a session on its node before the "
        "start fails saying the hub cannot reach the node.",
    )
    walltime_warning: int = Field(
        600,
        ge=0,
        description="Seconds before a session's walltime ends at which it gets a warning "
        "event (0: none).",
    )
    nvidia_driver: str | None = Field(
        None,
        pattern=DRIVER_PATTERN,
        description="The oldest NVIDIA driver on the cluster's GPU nodes (e.g. 570.124.06), for "
        "the check that a profile's catalog image can run there; unset: not checked.",
    )

    @field_validator("server_ip", "hub_api_address")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"must be an IP address such as 10.0.0.5, not {v!r}") from None

    @field_validator("node_addresses")
    @classmethod
    def _addresses(cls, v: dict[str, str]) -> dict[str, str]:
        for node, address in v.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{node}: must be an IP address, not {address!r}") from None
        return v

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: str) -> str:
        plain = v.replace("{home}", "/h").replace("{user}", "u")
        if not re.fullmatch(r"/[A-Za-z0-9._/+@-]*", plain) or "/../" in plain + "/":
            raise ValueError(
                "must be an absolute path of letters, digits and . _ / + @ -, where {home} "
                f"and {{user}} may appear; got {v!r}"
            )
        return v


class CullerSection(_Strict):
    enabled: bool = True
    timeout: int = Field(3600, ge=60, description="Default idle seconds before a server stops.")
    interval: int = Field(300, ge=10)


class MLRPConfig(_Strict):
    """The whole deployment file. `mlrp config example` prints every key, with a comment."""

    hub: HubSection = Field(default_factory=HubSection)  # type: ignore[arg-type]
    login: LoginSection = Field(default_factory=LoginSection)  # type: ignore[arg-type]
    accounts: AccountsSection = Field(default_factory=AccountsSection)  # type: ignore[arg-type]
    gpus: GPUSection = Field(default_factory=GPUSection)  # type: ignore[arg-type]
    images: dict[Annotated[str, Field(pattern=SLUG_RE)], ImageSection] = Field(
        default_factory=lambda: {"default": ImageSection()}  # type: ignore[call-arg]
    )
    groups: dict[Annotated[str, Field(pattern=GROUP_RE)], list[str]] = Field(default_factory=dict)
    profiles: list[ProfileSection] = Field(min_length=1)
    idle_culler: CullerSection = Field(default_factory=CullerSection)  # type: ignore[arg-type]
    slurm: SlurmSection | None = Field(
        None, description="The Slurm cluster of profiles with backend: slurm."
    )

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> MLRPConfig:
        lenient = stand_ins(info)
        if lenient.cross_checked:
            return self
        problems: list[str] = []
        seen: set[str] = set()
        images = set(self.images) | lenient.images
        groups = set(self.groups) | lenient.groups
        for i, p in enumerate(self.profiles):
            if lenient.covers("profiles", i):
                continue  # not a profile at all; its own problem says so
            named = not lenient.covers("profiles", i, "slug")
            where = f"profiles[{i}] ({p.slug})" if named else f"profiles[{i}]"
            if named and p.slug in seen:
                problems.append(f"{where}.slug: {p.slug!r} is used by two profiles")
            seen.add(p.slug)
            if (
                not lenient.covers("images")
                and not lenient.covers("profiles", i, "image")
                and p.image not in images
            ):
                known = ", ".join(sorted(images)) or "none"
                problems.append(
                    f"{where}.image: no image {p.image!r}; images defined: {known}"
                    + did_you_mean(p.image, images)
                )
            image = self.images.get(p.image)
            if image is not None and image.apptainer is not None and p.backend != "slurm":
                problems.append(
                    f"{where}.image: {p.image!r} is an Apptainer image, which only Slurm "
                    "profiles run (backend: slurm); give this profile an image with an env"
                )
            if lenient.covers("groups") or lenient.covers("profiles", i, "groups"):
                continue
            for g in p.groups:
                if g not in groups:
                    known = ", ".join(sorted(groups)) or "none"
                    problems.append(
                        f"{where}.groups: no group {g!r}; groups defined: {known}"
                        + did_you_mean(g, groups)
                    )
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _unknown_key(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    section = model_at(root, loc[:-1])
    known = list(section.model_fields) if section is not None else []
    hint = did_you_mean(loc[-1], known)
    if hint:
        return "unknown key" + hint
    if known:
        return "unknown key; the keys allowed here are " + ", ".join(known)
    return "unknown key"


def describe(errors: list[Any], root: type[BaseModel] | None = None) -> list[str]:
    """pydantic's errors (``ValidationError.errors()``) as lines that each name a key path;
    `root` is the model validated (default: the deployment file's, MLRPConfig)."""
    root = root or MLRPConfig
    problems: list[str] = []
    for e in errors:
        loc = tuple(e["loc"])
        where = _loc(loc)
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(loc, root)
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "string_pattern_mismatch":
            pattern = (e.get("ctx") or {}).get("pattern", "")
            msg = f"{e['input']!r} is not allowed here (must match {pattern})"
        elif e["type"] == "literal_error":
            msg += did_you_mean(e["input"], choices_at(root, loc))
        lines = msg.split("\n") if not loc else [f"{where}: {msg}"]
        problems.extend(line for line in lines if line not in problems)
    return problems


TOP_LEVEL_NOT_A_MAPPING = "(top level): must be a mapping of sections (hub, profiles…)"


def parse(data: Any, source: str = "configuration") -> MLRPConfig:
    """Validate a deployment (the YAML's data); ConfigError listing every problem at once."""
    from config.collect import collect  # collect builds on this module's models

    found = collect(data)
    if found.problems or found.config is None:
        raise ConfigError(source, found.problems)
    return found.config


def read_yaml(path: Path) -> Any:
    """The data of a deployment file; ConfigError if it cannot be read or is not YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [f"cannot read: {e}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(str(path), [f"{where}: {problem}"]) from None


def load(path: Path) -> MLRPConfig:
    """Read and validate a deployment YAML file."""
    return parse(read_yaml(path), str(path))

"""Per-hub-process state shared by every MLRP spawner: the records store, the accounts policy,
and one `Backend` object per placement backend in use.

Built once from MLRPSpawner's traits and the hub's config (every spawner of a hub shares them)
and cached, so 20 users spawning at once share one GPU allocator, one poller per backend and one
view of the leases. What belongs to one backend (the GPU allocator and cgroups of the local
backend, the Slurm poller) lives in that backend object, configured by its own traits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from traitlets.config import Config

from spawners.accounts import AccountPolicy
from spawners.backends import Backend, UnknownBackend, backend_class
from spawners.errors import PlacementError
from spawners.isolation import parse_umask
from spawners.records import Records

if TYPE_CHECKING:
    from spawners.spawner import MLRPSpawner

log = logging.getLogger(__name__)


@dataclass
class Platform:
    records: Records
    accounts_mode: str
    account_prefix: str
    home_root: Path
    log_dir: Path
    umask: int = 0o077
    account_map: dict[str, str] = field(default_factory=dict)  # hub user → existing account
    config: Config = field(default_factory=Config)  # the hub's; each Backend reads its section
    extra_backends: dict[str, type[Backend]] = field(default_factory=dict)
    backends: dict[str, Backend] = field(default_factory=dict)  # made on first use

    @property
    def multi_user(self) -> bool:
        """Servers run as people's own accounts (system or existing), not the hub's."""
        return self.accounts_mode != "single-user"

    @property
    def accounts(self) -> AccountPolicy:
        return AccountPolicy(
            self.accounts_mode, self.account_prefix, self.home_root, self.account_map
        )

    def backend_class(self, name: str) -> type[Backend]:
        cls = self.extra_backends.get(name)
        return cls if cls is not None else backend_class(name)

    def backend(self, name: str) -> Backend:
        """The hub's one `Backend` object for `name`, made (configured) on first use."""
        found = self.backends.get(name)
        if found is None:
            try:
                cls = self.backend_class(name)
            except UnknownBackend as e:
                raise PlacementError(
                    "This profile uses a placement this hub does not have. Tell your "
                    "administrator.",
                    reason="config",
                    detail=str(e),
                    status_code=500,
                ) from None
            found = self.backends[name] = cls(self, config=self.config, log=log)
        return found


_cache: dict[int, Platform] = {}


def platform_for(spawner: MLRPSpawner) -> Platform:
    records = spawner.records
    if records is None:
        raise RuntimeError(
            "MLRPSpawner.records is not set: start the hub with config/jupyterhub_config.py "
            "(mlrp up) so the MLRP database is wired in."
        )
    key = id(records)
    if key not in _cache:
        _share_hub_log(spawner.log)
        log_dir = Path(spawner.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _cache[key] = Platform(
            records=records,
            accounts_mode=spawner.accounts_mode,
            account_prefix=spawner.account_prefix,
            home_root=Path(spawner.home_root),
            log_dir=log_dir,
            umask=parse_umask(spawner.umask),
            account_map=dict(spawner.account_map),
            config=spawner.config,
            extra_backends=dict(spawner.backend_classes),
        )
    return _cache[key]


def loaded_platforms() -> list[Platform]:
    """The platforms this process has built (one per records store; one in a hub)."""
    return list(_cache.values())


def _share_hub_log(app_log: logging.Logger) -> None:
    """Send our modules' log records (spawners.*, hub.*) to JupyterHub's log, at its level.

    Without this they reach no handler: Python's last resort prints warnings bare on stderr
    and drops the rest, so the hub log would never say how servers are fenced or contained.
    Only JupyterHub's own logger is joined (elsewhere, e.g. in tests, records propagate).
    """
    if app_log.name != "JupyterHub":
        return
    for name in ("spawners", "hub"):
        ours = logging.getLogger(name)
        if ours.handlers:
            continue
        for handler in app_log.handlers:
            ours.addHandler(handler)
        ours.setLevel(app_log.getEffectiveLevel())
        ours.propagate = False

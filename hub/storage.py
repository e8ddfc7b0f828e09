"""The MLRP database: engine set-up, migrations, and `SQLRecords` (spawners' Records interface).

SQLite runs in WAL mode so the hub and later services (the API service) can share one file.
Each method is one short transaction: the hub is a single asyncio process and these calls take
microseconds on SQLite, so they run inline rather than in a thread pool.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, delete, event, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.models import GPULease, RetiredUnixAccount, ServerCheckpoint, SpawnEvent, UnixAccount
from spawners.records import AccountClash, Checkpoint, Event, Lease

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
EVENTS_KEPT_PER_OWNER = 200
LEASE_ATTEMPTS = 5


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'mlrp.sqlite'}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL syncs at checkpoints instead of at every commit: still consistent, and
    # after a power loss only the last commits may be gone (leases of servers that died with the
    # machine, progress lines). Each commit no longer stalls the hub's event loop on an fsync.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_database(url: str) -> Engine:
    """Create the engine and bring the schema up to date (idempotent)."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine)
    return engine


def upgrade(engine: Engine) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class SQLRecords:
    """spawners.records.Records on SQLAlchemy."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(engine, expire_on_commit=False)

    def __deepcopy__(self, memo: dict[int, Any]) -> SQLRecords:
        # traitlets deep-copies config values; this is a shared handle, not a value.
        return self

    @classmethod
    def from_url(cls, url: str) -> SQLRecords:
        return cls(open_database(url))

    def session(self) -> Session:
        return self._session()

    # -- GPU leases --------------------------------------------------------------------------
    def lease_gpus(self, owner: str, node: str, candidates: list[str], count: int) -> list[str]:
        if count <= 0:
            return []
        # Another process may take a device between our read and insert; the unique constraint
        # refuses the insert and we look again, so a free GPU is never reported busy.
        for _ in range(LEASE_ATTEMPTS):
            try:
                return self._try_lease(owner, node, candidates, count)
            except IntegrityError:
                continue
        return []

    def _try_lease(self, owner: str, node: str, candidates: list[str], count: int) -> list[str]:
        with self.session() as s, s.begin():
            taken = set(s.scalars(select(GPULease.device).where(GPULease.node == node)))
            free = [d for d in candidates if d not in taken]
            if len(free) < count:
                return []
            chosen = free[:count]
            for device in chosen:
                s.add(GPULease(node=node, device=device, owner=owner, since=now()))
        return chosen

    def release_gpus(self, owner: str) -> list[str]:
        with self.session() as s, s.begin():
            rows = s.scalars(select(GPULease).where(GPULease.owner == owner)).all()
            freed = [r.device for r in rows]
            s.execute(delete(GPULease).where(GPULease.owner == owner))
        return freed

    def leases(self, node: str) -> list[Lease]:
        with self.session() as s:
            rows = s.scalars(select(GPULease).where(GPULease.node == node)).all()
            return [Lease(r.node, r.device, r.owner, r.since) for r in rows]

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, owner: str, backend: str, state: dict[str, Any]) -> None:
        row = {"backend": backend, "state": json.dumps(state), "updated": now()}
        with self.session() as s, s.begin():
            found = s.get(ServerCheckpoint, owner)
            if found is None:
                s.add(ServerCheckpoint(owner=owner, **row))
            else:
                for key, value in row.items():
                    setattr(found, key, value)

    def checkpoints(self) -> list[Checkpoint]:
        with self.session() as s:
            rows = s.scalars(select(ServerCheckpoint)).all()
            return [Checkpoint(r.owner, r.backend, json.loads(r.state), r.updated) for r in rows]

    def drop_checkpoint(self, owner: str) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(ServerCheckpoint).where(ServerCheckpoint.owner == owner))

    # -- spawn events ------------------------------------------------------------------------
    def add_event(self, ev: Event) -> None:
        # Core statements on a connection, not an ORM session: every spawn writes several
        # events inside the hub's event loop, and the session's unit of work cost ~3x the CPU.
        with self.engine.begin() as conn:
            conn.execute(
                insert(SpawnEvent).values(
                    owner=ev.owner,
                    spawn_id=ev.spawn_id,
                    at=ev.at,
                    progress=ev.progress,
                    message=ev.message,
                    failed=ev.failed,
                    ready=ev.ready,
                )
            )
            if ev.progress == 0:  # a new spawn: keep the table from growing without bound
                keep = select(SpawnEvent.id).where(SpawnEvent.owner == ev.owner)
                keep = keep.order_by(SpawnEvent.id.desc()).limit(EVENTS_KEPT_PER_OWNER)
                conn.execute(
                    delete(SpawnEvent).where(
                        SpawnEvent.owner == ev.owner, SpawnEvent.id.not_in(keep.scalar_subquery())
                    )
                )

    def events(self, owner: str, spawn_id: str | None = None) -> list[Event]:
        # Plain rows on a connection (as in add_event), no ORM objects: progress streams read
        # this after every event of every spawn.
        e = SpawnEvent
        with self.engine.connect() as conn:
            if spawn_id is None:
                spawn_id = conn.scalar(
                    select(e.spawn_id).where(e.owner == owner).order_by(e.id.desc()).limit(1)
                )
                if spawn_id is None:
                    return []
            rows = conn.execute(
                select(e.owner, e.spawn_id, e.at, e.progress, e.message, e.failed, e.ready)
                .where(e.owner == owner, e.spawn_id == spawn_id)
                .order_by(e.id)
            ).all()
        return [Event(*row) for row in rows]

    # -- Unix accounts -----------------------------------------------------------------------
    def unix_account(self, hub_user: str) -> str | None:
        with self.session() as s:
            row = s.get(UnixAccount, hub_user)
            return row.unix_name if row else None

    def claim_unix_account(self, hub_user: str, unix_name: str) -> None:
        try:
            self._claim(hub_user, unix_name)
        except IntegrityError:
            # Another process claimed the name (or this user) between our check and our
            # insert; the unique constraints refused ours. Look again: AccountClash if the
            # name is someone else's, nothing to do if it is now this user's.
            self._claim(hub_user, unix_name)

    def _claim(self, hub_user: str, unix_name: str) -> None:
        with self.session() as s, s.begin():
            mine = s.get(UnixAccount, hub_user)
            if mine is not None and mine.unix_name != unix_name:
                raise AccountClash(
                    f"hub user {hub_user!r} already runs as Unix account {mine.unix_name}, not "
                    f"{unix_name} (did accounts.prefix change?). Put accounts.prefix back, or "
                    "delete the row for this user from unix_accounts to give them a new account."
                )
            retired = s.get(RetiredUnixAccount, unix_name)
            if retired is not None:
                raise AccountClash(
                    f"Unix account {unix_name} belonged to {retired.hub_user!r}, who was removed; "
                    f"it is kept with their files (mlrp user add {retired.hub_user} --restore "
                    "gives it back to them)."
                )
            holder = s.scalars(
                select(UnixAccount.hub_user).where(UnixAccount.unix_name == unix_name)
            ).first()
            if holder is not None and holder != hub_user:
                raise AccountClash(
                    f"Unix account {unix_name} already belongs to hub user {holder!r}"
                )
            if holder is None:
                s.add(UnixAccount(hub_user=hub_user, unix_name=unix_name, created=now()))

    # -- retired Unix accounts (offboarding) ------------------------------------------------
    def retire_unix_account(self, hub_user: str) -> str | None:
        """Forget `hub_user`'s Unix account as theirs and keep its name from ever being given
        out again; returns the account name (None if they never had one)."""
        with self.session() as s, s.begin():
            row = s.get(UnixAccount, hub_user)
            if row is None:
                return None
            name = row.unix_name
            s.delete(row)
            s.flush()
            s.merge(
                RetiredUnixAccount(
                    unix_name=name, hub_user=hub_user, created=row.created, retired=now()
                )
            )
        return name

    def unix_name_retired(self, unix_name: str) -> bool:
        with self.session() as s:
            return s.get(RetiredUnixAccount, unix_name) is not None

    def retired_unix_accounts(self, hub_user: str) -> list[RetiredUnixAccount]:
        """`hub_user`'s retired accounts, most recently retired first."""
        with self.session() as s:
            rows = s.scalars(
                select(RetiredUnixAccount)
                .where(RetiredUnixAccount.hub_user == hub_user)
                .order_by(RetiredUnixAccount.retired.desc())
            )
            return list(rows)

    def set_archive(self, unix_name: str, archive: str) -> None:
        with self.session() as s, s.begin():
            row = s.get(RetiredUnixAccount, unix_name)
            if row is not None:
                row.archive = archive

    def restore_unix_account(self, hub_user: str, unix_name: str) -> None:
        """Give `hub_user` back their retired account `unix_name` (the admin asked for it)."""
        with self.session() as s, s.begin():
            row = s.get(RetiredUnixAccount, unix_name)
            if row is None or row.hub_user != hub_user:
                raise AccountClash(f"{unix_name} is not a retired account of {hub_user!r}")
            mine = s.get(UnixAccount, hub_user)
            if mine is not None:
                raise AccountClash(
                    f"hub user {hub_user!r} already has Unix account {mine.unix_name}"
                )
            s.delete(row)
            s.flush()
            s.add(UnixAccount(hub_user=hub_user, unix_name=unix_name, created=row.created))

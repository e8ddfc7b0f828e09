"""Tables of the MLRP database (SQLite by default, PostgreSQL by URL).

Schema changes go through a new migration in hub/migrations/versions; `storage.open_database`
upgrades to head at start-up, so an old data directory keeps working after an upgrade.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class GPULease(Base):
    __tablename__ = "gpu_leases"
    __table_args__ = (UniqueConstraint("node", "device", name="uq_gpu_lease_device"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(512), index=True)
    since: Mapped[datetime] = mapped_column(DateTime)


class SpawnEvent(Base):
    __tablename__ = "spawn_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(512), index=True)
    spawn_id: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    progress: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    ready: Mapped[bool] = mapped_column(Boolean, default=False)


class UnixAccount(Base):
    __tablename__ = "unix_accounts"

    hub_user: Mapped[str] = mapped_column(String(255), primary_key=True)
    unix_name: Mapped[str] = mapped_column(String(32), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime)


class RetiredUnixAccount(Base):
    """The Unix account of a removed person: kept (locked) or archived, never reused for a
    later hub user of the same name unless the admin restores it (`mlrp user add --restore`)."""

    __tablename__ = "retired_unix_accounts"

    unix_name: Mapped[str] = mapped_column(String(32), primary_key=True)
    hub_user: Mapped[str] = mapped_column(String(255), index=True)
    created: Mapped[datetime] = mapped_column(DateTime)
    retired: Mapped[datetime] = mapped_column(DateTime)
    archive: Mapped[str | None] = mapped_column(Text, nullable=True)


class LoginAccount(Base):
    """Native login: one row per person who may log in with a password."""

    __tablename__ = "login_accounts"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    created: Mapped[datetime] = mapped_column(DateTime)
    changed: Mapped[datetime] = mapped_column(DateTime)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)


class ServerCheckpoint(Base):
    """spawners.records.Checkpoint: one row per placed server, its state as JSON."""

    __tablename__ = "server_checkpoints"

    owner: Mapped[str] = mapped_column(String(512), primary_key=True)
    backend: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(DateTime)

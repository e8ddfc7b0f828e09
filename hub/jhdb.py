"""JupyterHub's own database, read and written from outside the hub.

Reading (`server_rows`): its users and spawners tables, a schema stable since JupyterHub 1.0,
in plain SQL, for `mlrp up`'s lease reconciliation and the GPU view.

Writing, for `mlrp user` while the hub is not running: with the hub up, `mlrp user` goes
through the hub's API (hub/hub_client.py), so the hub's in-memory state stays right. With it
down, the same effects are written to its database with JupyterHub's own ORM (the installed
version's, matching the file it made): the next hub start reads them. A user whose server is
recorded as running is left alone: only the hub can stop it properly (its processes, GPUs and
port).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from jupyterhub import orm

SERVER_TOKEN_NOTE = "Server at "  # JupyterHub's note on the token it makes for each server


class ServerRow(NamedTuple):
    user: str
    server: str  # "" for the default server
    state: str  # the spawner's saved state, JSON
    running: bool  # JupyterHub records a server for it


def server_rows(db_file: Path) -> list[ServerRow] | None:
    """Every spawner JupyterHub keeps; [] without a database, None if it cannot be read."""
    if not db_file.exists():
        return []
    engine = create_engine(f"sqlite:///{db_file}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT users.name, spawners.name, spawners.state, spawners.server_id "
                    "FROM spawners JOIN users ON users.id = spawners.user_id"
                )
            ).all()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()
    return [ServerRow(u, s or "", state or "", sid is not None) for u, s, state, sid in rows]


class HubDown(Exception):
    """What the hub must do and cannot while it is down; the message says so."""


@contextmanager
def _session(db_file: Path) -> Iterator[Session | None]:
    if not db_file.exists():  # the hub never started: it has no users, tokens or sessions
        yield None
        return
    engine = create_engine(f"sqlite:///{db_file}", future=True)
    try:
        with Session(engine) as db:
            yield db
    finally:
        engine.dispose()


def _running(user: orm.User) -> list[str]:
    return [sp.name or "(default)" for sp in user._orm_spawners if sp.server is not None]


def delete_user(db_file: Path, name: str) -> bool:
    """Delete the hub user with their tokens, group memberships and server records; False if
    there is no such hub user. Refuses (HubDown) while a server of theirs is recorded running."""
    from jupyterhub import orm

    with _session(db_file) as db:
        if db is None:
            return False
        user = db.query(orm.User).filter_by(name=name).first()
        if user is None:
            return False
        running = _running(user)
        if running:
            raise HubDown(
                f"{name}'s server ({', '.join(running)}) is recorded as running and the hub is "
                "not: start the hub (mlrp up) and run this again, so that it stops the server "
                "and frees its GPUs."
            )
        db.delete(user)
        db.commit()
        return True


def end_sessions(db_file: Path, name: str) -> int:
    """Replace the user's cookie id (every browser session ends) and revoke their tokens but
    those of servers recorded as running. Returns how many tokens went."""
    from jupyterhub import orm

    from hub.sessions import revoke

    with _session(db_file) as db:
        if db is None:
            return 0
        user = db.query(orm.User).filter_by(name=name).first()
        if user is None:
            return 0
        keep_servers = bool(_running(user))
        return revoke(
            db,
            user,
            lambda token: keep_servers and (token.note or "").startswith(SERVER_TOKEN_NOTE),
        )

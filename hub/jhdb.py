"""JupyterHub's own database, for `mlrp user` while the hub is not running.

With the hub up, `mlrp user` goes through the hub's API (hub/hub_client.py), so the hub's
in-memory state stays right. With it down, the same effects are written to its database with
JupyterHub's own ORM (the installed version's, matching the file it made): the next hub start
reads them. A user whose server is recorded as running is left alone: only the hub can stop
it properly (its processes, GPUs and port).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyterhub import orm
from jupyterhub.utils import new_token
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

SERVER_TOKEN_NOTE = "Server at "  # JupyterHub's note on the token it makes for each server


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
    with _session(db_file) as db:
        if db is None:
            return 0
        user = db.query(orm.User).filter_by(name=name).first()
        if user is None:
            return 0
        keep_servers = bool(_running(user))
        revoked = 0
        for token in list(user.api_tokens):
            if keep_servers and (token.note or "").startswith(SERVER_TOKEN_NOTE):
                continue
            db.delete(token)
            revoked += 1
        user.cookie_id = new_token()
        db.commit()
        return revoked


def exists(db_file: Path, name: str) -> bool:
    with _session(db_file) as db:
        return db is not None and db.query(orm.User).filter_by(name=name).first() is not None

"""Ending a person's sessions: after a password change, and for good at logout.

JupyterHub's login cookie carries the user's `cookie_id`, one per user: replacing it ends every
browser session of that person at once (a cookie saved before is refused from then on). The
tokens browsers got for the person's servers go too (else a server's cookie would outlive the
login). After a password change the person's own API tokens are revoked as well; at logout they
stay (a script's token is not a session). A running server's own token always stays: the
server needs it to check who may use it. The browser that changed the password keeps its
session (tokens and a fresh cookie).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jupyterhub import orm
from jupyterhub.utils import new_token


def end_sessions(
    handler: Any, user: Any, *, keep_session_id: str | None = None, api_tokens: bool = True
) -> int:
    """End every browser session of `user` (a jupyterhub.user.User) and revoke its tokens:
    all but those of `keep_session_id` (the browser asking) and of the user's running servers;
    with `api_tokens=False`, only tokens issued to browser sessions. Returns how many went."""
    db = handler.db
    servers = set()
    for spawner in user.spawners.values():
        if spawner.api_token:
            found = orm.APIToken.find(db, spawner.api_token)
            if found is not None:
                servers.add(found.id)

    def keep(token: orm.APIToken) -> bool:
        if token.id in servers or (keep_session_id and token.session_id == keep_session_id):
            return True
        return not api_tokens and not token.session_id

    return revoke(db, user.orm_user, keep)


def revoke(db: Any, orm_user: orm.User, keep: Callable[[orm.APIToken], bool]) -> int:
    """Replace `orm_user`'s cookie id (their browser sessions end) and delete their tokens but
    those `keep` says; commits. The hub's handlers and `mlrp user` with the hub down
    (hub/jhdb.py) both end sessions through this. Returns how many tokens went."""
    revoked = 0
    for token in list(orm_user.api_tokens):
        if keep(token):
            continue
        db.delete(token)
        revoked += 1
    orm_user.cookie_id = new_token()
    db.commit()
    return revoked

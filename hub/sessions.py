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
    revoked = 0
    for token in list(user.orm_user.api_tokens):
        if token.id in servers or (keep_session_id and token.session_id == keep_session_id):
            continue
        if not api_tokens and not token.session_id:
            continue
        db.delete(token)
        revoked += 1
    user.orm_user.cookie_id = new_token()
    db.commit()
    return revoked

"""Hub API additions for people: ending someone's sessions, and creating users only with a login.

- `POST /hub/api/mlrp/users/NAME/end-sessions` (scope admin:users): every browser session of
  NAME ends and their tokens are revoked, but those of their running servers. `mlrp user
  passwd` (an admin reset) and `mlrp user logout` call it.
- `POST /hub/api/users` (the admin page's "Add Users") is JupyterHub's, except that a name
  without a native login is refused with a sentence: such a hub user could never log in, and
  a password set later by anyone but the admin could claim it. People are created with
  `mlrp user add`, which makes the login first and then the hub user (and group memberships).
"""

from __future__ import annotations

from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.apihandlers.users import UserListAPIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from hub import accounts
from hub.sessions import end_sessions

NO_LOGIN = (
    "{names}: no login account. Add people on the server with `mlrp user add NAME` (it makes "
    "their password, and with --group their group memberships) or `mlrp user import FILE.csv`; "
    "this page cannot give anyone a password."
)


class EndSessionsAPIHandler(APIHandler):
    @needs_scope("admin:users")
    async def post(self, user_name: str) -> None:
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"No hub user {user_name!r}")
        revoked = end_sessions(self, user)
        self.log.info(
            "%s: every session ended and %d token(s) revoked by %s",
            user.name,
            revoked,
            self.current_user.name,
        )
        self.finish({"revoked": revoked})


class LoginFirstUserListAPIHandler(UserListAPIHandler):
    """JupyterHub's user list API; creating a user needs their native login first."""

    @needs_scope("admin:users")  # checked before anything about logins is said
    async def post(self) -> None:
        data: Any = self.get_json_body()
        names = data.get("usernames") if isinstance(data, dict) else None
        records = getattr(self.authenticator, "records", None)
        if isinstance(names, list) and records is not None:
            missing = []
            for raw in names:
                name = self.authenticator.normalize_username(str(raw))
                if not self.authenticator.validate_username(name):
                    continue  # JupyterHub refuses it with "Invalid username"
                if self.find_user(name) is None and not accounts.exists(records, name):
                    missing.append(name)
            if missing:
                self.log.warning("Refused to create hub user(s) without a login: %s", missing)
                raise web.HTTPError(400, NO_LOGIN.format(names=", ".join(missing)))
        await super().post()

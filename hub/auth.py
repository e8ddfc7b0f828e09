"""NativeAuthenticator: log in with a name and password kept in the MLRP database.

Accounts are made by the admin (`mlrp user add NAME`, which prints a generated password). Never
"any password works": a name without an account cannot log in.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Any as AnyTrait
from traitlets import Integer, default

from hub import accounts


class NativeAuthenticator(Authenticator):
    records = AnyTrait(
        None,
        allow_none=True,
        config=True,
        help="hub.storage.SQLRecords with the login accounts; set by config/jupyterhub_config.py",
    )

    min_password_length = Integer(
        10, config=True, help="Shortest password `mlrp user` and /hub/change-password accept."
    )

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        from hub.password_page import ChangePasswordHandler

        return [*super().get_handlers(app), ("/change-password", ChangePasswordHandler)]

    @default("allow_all")
    def _allow_all(self) -> bool:
        # Only people the admin gave an account can log in at all; that is the allow list.
        return True

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        name = self.normalize_username(str(data.get("username", "")))
        password = str(data.get("password", ""))
        if not name or not password or not accounts.USERNAME_RE.fullmatch(name):
            return None
        ok = await asyncio.get_running_loop().run_in_executor(
            None, accounts.check_login, self.records, name, password
        )
        if not ok:
            self.log.warning("Failed login for %r", name)
            return None
        return name

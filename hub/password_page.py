"""/hub/change-password: a logged-in user replaces their own password (native login)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jupyterhub.handlers import BaseHandler
from tornado import web

from hub import accounts
from hub.auth import LoginRefused
from hub.sessions import end_sessions

TEMPLATES = Path(__file__).parent / "templates"


class ChangePasswordHandler(BaseHandler):
    async def _page(self, error: str = "", done: bool = False, status: int = 200) -> None:
        self.set_status(status)
        html = await self.render_template(
            "mlrp-change-password.html",
            mlrp_error=error,
            mlrp_done=done,
            mlrp_min_length=self.authenticator.min_password_length,
        )
        self.finish(html)

    @web.authenticated
    async def get(self) -> None:
        await self._page()

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        current = self.get_body_argument("current", "")
        new = self.get_body_argument("new", "")
        confirm = self.get_body_argument("confirm", "")
        records: Any = self.authenticator.records
        loop = asyncio.get_running_loop()
        try:
            ok = await self.authenticator.check_password(user.name, current, self.request.remote_ip)
        except LoginRefused as e:
            return await self._page(str(e), status=429)
        if not ok:
            return await self._page("Your current password is not correct.", status=400)
        if new != confirm:
            return await self._page("The two new passwords differ. Type them again.", status=400)
        try:
            await loop.run_in_executor(
                None,
                lambda: accounts.set_password(
                    records, user.name, new, self.authenticator.min_password_length
                ),
            )
        except accounts.AccountInputError as e:
            return await self._page(str(e), status=400)
        revoked = end_sessions(self, user, keep_session_id=self.get_session_cookie())
        self.set_login_cookie(user)  # this browser stays logged in, with the new cookie id
        self.log.info(
            "%s changed their password; their other sessions ended and %d token(s) revoked",
            user.name,
            revoked,
        )
        await self._page(done=True)

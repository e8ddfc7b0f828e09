"""NativeAuthenticator: log in with a name and password kept in the MLRP database.

Accounts are made by the admin (`mlrp user add NAME`, which prints a generated password). Never
"any password works": a name without an account cannot log in.

Wrong passwords are throttled per name and per address (hub.throttle): the login page then says
how long to wait, and the admin log has one line per refusal.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.handlers.login import LoginHandler, LogoutHandler
from traitlets import Any as AnyTrait
from traitlets import Bool, Integer, default

from hub import accounts, offboard, passwords
from hub.sessions import end_sessions
from hub.throttle import Throttle, wait_sentence


class LoginRefused(Exception):
    """A try refused before its password is checked; the message is for the person."""


class ThrottledLoginHandler(LoginHandler):
    """JupyterHub's login page, which also says why a try was refused (429)."""

    async def post(self) -> None:
        try:
            await super().post()
        except LoginRefused as e:
            self.set_status(429)
            username = self.get_body_argument("username", "", strip=True)[:32]
            self.finish(await self._render(login_error=str(e), username=username))


class EndingLogoutHandler(LogoutHandler):
    """Logout ends the person's sessions for good: a cookie saved before it is refused."""

    async def handle_logout(self) -> None:
        user = self.current_user  # still known: JupyterHub cleared only the cookies so far
        if user is not None:
            revoked = end_sessions(self, user, api_tokens=False)
            self.log.info("%s logged out: sessions ended, %d token(s) revoked", user.name, revoked)


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
    failures_before_delay = Integer(
        5,
        config=True,
        help="Wrong passwords a name may have before each further try must wait (1 s, doubling "
        "up to max_login_delay). An address gets four times as many (a class behind one NAT).",
    )
    max_login_delay = Integer(
        900, config=True, help="Longest wait, in seconds, after repeated wrong passwords."
    )

    system_accounts = Bool(
        True,
        config=True,
        help="Whether people have Unix accounts of their own (accounts.mode: system); a removed "
        "person's account is then locked and retired, never deleted.",
    )

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        from hub.gpu_page import GPUPageHandler
        from hub.password_page import ChangePasswordHandler
        from hub.people_api import EndSessionsAPIHandler, LoginFirstUserListAPIHandler
        from hub.servers_api import ClearServerAPIHandler
        from hub.session_api import SessionAPIHandler

        # Ahead of JupyterHub's own handlers: for /login, /logout and /api/users these win.
        return [
            ("/login", ThrottledLoginHandler),
            ("/logout", EndingLogoutHandler),
            ("/change-password", ChangePasswordHandler),
            ("/mlrp/gpus", GPUPageHandler),
            ("/api/users", LoginFirstUserListAPIHandler),
            ("/api/mlrp/users/([^/]+)/end-sessions", EndSessionsAPIHandler),
            ("/api/mlrp/users/([^/]+)/servers/([^/]*)/clear", ClearServerAPIHandler),
            # the default server at .../session: an empty path segment does not survive the proxy
            ("/api/mlrp/users/([^/]+)/session", SessionAPIHandler),
            ("/api/mlrp/users/([^/]+)/servers/([^/]+)/session", SessionAPIHandler),
        ]

    def validate_username(self, username: str) -> bool:
        """The names `mlrp user add` accepts, and no others (the admin page's "Add Users")."""
        return bool(accounts.USERNAME_RE.fullmatch(username)) and super().validate_username(
            username
        )

    async def delete_user(self, user: Any) -> None:
        """JupyterHub deletes a user (admin page or API): their servers are stopped already;
        their login goes and their Unix account is retired. JupyterHub then deletes the hub user
        with their tokens and group memberships."""
        super().delete_user(user)
        done = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: offboard.retire(self.records, user.name, system_accounts=self.system_accounts),
        )
        self.log.info(
            "Removed %s: login %s; Unix account %s%s",
            user.name,
            "deleted" if done.login_deleted else "(none)",
            done.unix_account or "(none)",
            f" retired and locked, files kept in {done.home}" if done.home else "",
        )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Made now, off the event loop, so the first unknown name is not slower than the rest.
        threading.Thread(target=passwords.dummy_hash, daemon=True).start()

    @default("allow_all")
    def _allow_all(self) -> bool:
        # Only people the admin gave an account can log in at all; that is the allow list.
        return True

    # -- throttling ----------------------------------------------------------------------------
    @property
    def _throttles(self) -> tuple[Throttle, Throttle]:
        made: tuple[Throttle, Throttle] | None = self.__dict__.get("_mlrp_throttles")
        if made is None:
            delay = float(self.max_login_delay)
            made = self.__dict__["_mlrp_throttles"] = (
                Throttle(self.failures_before_delay, delay),
                Throttle(4 * self.failures_before_delay, delay),
            )
        return made

    def check_allowed_to_try(self, name: str, address: str) -> None:
        """Raise LoginRefused while `name` or `address` must wait after wrong passwords."""
        names, addresses = self._throttles
        wait = max(names.wait(name), addresses.wait(address))
        if wait > 0:
            self.log.warning(
                "Login try for %r from %s refused for %.0f s more (%d wrong passwords for the "
                "name, %d from the address)",
                name,
                address,
                wait,
                names.failures(name),
                addresses.failures(address),
            )
            raise LoginRefused(wait_sentence(wait))

    def count_try(self, name: str, address: str, ok: bool) -> None:
        names, addresses = self._throttles
        if ok:
            names.succeeded(name)
            return
        name_wait, address_wait = names.failed(name), addresses.failed(address)
        self.log.warning(
            "Wrong password for %r from %s (%d for the name, %d from the address)%s",
            name,
            address,
            names.failures(name),
            addresses.failures(address),
            f"; next try in {max(name_wait, address_wait):.0f} s"
            if max(name_wait, address_wait)
            else "",
        )

    async def check_password(self, name: str, password: str, address: str) -> bool:
        """The one way a password is checked (login page and change-password page alike)."""
        self.check_allowed_to_try(name, address)
        ok = await asyncio.get_running_loop().run_in_executor(
            None, accounts.check_login, self.records, name, password
        )
        self.count_try(name, address, ok)
        return bool(ok)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
        name = self.normalize_username(str(data.get("username", "")))
        password = str(data.get("password", ""))
        address = str(getattr(getattr(handler, "request", None), "remote_ip", "") or "")
        if not name or not password or not accounts.USERNAME_RE.fullmatch(name):
            return None
        if not await self.check_password(name, password, address):
            return None
        return name

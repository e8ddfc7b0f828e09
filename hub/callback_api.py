"""`POST /hub/api/batchspawner`: a starting server's job reports its port, and nothing else.

batchspawner registers this route as soon as any part of it is imported, with a handler that
does `setattr(spawner, key, value)` for every key of the JSON body. Its only credential is the
server's own API token, which sits in the user's environment, so a user could set
`batch_cancel_cmd`, `exec_prefix` or `cmd`, which the hub later runs. `close_batchspawner_hazard()`
(called from config/render.py) puts this module's handler in its place, whatever the order in
which batchspawner and our configuration are imported (see its docstring).

What the handler accepts: a body that is exactly `{"port": N}`, N a whole number 1..65535 (not a
string, a bool or a float), sent with the API token of one of the caller's own servers, while that
server is starting. Anything else is refused with a sentence and changes nothing:

- 400: any other key, a bad port, a body that is not one small JSON object.
- 403: the token is not the API token of a server of the token's owner (another person's token,
  an admin's or a service's token, a browser cookie): nobody can name someone else's server here.
- 409: that server is not starting (running already, stopping, stopped).
- 404: that server does not report its port.

Decision on "host" (batchspawner's jobs never send it, but some forks do): refused. The hub learns
the node a job runs on from the scheduler (squeue), never from the job; a job that could name its
host could point the proxy, and the user's browser session, at any address.

With a good port: a spawner with `report_port(port: int) -> None` (MLRPSpawner, which hands it to
its placement backend) gets that call; it raises LookupError with a sentence when it does not
expect a port (404), ValueError with a sentence when it refuses this one (400). Otherwise a
vanilla batchspawner `BatchSpawnerBase` (someone runs it under our configuration) gets only
`spawner.port` set, once, which is what its start loop waits for.
"""

from __future__ import annotations

import hmac
import json
import sys
from collections.abc import Iterable
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

# The route as batchspawner registers it, relative to the hub's prefix (/hub/).
ROUTE = r"/api/batchspawner"
MAX_BODY = 256  # bytes; `{"port": 65535}` is 15
LOWEST_PORT, HIGHEST_PORT = 1, 65535

NOT_A_SERVER_TOKEN = (
    "Only a starting server may report its port, with its own API token; this token is not "
    "the API token of any server of yours."
)
NOT_STARTING = "This server is not starting (it is {state}); its port cannot be reported now."
DOES_NOT_REPORT = "This server does not report its port."
ALREADY_REPORTED = "This server reported its port already; a port is reported once per start."
HOST_REFUSED = (
    "'host' is not accepted: the hub learns the node a job runs on from the scheduler, never "
    'from the job. Send only {"port": N}.'
)


class Refusal(Exception):
    """A request this endpoint refuses: an HTTP status and a sentence for whoever sent it."""

    def __init__(self, status: int, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refusal(400, 'The body names a key twice; send {"port": N} once.')
    return dict(pairs)


def _shown(keys: Iterable[str]) -> str:
    """Key names for a sentence: quoted, each cut short, at most five."""
    names = sorted(keys)
    shown = ", ".join(repr(k[:40]) for k in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def parse_port_report(body: bytes) -> int:
    """The port in a report's body; Refusal(400) for anything but exactly {"port": N}."""
    if len(body) > MAX_BODY:
        raise Refusal(400, f"The body is {len(body)} bytes; a port report is at most {MAX_BODY}.")
    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except Refusal:
        raise
    except (UnicodeDecodeError, ValueError):  # JSONDecodeError is a ValueError
        raise Refusal(400, 'The body is not JSON; send {"port": N}.') from None
    if not isinstance(data, dict):
        raise Refusal(
            400, f'The body is a JSON {type(data).__name__}, not an object; send {{"port": N}}.'
        )
    if "host" in data:
        raise Refusal(400, HOST_REFUSED)
    extra = set(data) - {"port"}
    if extra:
        raise Refusal(
            400,
            f"Only the port may be reported here; refused key(s): {_shown(extra)}. "
            "Nothing was changed.",
        )
    if "port" not in data:
        raise Refusal(400, 'The body has no port; send {"port": N}.')
    port = data["port"]
    # bool is an int in Python, and JSON's 8080.0 a float: neither is a port.
    if type(port) is not int:
        raise Refusal(400, f"port must be a whole number, not a JSON {_json_type(port)}.")
    if not LOWEST_PORT <= port <= HIGHEST_PORT:
        raise Refusal(400, f"port must be between {LOWEST_PORT} and {HIGHEST_PORT}; got {port}.")
    return port


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number with a fraction or exponent"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def own_spawner(spawners: Iterable[Any], token: str | None) -> Any:
    """The spawner whose API token `token` is, among the token owner's own spawners."""
    if token:
        for spawner in spawners:
            own = getattr(spawner, "api_token", "") or ""
            if own and hmac.compare_digest(own.encode(), token.encode()):
                return spawner
    raise Refusal(403, NOT_A_SERVER_TOKEN)


def _batchspawner_base() -> type[Any] | None:
    """batchspawner's base class if something imported it; we never import it ourselves (that
    alone would register its handler)."""
    module = sys.modules.get("batchspawner.batchspawner")
    base = getattr(module, "BatchSpawnerBase", None)
    return base if isinstance(base, type) else None


def apply_port(spawner: Any, port: int) -> None:
    """Hand a validated port to a starting spawner; Refusal when it cannot take one now."""
    pending = getattr(spawner, "pending", None)
    if pending != "spawn":
        if pending:
            state = f"{pending} pending"
        elif getattr(spawner, "ready", False):
            state = "running"
        else:
            state = "stopped"
        raise Refusal(409, NOT_STARTING.format(state=state))
    report = getattr(spawner, "report_port", None)
    if callable(report):
        try:
            report(port)
        except LookupError as e:
            raise Refusal(404, str(e) or DOES_NOT_REPORT) from None
        except ValueError as e:
            raise Refusal(400, str(e) or f"port {port} was refused.") from None
        return
    base = _batchspawner_base()
    if base is not None and isinstance(spawner, base):
        if spawner.port:
            raise Refusal(409, ALREADY_REPORTED)
        spawner.port = port  # the one attribute batchspawner's start loop waits for
        return
    raise Refusal(404, DOES_NOT_REPORT)


class PortReportHandler(APIHandler):
    """Takes the place of batchspawner's BatchSpawnerAPIHandler (see the module docstring)."""

    @web.authenticated
    async def post(self) -> None:
        user = self.current_user
        who = getattr(user, "name", "?")
        try:
            port = parse_port_report(self.request.body)
            spawner = own_spawner(getattr(user, "spawners", {}).values(), self.get_auth_token())
            apply_port(spawner, port)
        except Refusal as r:
            self.log.warning("Port report from %s refused (%d): %s", who, r.status, r.sentence)
            self.set_status(r.status)
            self.finish({"status": r.status, "message": r.sentence})
            return
        self.log.info("%s reported port %d", spawner._log_name, port)
        self.finish({"message": f"Port {port} recorded."})


def close_batchspawner_hazard() -> None:
    """Make `/hub/api/batchspawner` reach only PortReportHandler, whenever batchspawner is
    imported relative to this call.

    JupyterHub (5.5 and 6.1 alike) builds its routes in `init_handlers`, after the config file
    ran: the authenticator's handlers, then `jupyterhub.handlers.default_handlers`, then
    `jupyterhub.apihandlers.default_handlers`, then `extra_handlers`; Tornado takes the first
    route that matches. batchspawner *appends* its route to `apihandlers.default_handlers` when
    imported, so a handler in `extra_handlers` would always lose to it. Here batchspawner's
    tuple (imported already) is dropped and ours goes to the front of that same list: one
    imported later appends behind ours and is never reached. Idempotent."""
    from jupyterhub import apihandlers

    routes = apihandlers.default_handlers
    routes[:] = [r for r in routes if r[0] != ROUTE]
    routes.insert(0, (ROUTE, PortReportHandler))

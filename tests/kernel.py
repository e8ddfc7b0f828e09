"""A real kernel in a user's server, reached through the hub's proxy over the Jupyter REST API
and the kernel channels WebSocket: what a person's notebook does, with no backend internals."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
import websocket
from harness import Hub


class KernelDied(AssertionError):
    """The kernel (or its server) went away while running code: the channel closed."""


class NoReply(AssertionError):
    """The kernel did not finish running the code in time."""


class Kernel:
    """A real kernel in `name`'s server, driven over REST + the kernel channels WebSocket."""

    def __init__(self, hub: Hub, name: str, token: str) -> None:
        self.hub, self.name, self.token = hub, name, token
        self.base = f"{hub.url}/user/{name}/api/kernels"
        r = requests.post(self.base, json={"name": "python3"}, headers=self.headers, timeout=60)
        assert r.status_code == 201, f"kernel start in {name}'s server: {r.status_code} {r.text}"
        self.id: str = r.json()["id"]
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            self.channels_url(hub, name, self.id),
            header=[f"Authorization: token {token}"],
            timeout=60,
        )

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    @staticmethod
    def channels_url(hub: Hub, name: str, kernel_id: str) -> str:
        ws_base = hub.url.replace("http://", "ws://", 1)
        return f"{ws_base}/user/{name}/api/kernels/{kernel_id}/channels"

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute `code`; return its stdout. An exception in the kernel fails the test; a
        kernel whose channel closes (it or its server died) raises KernelDied, one that does not
        finish within `timeout` seconds NoReply."""
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": self.name,
                        "session": self.session,
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": False,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        out: list[str] = []
        error: dict[str, Any] | None = None
        replied = idle = False
        deadline = time.monotonic() + timeout
        self.ws.settimeout(timeout)
        while not (replied and idle):
            if time.monotonic() > deadline:
                raise NoReply(f"no execute_reply from {self.name}'s kernel in {timeout} s")
            try:
                raw = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                raise NoReply(
                    f"no execute_reply from {self.name}'s kernel in {timeout} s"
                ) from None
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as e:
                raise KernelDied(f"{self.name}'s kernel channel closed: {e!r}") from e
            if not raw:  # a close frame
                raise KernelDied(f"{self.name}'s kernel channel closed")
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                if msg.get("header", {}).get("msg_type") == "status" and msg["content"].get(
                    "execution_state"
                ) in ("dead", "restarting"):
                    raise KernelDied(f"{self.name}'s kernel is {msg['content']}")
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                out.append(content["text"])
            elif kind == "error":
                error = content
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        assert error is None, f"{error['ename']}: {error['evalue']}\n{''.join(out)}"
        return "".join(out)

    def run_json(self, code: str, timeout: float = 60) -> Any:
        """Execute `code`, whose last line of output is JSON; return it decoded."""
        return json.loads(self.run(code, timeout).strip().splitlines()[-1])

    def close(self) -> None:
        """Close the channel and shut the kernel down; quietly, if its server is gone."""
        try:
            self.ws.close()
            requests.delete(f"{self.base}/{self.id}", headers=self.headers, timeout=30)
        except (requests.RequestException, websocket.WebSocketException, OSError):
            pass

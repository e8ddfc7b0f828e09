"""Errors with two audiences: a sentence for the user, detail for the admin's log."""

from __future__ import annotations

from tornado import web


class PlacementError(web.HTTPError):
    """A spawn that cannot go ahead.

    `jupyterhub_message` (= the tornado log_message, which JupyterHub 5 shows in API errors) is
    the sentence for the user; `detail` is for the admin only and is logged by MLRPSpawner, never
    sent to the browser; `failure_reason` is a short label (``no-gpus``, ``bad-options``,
    ``account``, ``exited``…) for logs and metrics.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        detail: str = "",
        status_code: int = 400,
    ) -> None:
        super().__init__(status_code, "%s", message)
        self.jupyterhub_message = message
        self.jupyterhub_html_message: str | None = None
        self.failure_reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.jupyterhub_message

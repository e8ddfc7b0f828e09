"""Errors with two audiences: a sentence for the user, detail for the admin's log."""

from __future__ import annotations

from tornado import web


class PlacementError(web.HTTPError):
    """A spawn that cannot go ahead.

    JupyterHub shows `jupyterhub_message` to the user (spawn form, pending page, API body) and
    logs `log_message`; `failure_reason` is a short label (``no-gpus``, ``bad-options``,
    ``account``, ``exited``…) for logs and metrics.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        log_message: str | None = None,
        status_code: int = 400,
    ) -> None:
        super().__init__(status_code, "%s", log_message or message)
        self.jupyterhub_message = message
        self.jupyterhub_html_message: str | None = None
        self.failure_reason = reason

    def __str__(self) -> str:
        return self.jupyterhub_message

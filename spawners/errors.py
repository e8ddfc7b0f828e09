"""Errors with two audiences: a sentence for the user, detail for the admin's log.

A refusal the platform expects (no free GPU, a profile the person may not use, bad form values)
is logged once, as one INFO or WARNING line (:func:`log_refusal`); JupyterHub and Tornado log
the same failure again as ERRORs, one of them with a traceback, and :class:`QuietRefusals`
drops those repeats. Unexpected failures (status 500) are left alone: their traceback stays.
"""

from __future__ import annotations

import logging
from collections import deque

from tornado import web
from tornado.log import app_log, gen_log

# Refusals whose level says "someone should look" (capacity); the others are people's mistakes.
WARN_REASONS = frozenset({"no-gpus"})


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

    @property
    def expected(self) -> bool:
        """A refusal of the request (4xx), not a failure of the platform (5xx)."""
        return self.status_code < 500


class QuietRefusals(logging.Filter):
    """Drops the hub's repeats of a refusal that :func:`log_refusal` has logged already.

    A repeat is an ERROR or WARNING record that carries the refusal as its traceback
    (JupyterHub's "Failed to spawn single-user server with form") or states its sentence
    ("Error starting alice's server: <sentence>", Tornado's "400 POST …: <sentence>"). Only the
    sentences of the last `remember` refusals count, so the filter stays small.
    """

    def __init__(self, remember: int = 64) -> None:
        super().__init__()
        self.sentences: deque[str] = deque(maxlen=remember)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "mlrp_refusal", False):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PlacementError) and exc.expected:
            return False
        if not self.sentences:
            return True
        try:
            text = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: not ours to judge, keep it
            return True
        return not any(sentence in text for sentence in self.sentences)


_quiet = QuietRefusals()


def log_refusal(log: logging.Logger, server: str, error: PlacementError) -> None:
    """Log an expected refusal as one line, and keep the hub from logging it again."""
    # JupyterHub's handlers log through `log`, its User objects through Tornado's app_log, and
    # Tornado itself says "400 POST …: <sentence>" through gen_log.
    for logger in (log, app_log, gen_log):
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)
    _quiet.sentences.append(error.jupyterhub_message)
    level = logging.WARNING if error.failure_reason in WARN_REASONS else logging.INFO
    detail = f" [{error.detail}]" if error.detail else ""
    log.log(
        level,
        "Refused to start server %s (%s): %s%s",
        server,
        error.failure_reason,
        error.jupyterhub_message,
        detail,
        extra={"mlrp_refusal": True},
        stacklevel=2,  # the log names the spawner's line that refused, not this one
    )

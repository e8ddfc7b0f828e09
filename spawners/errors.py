"""Errors with two audiences: a sentence for the user, detail for the admin's log.

A refusal the platform expects (no free GPU, a profile the person may not use, bad form values)
is logged once, as one INFO or WARNING line (:func:`log_refusal`); JupyterHub and Tornado log
the same failure again as ERRORs, one of them with a traceback, and :class:`QuietRefusals`
drops those repeats. Unexpected failures (status 500) are left alone: their traceback stays.
"""

from __future__ import annotations

import logging
from collections import deque
from enum import StrEnum
from typing import TYPE_CHECKING

from tornado import web
from tornado.log import app_log, gen_log

# Refusals whose level says "someone should look" (capacity); the others are people's mistakes.
WARN_REASONS = frozenset({"no-gpus"})


class FailureReason(StrEnum):
    """Why a spawn failed: the fixed set of labels JupyterHub's spawn metrics
    (`jupyterhub_server_spawn_duration_seconds{reason=…}`) and our logs use."""

    NO_GPUS = "no-gpus"  # capacity: no free GPU now
    BAD_OPTIONS = "bad-options"  # the request does not fit the person's profiles
    IMPOSSIBLE = "impossible"  # can never run where asked (beyond a partition's limits)
    IMAGE = "image"  # the profile's image cannot run on those nodes (driver, platform)
    REJECTED = "rejected"  # the scheduler refused the submission
    CONFIG = "config"  # the deployment is wrong (a backend not installed…)
    ACCOUNT = "account"  # the person's Unix account is missing or could not be made
    EXITED = "exited"  # the server ended before it answered
    TIMEOUT = "timeout"  # it did not answer in time
    PORT = "port"  # someone else answered on its address
    UNREACHABLE = "unreachable"  # the hub cannot reach the node it runs on
    SCHEDULER = "scheduler"  # the scheduler did not answer
    INTERNAL = "internal"  # a bug


if TYPE_CHECKING:
    _SpawnFailure = web.HTTPError
else:
    try:  # JupyterHub 6: spawn failures with a reason label, no traceback in its log
        from jupyterhub.spawner import SpawnException as _SpawnFailure
    except ImportError:  # JupyterHub 5
        _SpawnFailure = web.HTTPError


class PlacementError(_SpawnFailure):
    """A spawn that cannot go ahead: JupyterHub's SpawnException where the hub has it (6.x),
    else a Tornado HTTPError with the same attributes.

    `jupyterhub_message` (also `message`, and the tornado log_message JupyterHub 5 shows in API
    errors) is the sentence for the user; `detail` is for the admin only and is logged by
    MLRPSpawner, never sent to the browser; `failure_reason` (also `reason`, JupyterHub 6's
    metrics label) is one of `FailureReason`.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        detail: str = "",
        status_code: int = 400,
    ) -> None:
        label = FailureReason(reason)  # ValueError for a label outside the fixed set
        web.HTTPError.__init__(self, status_code, "%s", message)
        self.message = message
        self.message_html = ""
        self.reason = str(label)
        self.jupyterhub_message = message
        self.jupyterhub_html_message: str | None = None
        self.failure_reason = str(label)
        self.detail = detail

    def __str__(self) -> str:
        return self.jupyterhub_message

    def get_message(self) -> str:
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

"""Expected refusals are one INFO/WARNING line in the hub log; unexpected failures keep their
traceback. JupyterHub's and Tornado's own lines are imitated here with their real loggers and
messages (user.py "Error starting …", pages.py "Failed to spawn … with form", Tornado's
"400 POST …"); tests/integration/test_spawn_form_page.py reads the log of a real hub."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado.log import app_log, gen_log
from traitlets.config import Config

from hub.storage import SQLRecords
from spawners.backends.local import LocalBackend
from spawners.errors import PlacementError, QuietRefusals, log_refusal
from spawners.spawner import MLRPSpawner

pytestmark = pytest.mark.unit

PROFILES = [
    {"slug": "cpu", "name": "CPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [0]},
    {"slug": "gpu", "name": "GPU", "image_env": "/opt/mlrp/venv", "gpu_choices": [1]},
]
HUB_LOG = logging.getLogger("test-hub")  # stands in for JupyterHub's application log


NO_GPUS = {"gpu_source": "config", "gpu_devices": [], "enforce_limits": False}


@pytest.fixture()
def spawner(tmp_path: Path) -> MLRPSpawner:
    records = SQLRecords.from_url(f"sqlite:///{tmp_path / 'mlrp.sqlite'}")
    user = SimpleNamespace(name="alice", groups=[], admin=False, url="/user/alice/")
    return MLRPSpawner(
        user=user,
        records=records,
        profiles=PROFILES,
        log_dir=str(tmp_path / "logs"),
        log=HUB_LOG,
        # no GPU: every GPU request is refused
        config=Config({"LocalBackend": NO_GPUS}),
    )


def hub_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the hub's and Tornado's loggers wrote (not the platform's start-up lines)."""
    return [r for r in caplog.records if not r.name.startswith("spawners")]


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, bool]]:
    return [(r.levelno, r.getMessage(), r.exc_info is not None) for r in hub_records(caplog)]


def what_jupyterhub_logs(error: BaseException) -> None:
    """The lines JupyterHub 5/6 and Tornado write when a start raises `error`."""
    try:
        raise error
    except BaseException as e:
        HUB_LOG.error("Failed to spawn single-user server with form", exc_info=True)
        app_log.error(f"Error starting alice's server: {e}")
        gen_log.warning("400 POST /hub/api/users/alice/server (127.0.0.1): %s", e)
        HUB_LOG.error("Previous spawn for %s failed: %s", "alice", e)


def test_no_free_gpu_on_the_form_is_one_warning(
    spawner: MLRPSpawner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(PlacementError) as refused:
        spawner.options_from_form({"profile": ["gpu"]})
    what_jupyterhub_logs(refused.value)
    assert lines(caplog) == [
        (
            logging.WARNING,
            f"Refused to start server alice (no-gpus): {refused.value.jupyterhub_message}",
            False,
        )
    ]
    assert hub_records(caplog)[0].module == "spawner", "the line names where the refusal happened"


async def test_bad_options_through_the_api_are_one_info_line(
    spawner: MLRPSpawner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spawner.user_options = {"profile": "nope"}
    with pytest.raises(PlacementError) as refused:
        await spawner.start()
    what_jupyterhub_logs(refused.value)
    assert lines(caplog) == [
        (
            logging.INFO,
            "Refused to start server alice (bad-options): There is no profile 'nope' for you. "
            "Pick one of: cpu, gpu.",
            False,
        )
    ]


async def test_an_unexpected_error_keeps_its_traceback(
    spawner: MLRPSpawner, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(LocalBackend, "precheck", classmethod(broken))
    spawner.user_options = {"profile": "cpu"}
    log_refusal(HUB_LOG, "bob", PlacementError("No GPU.", reason="no-gpus"))  # filter installed
    caplog.clear()
    with pytest.raises(PlacementError) as failed:
        await spawner.start()
    assert failed.value.status_code == 500 and not failed.value.expected
    what_jupyterhub_logs(failed.value)
    ours, *theirs = hub_records(caplog)
    assert ours.levelno == logging.ERROR and ours.exc_info is not None
    assert "disk on fire" in str(ours.exc_info[1])
    assert [r.getMessage() for r in theirs] == [
        "Failed to spawn single-user server with form",
        f"Error starting alice's server: {failed.value}",
        f"400 POST /hub/api/users/alice/server (127.0.0.1): {failed.value}",
        f"Previous spawn for alice failed: {failed.value}",
    ], "JupyterHub's own lines about an unexpected failure are all kept"


def test_filter_keeps_what_is_not_a_repeat() -> None:
    quiet = QuietRefusals(remember=2)
    sentence = "All 4 GPUs on this server are in use right now."
    quiet.sentences.append(sentence)

    def record(level: int, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
        exc_info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("JupyterHub", level, __file__, 1, msg, (), exc_info)

    assert not quiet.filter(record(logging.ERROR, f"Error starting alice's server: {sentence}"))
    assert not quiet.filter(
        record(logging.ERROR, "Failed", PlacementError("other", reason="bad-options"))
    )
    assert quiet.filter(record(logging.INFO, f"alice: {sentence}")), "INFO lines are kept"
    assert quiet.filter(record(logging.ERROR, "Error starting bob's server: disk on fire"))
    internal = PlacementError("internal", reason="internal", status_code=500)
    assert quiet.filter(record(logging.ERROR, "Failed", internal)), "a 500 keeps its traceback"
    assert quiet.filter(record(logging.ERROR, "Failed", RuntimeError("boom")))
    bad_args = logging.LogRecord("JupyterHub", logging.ERROR, __file__, 1, "%s %s", ("x",), None)
    assert quiet.filter(bad_args), "a record that cannot be formatted is not the filter's to drop"
    quiet.sentences.extend(
        ["First other refusal.", "Second other refusal."]
    )  # only the latest `remember` sentences are kept
    assert quiet.filter(record(logging.ERROR, f"Error starting alice's server: {sentence}"))

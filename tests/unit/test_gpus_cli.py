"""`mlrp gpus` and `mlrp gpus --json` on a throw-away data dir with a configured 2-GPU inventory:
the holder of a lease, usage from NVML (tests/fake_nvml.py: no driver here) or "n/a (no NVML)"
(the real pynvml here, which finds no driver), and usage errors as a sentence.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_nvml import FakeGPU, FakeProcess, fake_pynvml
from harness import run_mlrp

from hub.cli import main
from hub.storage import SQLRecords, sqlite_url
from spawners.gpus import read_usage

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "single-node.yaml"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """single-node.yaml with GPUs 0 and 1 configured, GPU 1 leased to alice."""
    monkeypatch.delenv("MLRP_DB_URL", raising=False)
    monkeypatch.delenv("MLRP_CONFIG", raising=False)
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    data["hub"]["data_dir"] = str(tmp_path / "data")
    data["gpus"] = {"source": "config", "devices": ["0", "1"]}
    path = tmp_path / "mlrp.yaml"
    path.write_text(yaml.safe_dump(data))
    (tmp_path / "data").mkdir(mode=0o700)
    records = SQLRecords.from_url(sqlite_url(tmp_path / "data"))
    assert records.lease_gpus("alice/", socket.gethostname(), ["1"], 1) == ["1"]
    return path


def gpus(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["gpus", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_without_nvml_the_use_column_says_so(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if read_usage().state == "ok":
        pytest.skip("NVML works on this machine")
    code, out, err = gpus(capsys, "--config", str(config))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["GPU", "HOLDER", "PROFILE", "SINCE", "FOR", "USE"]
    assert lines[1].split() == ["0", "free", "-", "-", "-", "n/a", "(no", "NVML)"]
    assert lines[2].split()[:2] == ["1", "alice"] and lines[2].endswith("n/a (no NVML)")
    assert lines[3].startswith("No utilisation, memory or processes: ")
    assert lines[-1] == "1 of 2 GPU(s) leased"
    assert max(map(len, lines)) <= 80


def test_with_nvml_each_gpu_shows_its_use(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_pynvml(
        [
            FakeGPU("GPU-a", minor=0, utilization=0),
            FakeGPU(
                "GPU-b",
                minor=1,
                utilization=93,
                memory_used_mib=40960,
                processes=(FakeProcess(os.getpid(), 40000),),
            ),
        ]
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    code, out, _ = gpus(capsys, "--config", str(config))
    assert code == 0
    lines = out.splitlines()
    assert lines[1].endswith("0%, 0.0 / 79.6 GiB")
    assert lines[2].split()[:2] == ["1", "alice"] and lines[2].endswith("93%, 40.0 / 79.6 GiB")
    assert lines[3].strip().startswith(f"processes: root (pid {os.getpid()}, 39.1 GiB)")
    assert fake.lifecycle == ["init", "shutdown"]


def test_json_for_scripts(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gpus(capsys, "--config", str(config), "--json")
    assert (code, err) == (0, "")
    view = json.loads(out)
    assert view["node"] == socket.gethostname()
    assert [(g["gpu"], g["holder"]) for g in view["gpus"]] == [("0", "free"), ("1", "alice")]
    assert view["gpus"][1]["since"].endswith("+00:00")  # UTC, whatever the admin's zone
    assert view["servers"] == [
        {
            "user": "alice",
            "server": "",
            "holder": "alice",
            "gpus": ["1"],
            "since": view["gpus"][1]["since"],
            "profile": "",
        }
    ]
    if view["nvml"]["state"] != "ok":
        assert {g["usage_note"] for g in view["gpus"]} == {"n/a (no NVML)"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--json=yes"], "argument --json: ignor"),  # "ignored"/"ignoring", by Python release
        (["--jsno"], "unrecognized arguments: --jsno"),
        (["json"], "unrecognized arguments: json"),
        (["--config"], "argument --config: expected one argument"),
    ],
)
def test_bad_usage_is_a_sentence(argv: list[str], expected: str) -> None:
    result = run_mlrp("gpus", *argv, timeout=60)
    assert result.returncode == 2
    assert expected in result.stderr and "(see mlrp --help)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_config_that_does_not_exist_is_a_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, err = gpus(capsys, "--json", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and out == ""
    assert err.startswith("mlrp: ") and "nope.yaml" in err and "Traceback" not in err

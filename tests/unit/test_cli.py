"""The `mlrp` command: usage errors, `mlrp user …` on a throw-away data dir, and `mlrp doctor`.

Exit status: 0 ok, 1 doctor found a missing must-have, 2 bad input. Every config points
hub.data_dir under tmp_path, so nothing touches /var/lib/mlrp.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import run_mlrp

from hub import accounts, doctor
from hub.cli import main
from hub.storage import SQLRecords, sqlite_url
from spawners.gpus import discover_nvml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "examples" / "single-node.yaml"
NAME_RULE = (
    "is not a valid user name: use 1-64 lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit."
)
needs_no_nvml = pytest.mark.skipif(discover_nvml() is not None, reason="NVML present")


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """single-node.yaml with its data dir under tmp_path and `sections` merged in."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["hub"]["data_dir"] = str(tmp_path / "data")
    for key, values in sections.items():
        data[key].update(values)
    path = tmp_path / "mlrp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLRP_DB_URL", raising=False)
    monkeypatch.delenv("MLRP_CONFIG", raising=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def mlrp(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The checkout's `mlrp` in a subprocess, as an admin runs it."""
    return run_mlrp(*argv, stdin=stdin, timeout=60)


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def users(capsys: pytest.CaptureFixture[str], config: Path) -> list[str]:
    assert main(["user", "list", "--config", str(config)]) == 0
    return capsys.readouterr().out.split()


# --- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "the following arguments are required: command"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["user"], "the following arguments are required: action"),
        (["user", "add"], "the following arguments are required: NAME"),
        (["config", "check"], "the following arguments are required: file"),
        (["doctor", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2_without_traceback(argv: list[str], expected: str) -> None:
    result = mlrp(*argv)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: mlrp")
    assert expected in result.stderr
    assert "(see mlrp --help)" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_usage_errors_in_process_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: mlrp" in capsys.readouterr().err


def test_help_lists_the_commands() -> None:
    result = mlrp("--help")
    assert result.returncode == 0
    for command in ("up", "doctor", "config", "user"):
        assert command in result.stdout


# --- mlrp user ---------------------------------------------------------------------------------


def test_add_list_passwd_remove(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    cfg = str(config)
    assert users(capsys, config) == []

    code, out, err = run(capsys, monkeypatch, "user", "add", "alice", "--config", cfg)
    assert (code, err) == (0, "")
    match = re.fullmatch(r"Created alice\. Password: (\S{16})\n", out)
    assert match, out
    records = SQLRecords.from_url(sqlite_url(config.parent / "data"))
    assert accounts.check_login(records, "alice", match.group(1))

    code, out, _ = run(
        capsys,
        monkeypatch,
        *("user", "add", "bob.smith", "--config", cfg, "--password-stdin"),
        stdin="correct horse battery\n",
    )
    assert (code, out) == (0, "Created bob.smith.\n")  # a given password is not printed
    assert users(capsys, config) == ["alice", "bob.smith"]
    assert accounts.check_login(records, "bob.smith", "correct horse battery")

    code, out, _ = run(
        capsys,
        monkeypatch,
        *("user", "passwd", "alice", "--config", cfg, "--password-stdin"),
        stdin="a new long password\n",
    )
    assert (code, out) == (
        0,
        "Changed the password of alice; their other sessions ended and 0 token(s) were revoked.\n",
    )
    assert accounts.check_login(records, "alice", "a new long password")
    assert not accounts.check_login(records, "alice", match.group(1))

    code, out, _ = run(capsys, monkeypatch, "user", "remove", "alice", "--config", cfg)
    assert code == 0
    assert out == (
        "Removed alice: servers stopped and GPUs freed, sessions and tokens revoked, login and "
        "group memberships deleted.\n"
    )
    assert users(capsys, config) == ["bob.smith"]
    assert not accounts.check_login(records, "alice", "a new long password")


def test_data_dir_is_private(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    run(capsys, monkeypatch, "user", "list", "--config", str(config))
    data = config.parent / "data"
    assert (data / "mlrp.sqlite").is_file()
    assert data.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "name",
    [
        "Bad Name",
        "../x",
        "",
        "Alice",
        "x;rm",
        "a" * 65,
        ".hidden",
        "ü",
        "alice\n",
    ],
)
def test_bad_names_are_refused_and_nothing_is_created(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path, name: str
) -> None:
    code, out, err = run(
        capsys,
        monkeypatch,
        *("user", "add", name, "--config", str(config), "--password-stdin"),
        stdin="a long enough password\n",
    )
    assert code == 2
    assert out == ""
    assert err == f"mlrp: {name!r} {NAME_RULE}\n"
    assert users(capsys, config) == []


def test_bad_name_in_a_subprocess_has_no_traceback(config: Path) -> None:
    result = mlrp("user", "add", "../x", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert NAME_RULE in result.stderr
    assert mlrp("user", "list", "--config", str(config)).stdout == ""


@pytest.mark.parametrize("password", ["short", "123456789", ""])
def test_short_or_empty_password_is_refused(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    password: str,
) -> None:
    code, out, err = run(
        capsys,
        monkeypatch,
        *("user", "add", "alice", "--config", str(config), "--password-stdin"),
        stdin=password + "\n",
    )
    assert code == 2
    assert out == ""
    if password:
        assert err == "mlrp: The password must have at least 10 characters.\n"
    else:
        assert err == "mlrp: --password-stdin was given but standard input was empty.\n"
    assert users(capsys, config) == []


def test_min_password_length_comes_from_the_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_config(tmp_path, login={"min_password_length": 20})
    argv = ("user", "add", "alice", "--config", str(config), "--password-stdin")
    code, _, err = run(capsys, monkeypatch, *argv, stdin="fifteen chars..\n")
    assert code == 2
    assert "at least 20 characters" in err
    assert run(capsys, monkeypatch, *argv, stdin="twenty-one characters\n")[0] == 0


def test_add_twice(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    argv = ("user", "add", "alice", "--config", str(config))
    assert run(capsys, monkeypatch, *argv)[0] == 0
    code, out, err = run(capsys, monkeypatch, *argv)
    assert code == 2
    assert out == ""
    assert err == (
        "mlrp: alice already has a login; use `mlrp user passwd alice` for a new password.\n"
    )
    assert users(capsys, config) == ["alice"]


def test_passwd_of_a_missing_user(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    code, out, err = run(capsys, monkeypatch, "user", "passwd", "bob", "--config", str(config))
    assert code == 2
    assert out == ""
    assert err == "mlrp: There is no login account 'bob'; use `mlrp user add bob`.\n"
    assert users(capsys, config) == []


def test_remove_a_missing_user(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    code, _, err = run(capsys, monkeypatch, "user", "remove", "bob", "--config", str(config))
    assert code == 2
    assert err == "mlrp: There is no user 'bob'.\n"


def test_user_commands_refuse_a_bad_config(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub: {port: eighty}\nprofiles: [{slug: cpu, name: CPU}]\n")
    code, out, err = run(capsys, monkeypatch, "user", "list", "--config", str(bad))
    assert code == 2
    assert out == ""
    assert "hub.port: Input should be a valid integer" in err
    code, _, err = run(capsys, monkeypatch, "user", "list", "--config", str(tmp_path / "no.yaml"))
    assert code == 2
    assert "file not found" in err


def test_config_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, config: Path
) -> None:
    monkeypatch.setenv("MLRP_CONFIG", str(config))
    assert run(capsys, monkeypatch, "user", "add", "carol")[0] == 0
    assert users(capsys, config) == ["carol"]


# --- mlrp doctor -------------------------------------------------------------------------------


def doctor_row(output: str, name: str) -> str:
    rows = [line for line in output.splitlines() if re.match(rf"^\S+\s+{re.escape(name)}\s", line)]
    assert len(rows) == 1, output
    return rows[0]


@needs_no_nvml
def test_doctor_with_nvml_required_fails_with_a_fix(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        hub={"proxy_command": ["/bin/true"]},
        gpus={"source": "nvml"},
        accounts={"mode": "single-user"},
    )
    result = mlrp("doctor", "--config", str(config))
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert doctor_row(result.stdout, "GPUs usable").startswith("MISSING")
    assert f"fix: {doctor.NVML_REQUIRED_FIX}" in result.stdout.splitlines()
    assert result.stdout.rstrip().endswith("1 required check failed: GPUs usable.")


@needs_no_nvml
def test_doctor_with_auto_gpus_warns_and_passes(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, hub={"proxy_command": ["/bin/true"]}, accounts={"mode": "single-user"}
    )
    result = mlrp("doctor", "--config", str(config))
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stderr
    assert doctor_row(result.stdout, "GPUs usable").startswith("WARN")
    assert doctor_row(result.stdout, "Proxy binary").startswith("OK")
    assert f"fix: {doctor.NO_GPUS_FIX}" in result.stdout.splitlines()
    assert result.stdout.rstrip().endswith("All required checks passed.")
    assert not (tmp_path / "data").exists()  # doctor only looks


def test_doctor_with_a_missing_proxy_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, hub={"proxy_command": [str(tmp_path / "no-such-proxy")]})
    result = mlrp("doctor", "--config", str(config))
    assert result.returncode == 1
    assert doctor_row(result.stdout, "Proxy binary").startswith("MISSING")
    assert f"fix: {doctor.PROXY_FIX}" in result.stdout.splitlines()


def test_doctor_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles: [{slug: cpu, name: CPU, gpu: 1}]\n")
    result = mlrp("doctor", "--config", str(bad))
    assert result.returncode == 2
    assert "profiles[0].gpu: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


# --- mlrp config example, and the doctor's hub and lease rows ---------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["config"], "the following arguments are required: config_command"),
        (["config", "example", "extra"], "unrecognized arguments: extra"),
        (["config", "exmaple"], "invalid choice: 'exmaple'"),
    ],
)
def test_config_usage_errors_exit_2(argv: list[str], expected: str) -> None:
    result = mlrp(*argv)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_config_example_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, monkeypatch, "config", "example")
    assert (code, err) == (0, "")
    assert out == EXAMPLE.read_text()


def test_doctor_shows_the_hub_stopped_and_the_leases_held(tmp_path: Path) -> None:
    import socket

    from spawners.records import held_owner

    config = write_config(
        tmp_path, hub={"proxy_command": ["/bin/true"]}, accounts={"mode": "single-user"}
    )
    data = tmp_path / "data"
    data.mkdir()
    records = SQLRecords.from_url(sqlite_url(data))
    records.lease_gpus(held_owner("mlrp-alice"), socket.gethostname(), ["3"], 1)
    result = mlrp("doctor", "--config", str(config))
    assert result.returncode == 0, result.stdout  # neither is a missing must-have
    assert doctor_row(result.stdout, "Hub").startswith("WARN")
    assert f"not running (no {data}/jupyterhub.pid)" in doctor_row(result.stdout, "Hub")
    leases = doctor_row(result.stdout, "GPU leases")
    assert leases.startswith("WARN") and leases.endswith(
        "1 GPU leased, 1 of them held for a stopped server's leftovers"
    )
    assert "GPU 3: held: leftovers of mlrp-alice, since " in result.stdout
    assert f"fix: {doctor.HELD_FIX}" in result.stdout.splitlines()

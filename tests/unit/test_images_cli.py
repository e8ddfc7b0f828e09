"""`mlrp images`: list, show, check and build, with bad input answered in sentences."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from hub.cli import main
from images.build import (
    BuildError,
    build_container,
    build_environment,
    container_tag,
    runs_for_everyone,
)
from images.catalog import load

pytestmark = pytest.mark.unit


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["images", *argv])
    except SystemExit as e:  # argparse's own refusals
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_list_names_every_image(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ACCELERATOR", "CUDA"]
    assert [line.split()[0] for line in lines[1:]] == list(load().images)
    assert "cuda-jax      nvidia       12.9" in out


def test_show_gives_frameworks_cuda_and_driver(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "cuda-pytorch")
    assert code == 0
    assert "CUDA runtime 12.4: needs NVIDIA driver 550.54.14+" in out
    assert "frameworks: torch 2.6.0" in out
    assert "container base: docker.io/library/python:3.11-slim-bookworm@sha256:" in out


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (("show", "cuda-ful"), "mlrp: There is no image 'cuda-ful' in the catalog; did you mean"),
        (("show", "zzz"), "mlrp: There is no image 'zzz' in the catalog; images: course-cpu,"),
        (("check", "--driver", "5.5"), "mlrp: --driver '5.5' is not an NVIDIA driver version"),
        (("check", "--gpus", "-1"), "mlrp: --gpus must be between 0 and 64; got -1."),
        (("build", "mlx", "--as", "container"), "mlrp: The image mlx is not built as container;"),
        (("build", "mlx", "--as", "env"), "mlrp: The image mlx is for macos-arm64; build its"),
        (
            ("build", "course-cpu", "--as", "env", "--prefix", "rel/dir"),
            "mlrp: --prefix must be an absolute path; got rel/dir",
        ),
        (("build", "course-cpu", "--as", "vm"), "argument --as: invalid choice: 'vm'"),
        (("build", "course-cpu"), "the following arguments are required: --as"),
    ],
)
def test_bad_input_is_a_sentence(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], sentence: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert sentence in err, err


def test_a_broken_catalog_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "catalog.yaml"
    bad.write_text("version: 1\nbase: {}\nstack: {jupyterhub: 6.1.1}\nimages: {}\n")
    code, _, err = run(capsys, "list", "--catalog", str(bad))
    assert code == 2
    assert f"mlrp: {bad} is not a valid image catalog:" in err
    assert "base.image: required key is missing" in err


def test_apptainer_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "build", "course-cpu", "--as", "apptainer", "--prefix", "/x/c.sif")
    assert code == 0
    assert "Apptainer is not installed on this machine" in out
    assert "apptainer build /x/c.sif apptainer.def" in out
    assert "images/generated/course-cpu &&" in out


def test_check_for_a_given_driver(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--driver", "570.124.06", "--no-lint")
    assert (
        "this node: linux-x86_64, NVIDIA driver 570.124.06, CUDA up to 12.8 (from --driver)" in out
    )
    assert "  runs     cuda-pytorch: CUDA 12.4 on driver 570.124.06" in out
    assert "  refused  The image cuda-jax cannot run on this node: it ships CUDA 12.9" in out
    assert code == 0, out  # the shipped catalog, its generated files and locks are consistent


# -- building an environment, with the commands recorded ---------------------------------------
class Recorder:
    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_at = fail_at

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if argv[1:3] == ["-m", "venv"]:
            Path(argv[3], "bin").mkdir(parents=True)
        failed = self.fail_at == len(self.calls)
        return subprocess.CompletedProcess(argv, 1 if failed else 0, "", "boom" if failed else "")


def test_environment_build_installs_the_lock_with_hashes(tmp_path: Path) -> None:
    catalog, rec = load(), Recorder()
    prefix = tmp_path / "course"
    built = build_environment(catalog, "course-cpu", prefix, run=rec)
    venv, pip = rec.calls
    assert venv[1:] == ["-m", "venv", str(prefix)] and venv[0].endswith("python3.11")
    assert pip[:5] == [str(prefix / "bin" / "pip"), "install", "--no-cache-dir", "--no-deps"] + [
        "--require-hashes"
    ]
    assert pip[-1].endswith("images/generated/course-cpu/requirements.lock")
    assert built.where == str(prefix)
    assert (
        '"inputs": "' + catalog.inputs_digest("course-cpu")
        in (prefix / "mlrp-image.json").read_text()
    )
    # Built again from the same pins: nothing runs.
    again = Recorder()
    build_environment(catalog, "course-cpu", prefix, run=again)
    assert again.calls == []


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    prefix = tmp_path / "course"
    with pytest.raises(BuildError, match="Building course-cpu failed at `.*pip install") as e:
        build_environment(load(), "course-cpu", prefix, run=Recorder(fail_at=2))
    assert "boom" in str(e.value)
    assert not prefix.exists()


def test_a_foreign_directory_is_not_overwritten(tmp_path: Path) -> None:
    prefix = tmp_path / "data"
    prefix.mkdir()
    (prefix / "thesis.tex").write_text("years of work")
    with pytest.raises(BuildError, match="exists and is not an environment of course-cpu"):
        build_environment(load(), "course-cpu", prefix, run=Recorder())
    assert (prefix / "thesis.tex").read_text() == "years of work"


def test_a_python_only_root_can_enter_is_not_used() -> None:
    """A venv links to its base Python: one under /root (pyenv) would start for root only."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # pytest's own tmp is root-only
        _judge_paths(Path(tmp))


def _judge_paths(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "bin").mkdir(parents=True)
    python = private / "bin" / "python3.11"
    python.symlink_to("/usr/bin/python3.11")
    link = tmp_path / "python"
    link.symlink_to(python)
    assert runs_for_everyone(link)  # followed to /usr/bin/python3.11
    copy = private / "bin" / "python-copy"
    copy.write_text("#!/bin/sh\n")
    copy.chmod(0o755)
    tmp_path.chmod(0o755)
    assert runs_for_everyone(copy)
    private.chmod(0o700)
    assert not runs_for_everyone(copy)
    private.chmod(0o755)
    copy.chmod(0o750)
    assert not runs_for_everyone(copy)


def test_a_container_build_mounts_the_ca_for_the_build_only(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    seen: dict[str, str] = {}

    def engine(argv: list[str]) -> subprocess.CompletedProcess[str]:
        mount = argv[argv.index("--volume") + 1]
        src = mount.split(":")[0]
        seen["pip.conf"] = Path(src, "pip.conf").read_text()  # there while the build runs
        seen["ca"] = Path(src, "ca.pem").read_text()
        seen["mount"] = mount
        return subprocess.CompletedProcess(argv, 0, "", "")

    built = build_container(
        load(), "course-cpu", engine="sh", base="localhost/b", ca_bundle=ca, run=engine
    )
    argv = built.command
    assert argv[1:6] == ["build", "--network", "host", "-t", container_tag(load(), "course-cpu")]
    assert ["--build-arg", "BASE=localhost/b"] == argv[6:8]
    assert "PIP_CONFIG_FILE=/run/mlrp-build/pip.conf" in argv
    assert seen["mount"].endswith(":/run/mlrp-build:ro")
    assert seen["pip.conf"] == "[global]\ncert = /run/mlrp-build/ca.pem\n"
    assert seen["ca"] == ca.read_text()
    assert not Path(seen["mount"].split(":")[0]).exists()  # removed after the build
    assert argv[-1].endswith("images/generated/course-cpu")


def test_a_failed_container_build_is_a_sentence(tmp_path: Path) -> None:
    def engine(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 125, "", "Error: no such image localhost/x")

    with pytest.raises(BuildError, match="course-cpu failed:\nError: no such image"):
        build_container(load(), "course-cpu", engine="sh", run=engine)
    with pytest.raises(BuildError, match="The CA bundle /nope.pem does not exist"):
        build_container(load(), "course-cpu", engine="sh", ca_bundle=Path("/nope.pem"))
    with pytest.raises(BuildError, match="No container engine 'nerdctl-x' here"):
        build_container(load(), "course-cpu", engine="nerdctl-x")

"""`mlrp up` with a broken deployment file stops before touching anything: exit 2, a message
naming the key, no traceback, no data directory, no database."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_mlrp

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("profiles:\n  - slug: cpu\n    name: CPU\n    gpu: 1\n", "profiles[0].gpu: unknown key"),
        ("profiles:\n  - slug: cpu\n    name: CPU\n    gpus: 9\n", "this node has 0"),
        ("profiles: [\n", "line 4, column 1"),
        ("  port: eighty\nprofiles: [{slug: cpu, name: CPU}]\n", "hub.port: Input should be"),
    ],
)
def test_up_with_a_broken_file_changes_nothing(tmp_path: Path, body: str, expected: str) -> None:
    data = tmp_path / "data"
    config = tmp_path / "mlrp.yaml"
    config.write_text(f"hub:\n  data_dir: {data}\n" + body)
    r = run_mlrp("up", "--config", str(config))
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
    assert not data.exists()

"""Benchmarks print their tables straight to the terminal, so CI logs carry the numbers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _show_output(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    with capsys.disabled():
        yield

"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import SimProcess, start_sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    """The simulated tenant ("test" scenario) in its own process, stopped after the test."""
    with start_sim(tmp_path, scenario="test") as process:
        yield process

"""Fixtures shared by the end-to-end tests, and the hypothesis profile CI runs with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.stack import SimProcess, start_sim

# In CI the property tests draw the same examples every run, so a submission that passed
# here passes there; a developer's run draws new ones and so keeps exploring. A failure
# prints the blob to reproduce it. No per-example deadline in CI, where three tests share
# two cores, nor under mutmut (`--hypothesis-profile=mutation`), whose trampolines slow
# every call: how fast the core is, is the benchmarks' business, not a test's.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("mutation", deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    """The simulated tenant ("test" scenario) in its own process, stopped after the test."""
    with start_sim(tmp_path, scenario="test") as process:
        yield process

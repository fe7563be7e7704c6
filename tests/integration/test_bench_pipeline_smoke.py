"""Smoke runs of the pipeline and ledger benchmarks, so that they cannot rot unnoticed.

Benchmarks are not part of the test run; these small runs go through the same code paths
(real sim, real collector process, real ledger on disk) and check that the figures are
sane and the outcome correct, never that the machine is fast enough.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import commit_bench, ledger_bench, pipeline

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("tenant_scale", [False, True], ids=["bare", "tenant-scale"])
def test_pipeline_smoke_delivers_every_event_once_and_reports_sane_figures(
    tmp_path: Path, tenant_scale: bool
) -> None:
    figures = pipeline.benchmark(
        events=5000,
        runs=1,
        results_dir=tmp_path,
        timeout=120.0,
        name="pipeline-smoke",
        tenant_scale=tenant_scale,
    )
    # benchmark() raises unless every generated event was received exactly once.
    assert figures["events"] > 4000
    assert figures["events_per_second"] > 0
    assert figures["fetch_events_per_second"] > 0
    assert figures["events_per_cpu_second"] > 0
    assert 0 < figures["cpu_seconds_per_100k"] < 1000
    assert 10e6 < figures["peak_rss_bytes"] < 2e9
    assert figures["ledger_bytes_per_million"] > 16e6  # at least the 16-byte keys themselves
    table = (tmp_path / "pipeline-smoke.md").read_text(encoding="utf-8")
    assert "events delivered (each exactly once)" in table
    assert f"{int(figures['events']):,}" in table


def test_ledger_smoke_finds_every_refetched_event_and_shows_the_seed_growing(
    tmp_path: Path,
) -> None:
    figures = ledger_bench.benchmark(
        sizes=[1000, 20000],
        repeats=3,
        pages=3,
        seed_seconds=0.2,
        results_dir=tmp_path,
        name="ledger-smoke",
    )
    # benchmark() raises unless each page found exactly its re-fetched half.
    # Filled to 20000, then 3 rounds of 3 pages, then the holder's 3 pages, half new each.
    assert figures["entries_held"] == 20000 + (3 * 3 + 3) * ledger_bench.PAGE // 2
    assert figures["smallest_cost"] > 0
    # The seed's list scan is linear: twenty times the ids cost clearly more per lookup,
    # and the ledger's cost grows less than that in the same run.
    assert figures["seed_growth"] > 2
    assert figures["growth"] < figures["seed_growth"]
    assert figures["peak_rss_bytes"] > 10e6
    assert figures["disk_bytes_per_million"] > 16e6


def test_both_commands_have_a_smoke_mode(tmp_path: Path) -> None:
    for module, table in (
        ("bench.ledger_bench", "ledger-smoke"),
        ("bench.pipeline", "pipeline-smoke"),
    ):
        completed = subprocess.run(
            [sys.executable, "-m", module, "--smoke", "--results-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        written = (tmp_path / f"{table}.md").read_text(encoding="utf-8")
        assert written.startswith("| ")
        assert written in completed.stdout


def test_commit_smoke_measures_both_settings(tmp_path: Path) -> None:
    figures = commit_bench.benchmark(5, 1, tmp_path, "commit-smoke")
    assert set(figures) == {"normal", "full"}
    assert "FULL (shipped)" in (tmp_path / "commit-smoke.md").read_text(encoding="utf-8")

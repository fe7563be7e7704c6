"""The completeness benchmark in small: its model behaves as Graph does, and its verdicts follow.

The real collector must lose and duplicate nothing on a small volume; the designs the
benchmark exists to expose must show their flaw (non-overlapping windows and a 30 s delay
lose late events). Nothing here is a recorded figure: every expectation is a consequence of
the model's semantics.
"""

from __future__ import annotations

import itertools
import re
import threading
from pathlib import Path

import pytest

from bench.completeness import main, run_one
from bench.model import PROFILES, US, BenchClock, Events, GraphModel, Throttle, TurnClock

SMALL = 100_000
QUARTER_DAY = 0.25


@pytest.fixture(scope="module")
def heavy_tail() -> Events:
    return Events(SMALL, QUARTER_DAY, PROFILES["b"], seed=11, drain=3600.0)


def _all_pages(api: GraphModel, clock: BenchClock, ge_us: int) -> list[list[int]]:
    reply = api.query(ge_us)
    pages = [reply.page]
    while reply.snapshot is not None:
        clock.advance(2.0)  # keep within the budget
        reply = api.follow(reply.snapshot)
        pages.append(reply.page)
    return pages


def test_model_pages_are_the_snapshot_newest_first_and_at_most_a_thousand() -> None:
    events = Events(SMALL, QUARTER_DAY, PROFILES["b"], seed=3)
    clock = BenchClock(events.start, events.end, threading.Event())
    clock.advance(4 * 3600)
    asof = clock.now()
    api = GraphModel(events, clock.now)
    ge_us = round((asof - 3 * 3600) * US)
    pages = _all_pages(api, clock, ge_us)
    flat = [index for page in pages for index in page]
    expected = [
        i
        for i in range(len(events) - 1, -1, -1)
        if events.times[i] >= ge_us and events.available[i] <= asof
    ]
    assert flat == expected, "pages must hold exactly what was visible at the first page"
    assert all(0 < len(page) <= 1000 for page in pages)
    assert len(pages) > 2
    assert all(events.times[a] > events.times[b] for a, b in itertools.pairwise(flat))
    assert any(events.available[i] > asof for i in range(len(events)) if events.times[i] >= ge_us)


def test_model_throttles_the_sixth_request_in_ten_seconds_without_charging_it() -> None:
    events = Events(SMALL, QUARTER_DAY, PROFILES["a"], seed=3)
    clock = BenchClock(events.start, events.end, threading.Event())
    clock.advance(3600)
    api = GraphModel(events, clock.now)
    replies = [api.query(round((clock.now() - 600) * US)) for _ in range(5)]
    assert [reply.status for reply in replies] == [200] * 5
    throttled = api.query(0)
    assert throttled.status == 429 and 0 < throttled.retry_after <= 10
    clock.advance(throttled.retry_after)
    assert api.query(0).status == 200, "a 429 must not have consumed the budget"


def test_sources_sharing_a_throttle_share_its_five_requests() -> None:
    clock = BenchClock(0.0, 100.0, threading.Event())
    first = Events(SMALL, 0.05, PROFILES["a"], seed=3)
    second = Events(SMALL, 0.05, PROFILES["a"], seed=4)
    throttle = Throttle(clock.now)
    apis = [GraphModel(events, clock.now, throttle=throttle) for events in (first, second)]
    statuses = [apis[i % 2].query(0).status for i in range(6)]
    assert statuses == [200] * 5 + [429]
    assert (apis[0].ok, apis[1].ok, apis[1].throttled) == (3, 2, 1), "counted per source"


def test_turn_clock_runs_one_thread_at_a_time_in_wake_up_order() -> None:
    stop = threading.Event()
    clock = TurnClock(0.0, 10.0, stop)
    seen: list[tuple[str, float]] = []

    def body(name: str, step: float) -> None:
        while not clock.sleep(step):
            seen.append((name, clock.now()))

    clock.run([lambda: body("a", 3.0), lambda: body("b", 2.0)])
    assert seen == [
        ("b", 2.0),
        ("a", 3.0),
        ("b", 4.0),
        ("a", 6.0),  # a tie goes to the sleep asked first
        ("b", 6.0),
        ("b", 8.0),
        ("a", 9.0),
    ]
    assert stop.is_set() and clock.now() == 10.0


def test_events_are_deterministic_per_seed_and_ids_invert() -> None:
    first = Events(SMALL, 0.05, PROFILES["c"], seed=5)
    again = Events(SMALL, 0.05, PROFILES["c"], seed=5)
    assert first.times == again.times and first.available == again.available
    assert all(first.index_of(first.event_id(i)) == i for i in range(0, len(first), 97))
    assert len({first.event_id(i) for i in range(len(first))}) == len(first)


@pytest.mark.slow
def test_ours_loses_and_duplicates_nothing_on_a_small_volume() -> None:
    events = Events(SMALL, QUARTER_DAY, PROFILES["a"], seed=11, drain=3600.0)
    outcome = run_one(events, "100k", "ours")
    assert outcome.eligible > 1000
    assert outcome.missing == 0, outcome
    assert outcome.duplicates == 0, outcome
    assert outcome.unique >= outcome.eligible
    assert outcome.latency_p50 is not None and outcome.latency_p50 <= 60.0


def test_non_overlapping_windows_and_a_short_delay_lose_late_events(heavy_tail: Events) -> None:
    nonoverlap = run_one(heavy_tail, "100k", "nonoverlap")
    halfopen = run_one(heavy_tail, "100k", "halfopen")
    assert nonoverlap.never_delivered > 0 and nonoverlap.duplicates == 0
    assert halfopen.never_delivered > 0 and halfopen.duplicates == 0
    assert nonoverlap.unique + nonoverlap.never_delivered >= nonoverlap.eligible


def test_the_command_writes_one_table_per_volume(tmp_path: Path) -> None:
    status = main(
        [
            "--smoke",
            "--days",
            "0.1",
            "--profiles",
            "a,c",
            "--strategies",
            "nonoverlap,checkpoint",
            "--results-dir",
            str(tmp_path),
        ]
    )
    assert status == 0
    table = (tmp_path / "completeness-100k-smoke.md").read_text(encoding="utf-8")
    rows = [
        line for line in table.splitlines() if line.startswith("| a |") or line.startswith("| c |")
    ]
    assert len(rows) == 4
    assert "Targets for ours" in table


@pytest.mark.slow
def test_the_combined_command_scores_each_source_on_one_budget(tmp_path: Path) -> None:
    args = ["--mix", "20k,100k,20k,2k", "--smoke", "--days", "0.05", "--drain", "900"]
    assert main([*args, "--profiles", "a", "--results-dir", str(tmp_path)]) == 0
    table = (tmp_path / "completeness-combined-smoke.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| a |")]
    names = [cells[1] for cells in rows]
    assert names == [
        "interactive",
        "noninteractive",
        "serviceprincipal",
        "directoryaudits",
        "**all**",
    ]
    missing, duplicates, requests = (rows[-1][i] for i in (4, 5, 6))
    assert (missing, duplicates) == ("0", "0"), table
    per_source = sum(int(cells[6]) for cells in rows[:-1])
    assert per_source == int(requests) <= 5 * (0.05 * 86_400 + 900) / 10, "one budget for all"
    assert "Physical ceiling" in table
    sent, planned = _fresh_sent_and_planned(table, "noninteractive")
    assert 0.5 * planned <= sent <= 1.5 * planned, (sent, planned)


def _fresh_sent_and_planned(table: str, source: str) -> tuple[int, float]:
    """The fresh tier's requests and what its plans priced, from the requests-by-tier lines."""
    line = next(line for line in table.splitlines() if line.startswith(f"- {source}: fresh "))
    match = re.match(r"- \w+: fresh (\d+) \(([\d,]+)\)", line)
    assert match is not None, line
    return int(match[1]), float(match[2].replace(",", ""))

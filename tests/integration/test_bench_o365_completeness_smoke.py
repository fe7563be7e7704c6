"""The Management Activity completeness benchmark in small: its model keeps the API's rules,
ours (the shipped source, loop and ledger) loses and duplicates nothing, and the peers'
designs show their flaws.

Nothing here is a recorded figure: every expectation follows from the model's semantics
(records in two blobs; blobs listed long after their contentCreated).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.completeness import main
from bench.o365_completeness import Outcome, run_volume
from bench.o365_model import BUDGET, DAY, LISTING_PAGE, Feed, ManagementModel
from bench.o365_strategies import STRATEGIES
from exporter.clock import ManualClock

HOUR = 3600.0


@pytest.fixture(scope="module")
def feed() -> Feed:
    return Feed(20_000, 1.0, seed=5)


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    return {o.strategy: o for o in run_volume("20k", 0.25, HOUR, 11, list(STRATEGIES))}


def test_records_are_visible_30_min_to_3_days_late_and_some_sit_in_two_blobs(feed: Feed) -> None:
    lateness = [v - c for v, c in zip(feed.visible, feed.created, strict=True)]
    assert min(lateness) >= 0.5 * HOUR
    assert max(lateness) <= 3 * DAY
    assert max(lateness) > DAY, "some records must be more than a day late"
    copies = sum(len(records) for records in feed.blob_records)
    assert copies > len(feed), "some records must be carried by two blobs"


def test_listing_windows_pages_and_the_budget_follow_the_api(feed: Feed) -> None:
    clock = ManualClock(feed.start + 2 * DAY)
    api = ManagementModel(feed, clock.now)
    now = clock.now()
    assert api.list(now - DAY - 1, now).code == "AF20055", "a window over 24 h"
    assert api.list(now - 8 * DAY, now - 7.5 * DAY).code == "AF20055", "over 7 days back"
    listed, offset = [], 0
    while True:
        page = api.list(now - DAY, now, offset)
        assert page.status == 200 and len(page.blobs) <= LISTING_PAGE
        listed.extend(page.blobs)
        if page.next_offset is None:
            break
        offset = page.next_offset
    assert listed == sorted(listed) and len(listed) > LISTING_PAGE
    assert all(feed.blob_listable[n] <= now for n in listed)
    assert any(
        feed.blob_listable[n] > now and now - DAY <= feed.blob_created(n) < now
        for n in range(feed.blobs)
    ), "the listing lags: some blobs of the window are not listable yet"
    for _ in range(BUDGET[0] - api.requests):
        assert api.fetch(listed[0]).status == 200
    throttled = api.fetch(listed[0])
    assert (throttled.status, throttled.code) == (403, "AF429")
    clock.advance(BUDGET[1])
    assert api.fetch(listed[0]).status == 200, "an AF429 must not have consumed the budget"


@pytest.mark.slow
def test_ours_loses_and_duplicates_no_record(outcomes: dict[str, Outcome]) -> None:
    ours = outcomes["ours"]
    assert ours.eligible > 1000
    assert ours.missing == 0, ours
    assert ours.duplicates == 0, ours
    assert ours.stats.fetches <= outcomes["lookback24h"].stats.fetches, "each blob once"


@pytest.mark.slow
def test_the_peers_duplicate_records_in_two_blobs_and_a_cursor_loses_late_blobs(
    outcomes: dict[str, Outcome],
) -> None:
    assert outcomes["lookback24h"].duplicates > 0
    assert outcomes["cursor"].missing > 0


def test_the_command_writes_the_o365_table(tmp_path: Path) -> None:
    args = ["--api", "management_activity", "--smoke", "--days", "0.1", "--drain", "600"]
    status = main([*args, "--strategies", "lookback24h,cursor", "--results-dir", str(tmp_path)])
    assert status == 0
    table = (tmp_path / "completeness-o365-smoke.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| 20k |")]
    assert [cells[1] for cells in rows] == ["lookback24h", "cursor"]
    assert rows[0][6] == "1.00", "the baseline's ratio to itself"
    assert "Reproduce: `python -m bench.completeness --api management_activity" in table

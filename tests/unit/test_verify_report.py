"""The estimate verify gives before it starts, and the report it prints after."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from exporter.verify_compare import ApiEvent, LateArrivals, SourceResult
from exporter.verify_report import (
    CONFIRM_ABOVE,
    DAY,
    ExportSummary,
    SourceEstimate,
    describe_estimate,
    events_from_first_page,
    events_in,
    human_count,
    human_duration,
    human_rate,
    needs_confirmation,
    report_json,
    report_text,
    requests_for,
)


def test_the_issue_s_example_reads_as_promised() -> None:
    events = events_in(1_000_000, DAY, 30 * DAY)
    estimate = SourceEstimate("signins", events, requests_for(events, 1000), 5 / 10)
    sentence = describe_estimate([estimate], 30 * DAY, [human_rate(5, 10.0, 1.0)])
    assert sentence == (
        "30 days of signins at about 1M a day is about 30,000 requests: "
        "17 hours at 5 requests per 10 s"
    )
    assert needs_confirmation([estimate])


def test_the_share_slows_the_estimate_and_is_named() -> None:
    assert human_rate(5, 10.0, 0.1) == "0.5 requests per 10 s (10% of the budget)"
    fast = SourceEstimate("s", 1000, 10, 0.5)
    slow = SourceEstimate("s", 1000, 10, 0.05)
    assert slow.seconds == 10 * fast.seconds


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=1000))
def test_requests_cover_every_event_and_at_least_one_page(events: int, page_size: int) -> None:
    pages = requests_for(events, page_size)
    assert pages >= 1
    assert (pages - 1) * page_size < max(events, 1) <= pages * page_size


@given(st.floats(min_value=1, max_value=10 * 365 * DAY))
def test_confirmation_is_needed_exactly_above_the_threshold(seconds: float) -> None:
    estimate = SourceEstimate("s", 1.0, 1, 1 / seconds)
    assert needs_confirmation([estimate]) == (estimate.seconds > CONFIRM_ABOVE)


def test_first_page_estimate() -> None:
    assert events_from_first_page(40, 100.0, 50.0, 0.0, has_more=False) == 40
    # 100 events over 10 s, and 90 s more of the stretch to go back
    assert events_from_first_page(100, 100.0, 90.0, 0.0, has_more=True) == 1000


def test_people_words() -> None:
    assert [human_count(v) for v in (950, 20_000, 1_500_000, 12_000_000)] == [
        "950",
        "20k",
        "1.5M",
        "12M",
    ]
    assert [human_duration(s) for s in (1, 40, 720, 60_000, 10 * DAY)] == [
        "1 second",
        "40 seconds",
        "12 minutes",
        "17 hours",
        "10 days",
    ]


MISSING = ApiEvent(b"\x01" * 16, b"\x01" * 16, "id-1", 1_767_225_600.0)
RESULTS = [
    SourceResult("signins", 10, 10, 0, 9, 0, (MISSING,)),
    SourceResult("audits", 3, 3, 0, 3, 1, ()),
]
EXPORT = ExportSummary("siem.jsonl", "jsonl", 20, 7, 1, False)


def test_text_report_has_the_table_then_one_line_per_missing_event() -> None:
    text = report_text(0.0, 3600.0, RESULTS, EXPORT, None)
    lines = text.splitlines()
    assert lines[1].split("  ")[0] == "source"
    assert "missing from SIEM" in lines[1]
    assert lines[-1] == "id-1  2026-01-01T00:00:00.000Z  signins"
    assert "1 missing from the SIEM export" in text


def test_json_report_for_scripts() -> None:
    document = json.loads(report_json(0.0, 3600.0, RESULTS, EXPORT, 1))
    assert document["missing"] == [
        {"id": "id-1", "event_time": "2026-01-01T00:00:00.000Z", "source": "signins"}
    ]
    assert document["sources"][0]["missing_from_siem"] == 1
    assert document["sources"][1]["siem_not_in_api"] == 1
    assert document["export"]["elsewhere"] == 7 and document["delivered"] == 1


def test_without_an_export_the_siem_columns_are_blank_and_the_ledger_is_named() -> None:
    results = [SourceResult("signins", 2, 1, 1, None, None, (MISSING,))]
    text = report_text(0.0, 3600.0, results, None, None)
    assert "missing from the ledger" in text
    assert (
        json.loads(report_json(0.0, 3600.0, results, None, None))["sources"][0]["missing_from_siem"]
        is None
    )


def test_late_arrivals_are_a_column_with_unknown_shown_apart_never_as_on_time() -> None:
    results = [
        SourceResult("signins", 10, 10, 0, None, None, (), LateArrivals(4, 0, 60.0)),
        SourceResult("audits", 3, 3, 0, None, None, (), LateArrivals(1, 2, 300.0)),
        SourceResult("vendor", 5, None, None, 5, 0, ()),  # no ledger: nothing to tell
    ]
    lines = report_text(0.0, 3600.0, results, None, None).splitlines()
    assert lines[1].endswith("late arrivals")
    assert lines[2].split()[0] == "signins" and lines[2].endswith("  4")
    assert lines[3].split()[0] == "audits" and lines[3].endswith("  1 (+2 unknown)")
    assert lines[4].split()[0] == "vendor" and lines[4].endswith("  -")
    assert lines[5] == (
        "late arrivals: delivered, and first seen more than one poll interval after their "
        "event time (signins 60 s, audits 300 s); unknown: recorded before the ledger kept "
        "when (layout 2)"
    )
    rows = json.loads(report_json(0.0, 3600.0, results, None, None))["sources"]
    assert [(r["late_arrivals"], r["late_unknown"], r["late_after_seconds"]) for r in rows] == [
        (4, 0, 60.0),
        (1, 2, 300.0),
        (None, None, None),
    ]

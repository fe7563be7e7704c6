"""The comparison verify makes: exactly the events the SIEM lacks, keyed as the collector keys."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.components import COMPONENTS
from exporter.config import parse_config
from exporter.graph import key_events
from exporter.verify_args import compared_fields
from exporter.verify_compare import (
    ApiEvent,
    Keying,
    Known,
    LateArrivals,
    Stretch,
    api_event,
    attribute,
    compare,
    late_arrivals,
    record_keys,
)
from exporter.verify_export import ExportRecord, parse_export
from tests.strategies import json_events, json_values
from tests.unit.test_verify_export import SHAPES, event, render

STRETCH = Stretch(1_767_225_600.0, 1_767_225_600.0 + 3600)  # 2026-01-01T00:00Z, one hour
SIGNINS = Keying("signins", "createdDateTime")
AUDITS = Keying("audits", "activityDateTime")


def known(*groups: list[ApiEvent]) -> Known:
    items = [e for group in groups for e in group]
    return Known(frozenset(e.key for e in items), frozenset(e.base for e in items))


def run(
    api_events: list[dict[str, Any]],
    export: list[ExportRecord],
    keyings: tuple[Keying, ...] = (SIGNINS,),
    ledger: set[bytes] | None = None,
) -> dict[str, Any]:
    api = {k.source: [api_event(e, k) for e in api_events if k.window_field in e] for k in keyings}
    sides, elsewhere = attribute(export, keyings, {s: known(a) for s, a in api.items()}, STRETCH)
    results = {s: compare(s, a, ledger, sides[s]) for s, a in api.items()}
    return {"results": results, "elsewhere": elsewhere}


@pytest.mark.parametrize("shape", SHAPES)
@given(
    count=st.integers(min_value=1, max_value=40),
    dropped=st.sets(st.integers(min_value=0, max_value=39)),
)
def test_missing_is_exactly_what_the_export_lacks_in_every_shape(
    shape: str, count: int, dropped: set[int]
) -> None:
    events = [event(i) for i in range(count)]
    kept = [e for i, e in enumerate(events) if i not in dropped]
    export = parse_export(io.StringIO(render(kept, shape)))
    result = run(events, export.records)["results"]["signins"]
    assert {e.event_id for e in result.missing} == {events[i]["id"] for i in dropped if i < count}
    assert result.in_siem == len(kept)
    assert result.siem_not_in_api == 0


def test_the_api_event_key_is_the_collectors_key() -> None:
    raw = [event(1), {"createdDateTime": "2026-01-01T00:00:01Z", "no": "id"}, {"id": "Audit_1"}]
    for item, keyed in zip(raw, key_events(raw, "createdDateTime"), strict=True):
        assert api_event(item, SIGNINS).key == keyed.key


def test_records_that_change_compare_by_version_unless_the_export_holds_ids_only() -> None:
    risks = Keying("risks", "lastUpdatedDateTime", "lastUpdatedDateTime")
    first = {"id": "r1", "lastUpdatedDateTime": "2026-01-01T00:10:00Z", "riskLevel": "low"}
    second = {**first, "lastUpdatedDateTime": "2026-01-01T00:20:00Z", "riskLevel": "high"}
    api = [first, second]
    whole = run(api, [ExportRecord("risks", None, first)], (risks,))["results"]["risks"]
    assert [e.event_time for e in whole.missing] == [api_event(second, risks).event_time]
    ids_only = run(api, [ExportRecord("risks", "r1", None)], (risks,))["results"]["risks"]
    assert ids_only.missing == ()


def test_an_export_of_every_source_is_split_by_msgid_then_by_key_then_by_time() -> None:
    sign_in = event(1)
    audit = {"id": "Directory_1", "activityDateTime": "2026-01-01T00:30:00Z"}
    stranger = {"id": "Directory_2", "activityDateTime": "2026-01-01T00:31:00Z"}  # not in API
    records = [
        ExportRecord("signins", None, sign_in),
        ExportRecord(None, None, audit),  # no MSGID: known to the audits source
        ExportRecord(None, None, stranger),  # no MSGID, unknown: dated by audits' field only
        ExportRecord("warning", None, {"x": 1}),  # another MSGID: not ours
        # A stream not audited, dated inside the stretch by the sign-ins' field: not theirs.
        ExportRecord("noninteractive", None, event(7777)),
        ExportRecord("signins", None, event(9999, createdDateTime="2025-01-01T00:00:00Z")),
    ]
    outcome = run([sign_in, audit], records, (SIGNINS, AUDITS))
    signins, audits = outcome["results"]["signins"], outcome["results"]["audits"]
    assert (signins.in_siem, signins.missing, signins.siem_not_in_api) == (1, (), 0)
    assert (audits.in_siem, audits.missing, audits.siem_not_in_api) == (2, (), 1)
    assert outcome["elsewhere"] == 3  # the warning, the other stream, the sign-in outside


def test_without_an_export_the_ledger_decides_and_a_record_in_two_sources_counts_for_both() -> None:
    a, b = event(1), event(2)
    keyed = {e["id"]: api_event(e, SIGNINS) for e in (a, b)}
    result = compare("signins", list(keyed.values()), {keyed[a["id"]].key}, None)
    assert [e.event_id for e in result.missing] == [b["id"]]
    assert (result.in_ledger, result.not_in_ledger, result.in_siem) == (1, 1, None)
    everything = Keying("all", "createdDateTime")
    both = run([a], [ExportRecord(None, None, a)], (SIGNINS, everything))["results"]
    assert both["signins"].missing == both["all"].missing == ()


def test_a_stretch_excludes_its_end() -> None:
    assert STRETCH.holds(STRETCH.start) and not STRETCH.holds(STRETCH.end)
    assert not STRETCH.holds(None)


def test_missing_events_come_in_event_time_order() -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    events = [
        {"id": i, "createdDateTime": f"2026-01-01T00:0{5 - n}:00Z"} for n, i in enumerate(ids)
    ]
    result = run(events, [])["results"]["signins"]
    assert [e.event_id for e in result.missing] == list(reversed(ids))


RISKS = Keying("risks", "lastUpdatedDateTime", "lastUpdatedDateTime")
SOURCES = parse_config(
    {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
        "sources": [
            {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"},
            {
                "name": "risks",
                "endpoint": "/v1.0/identityProtection/riskDetections",
                "time_field": "detectedDateTime",
                "update_field": "lastUpdatedDateTime",
            },
        ],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
    },
    {},
    COMPONENTS,
).sources


@given(extra=json_events, has_id=st.booleans(), version=json_values)
def test_an_export_event_slimmed_to_the_compared_fields_keys_and_dates_as_the_whole(
    extra: dict[str, Any], has_id: bool, version: Any
) -> None:
    item = {**extra, "createdDateTime": "2026-01-01T00:10:00Z", "lastUpdatedDateTime": version}
    if has_id:
        item["id"] = "risk-1"
    else:
        item.pop("id", None)
    line = json.dumps(item)
    whole = parse_export(io.StringIO(line)).records
    slim = parse_export(io.StringIO(line), keep=compared_fields(SOURCES)).records
    assert len(whole) == len(slim) == 1
    for keying in (SIGNINS, RISKS):
        assert record_keys(slim[0], keying) == record_keys(whole[0], keying)


def test_late_arrivals_are_those_recorded_more_than_the_poll_interval_after_their_time() -> None:
    deliveries = [
        (b"a" * 16, 100.0, 100.5),  # seen within the interval
        (b"b" * 16, 100.0, 160.0),  # exactly one interval: not more than one
        (b"c" * 16, 100.0, 160.001),  # just past it
        (b"d" * 16, 100.0, 3700.0),  # an hour late
        (b"e" * 16, 100.0, None),  # recorded before the ledger kept when: unknown
        (b"f" * 16, 100.0, None),
    ]
    assert late_arrivals(deliveries, 60.0) == LateArrivals(late=2, unknown=2, late_after=60.0)
    assert late_arrivals([], 60.0) == LateArrivals(0, 0, 60.0)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 1e6), st.one_of(st.none(), st.floats(0, 1e4)), st.floats(0.1, 1e3)
        ).map(lambda t: (t[0], None if t[1] is None else t[0] + t[1])),
        max_size=30,
    ),
    st.floats(0.1, 1e3),
)
def test_every_delivery_is_late_on_time_or_unknown_exactly_once(
    rows: list[tuple[float, float | None]], late_after: float
) -> None:
    deliveries = [(bytes(16), when, recorded) for when, recorded in rows]
    counted = late_arrivals(deliveries, late_after)
    on_time = sum(
        1 for when, recorded in rows if recorded is not None and recorded - when <= late_after
    )
    assert counted.late + counted.unknown + on_time == len(rows)
    assert counted.unknown == sum(1 for _, recorded in rows if recorded is None)


def test_the_late_count_is_carried_to_the_result_and_absent_without_a_ledger() -> None:
    late = LateArrivals(3, 1, 60.0)
    assert compare("signins", [], set(), None, late).late == late
    assert compare("signins", [], None, None).late is None

"""Reading SIEM exports: every shape the events can come back in yields the same ids."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.syslog import format_message
from exporter.verify_export import ExportFormatError, detect_format, parse_export
from tests.strategies import json_events


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "createdDateTime": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        **extra,
    }


def syslog_line(item: dict[str, Any], msgid: str = "signins") -> str:
    """The exact RFC 5424 message the collector's syslog sink sends."""
    message = format_message(
        item,
        msgid=msgid,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        hostname="collector-0",
        procid="42",
    )
    return bytes(message).decode()


def render(events: list[dict[str, Any]], shape: str) -> str:
    """``events`` as a SIEM might export them, in one of the shapes the reader accepts."""
    if shape == "events":
        return "".join(json.dumps(e) + "\n" for e in events)
    if shape == "raw":
        return "".join(json.dumps({"_raw": syslog_line(e), "host": "siem"}) + "\n" for e in events)
    if shape == "message-json":
        return "".join(
            json.dumps({"message": json.dumps(e), "msgid": "signins"}) + "\n" for e in events
        )
    if shape == "syslog":
        return "".join(syslog_line(e) + "\n" for e in events)
    if shape == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["time", "id", "msgid"])
        writer.writerows([e["createdDateTime"], e["id"], "signins"] for e in events)
        return out.getvalue()
    if shape == "csv-raw":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["_time", "_raw"])
        writer.writerows([e["createdDateTime"], syslog_line(e)] for e in events)
        return out.getvalue()
    raise AssertionError(shape)


SHAPES = ("events", "raw", "message-json", "syslog", "csv", "csv-raw")


@pytest.mark.parametrize("shape", SHAPES)
@given(count=st.integers(min_value=1, max_value=30))
def test_every_shape_yields_every_id_once(shape: str, count: int) -> None:
    events = [event(i) for i in range(count)]
    export = parse_export(io.StringIO(render(events, shape)))
    assert export.format == {"events": "jsonl", "raw": "jsonl", "message-json": "jsonl"}.get(
        shape, "syslog" if shape == "syslog" else "csv"
    )
    ids = [r.event["id"] if r.event is not None else r.event_id for r in export.records]
    assert ids == [e["id"] for e in events]
    assert not export.unreadable


@pytest.mark.parametrize("shape", ("raw", "message-json", "syslog", "csv", "csv-raw"))
def test_the_msgid_is_read_where_the_record_has_one(shape: str) -> None:
    export = parse_export(io.StringIO(render([event(1)], shape)))
    assert [r.msgid for r in export.records] == ["signins"]


def test_a_plain_event_has_no_msgid_and_a_wrapper_line_wins_over_a_field() -> None:
    plain = parse_export(io.StringIO(json.dumps(event(1)) + "\n"))
    assert plain.records[0].msgid is None
    wrapped = json.dumps({"_raw": syslog_line(event(1), "audits"), "msgid": "other"})
    assert parse_export(io.StringIO(wrapped)).records[0].msgid == "audits"


@given(json_events)
def test_any_event_survives_the_syslog_round_trip_whole(item: dict[str, Any]) -> None:
    """The export's event is the event the collector sent, so it keys the same way."""
    line = syslog_line(item)
    export = parse_export(io.StringIO(json.dumps({"_raw": line}) + "\n"))
    assert len(export.records) == 1
    assert json.dumps(export.records[0].event, sort_keys=True) == json.dumps(
        json.loads(json.dumps(item)), sort_keys=True
    )


def test_id_field_names_a_dotted_path_and_csv_column() -> None:
    lines = [json.dumps({"event": {"id": "a-1"}, "log": {"syslog": {"msgid": "signins"}}})]
    export = parse_export(io.StringIO("\n".join(lines)), id_field="event.id")
    assert [(r.event_id, r.msgid, r.event) for r in export.records] == [("a-1", "signins", None)]
    csv_export = parse_export(io.StringIO("EventId,x\nb-2,1\n"), id_field="EventId")
    assert [r.event_id for r in csv_export.records] == ["b-2"]


def test_lines_holding_no_event_are_numbered_not_guessed() -> None:
    text = json.dumps(event(1)) + "\nnot json\n\n[1, 2]\n" + json.dumps({"_raw": "<13>1 garbage"})
    export = parse_export(io.StringIO(text), fmt="jsonl")
    assert len(export.records) == 2  # the event, and the _raw record taken as an event itself
    assert export.unreadable == [2, 4]


def test_a_csv_without_an_id_column_is_refused_naming_the_option() -> None:
    with pytest.raises(ExportFormatError, match="--id-field"):
        parse_export(io.StringIO("time,user\n1,2\n"))
    short_rows = parse_export(io.StringIO("id,user\na,b,c\nd,e\n"))
    assert [r.event_id for r in short_rows.records] == ["d"]
    assert short_rows.unreadable == [2]


def test_detection_and_a_json_array() -> None:
    assert detect_format('\ufeff{"id": 1}') == "jsonl"
    assert detect_format(syslog_line(event(1))) == "syslog"
    assert detect_format("id,createdDateTime") == "csv"
    with pytest.raises(ExportFormatError, match="jq"):
        detect_format('[{"id": "a"}]')
    with pytest.raises(ExportFormatError, match="unknown format"):
        parse_export(io.StringIO(""), fmt="xml")

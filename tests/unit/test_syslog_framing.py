"""Property tests of the pure syslog framing: what a SIEM's parser will see on the wire."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.eventtime import parse_event_time
from exporter.pipeline import RawEvent
from exporter.syslog import (
    FACILITIES,
    MAX_UDP_DATAGRAM,
    Message,
    SinkUnavailable,
    SyslogTransport,
    format_message,
    format_text_message,
    frame_parts,
)
from tests.strategies import HOSTILE_TEXT
from tests.strategies import json_events as events

header_text = st.text() | st.sampled_from(HOSTILE_TEXT)
# Up to 2099: later years are written as NILVALUE, which rsyslog's RFC 5424 parser needs.
aware_datetimes = st.datetimes(
    min_value=datetime(1000, 1, 2),
    max_value=datetime(2099, 12, 30),
    timezones=st.just(UTC) | st.timezones(),
)

PRINTUSASCII_FIELD = re.compile(rb"[\x21-\x7e]+")


def split_message(message: Message) -> tuple[list[bytes], bytes]:
    """RFC 5424 header fields (PRI+VERSION .. SD) and MSG, the way a receiver splits them."""
    *header, msg = bytes(message).split(b" ", 7)
    assert len(header) == 7, bytes(message)[:200]
    return header, msg


def build(event: Any, **overrides: Any) -> Message:
    fields: dict[str, Any] = {
        "msgid": "signins",
        "timestamp": None,
        "hostname": "collector-1",
        "procid": "4242",
    }
    fields.update(overrides)
    return format_message(event, **fields)


@settings(max_examples=300)
@given(events)
def test_any_event_is_one_line_whose_msg_is_the_event(event: dict[str, Any]) -> None:
    message = build(event)
    assert not any(byte < 0x20 for byte in bytes(message)), "control byte would break parsers"
    header, msg = split_message(message)
    assert header[6] == b"-"
    assert not msg.startswith(b"\xef\xbb\xbf")
    assert json.loads(msg.decode("utf-8")) == event


@given(st.lists(st.characters(categories=["Cs"]), min_size=1), st.text())
def test_lone_surrogates_still_make_valid_utf8_json(surrogates: list[str], text: str) -> None:
    # json.loads("\\ud800") yields a lone surrogate, which UTF-8 cannot encode; adjacent
    # high+low pairs are left out because JSON cannot tell them from the astral character.
    event = {"displayName": text + "x".join(surrogates) + text}
    _, msg = split_message(build(event))
    assert json.loads(msg.decode("utf-8")) == event


@settings(max_examples=10, deadline=None)
@given(st.integers(100_000, 1_000_000), st.sampled_from(HOSTILE_TEXT))
def test_huge_hostile_strings_survive(size: int, hostile: str) -> None:
    event = {"blob": (hostile + "é") * (size // (len(hostile) + 1))}
    message = build(event)
    assert b"\n" not in bytes(message)
    _, msg = split_message(message)
    assert json.loads(msg) == event


@given(header_text | st.text(st.characters(categories=["Cs", "Cc"])))
def test_free_text_stays_one_encodable_line(text: str) -> None:
    message = format_text_message(
        "WARNING: " + text, msgid="warning", timestamp=None, hostname="h", procid="1"
    )
    assert not any(byte < 0x20 or byte == 0x7F for byte in bytes(message))
    header, msg = split_message(message)
    assert header[5] == b"warning"
    original = "WARNING: " + text
    shown = msg.decode("utf-8")
    assert len(shown) == len(original)
    for sent, seen in zip(original, shown, strict=True):
        unsafe = ord(sent) < 0x20 or ord(sent) == 0x7F or 0xD800 <= ord(sent) <= 0xDFFF
        assert seen == (" " if unsafe else sent)


def test_non_ascii_is_sent_as_utf8_not_escaped() -> None:
    message = build({"city": "Zürich"})
    assert "Zürich".encode() in bytes(message)


@given(st.integers(0, 23), st.integers(0, 7))
def test_pri_is_facility_times_eight_plus_severity(facility: int, severity: int) -> None:
    header, _ = split_message(build({}, facility=facility, severity=severity))
    match = re.fullmatch(rb"<(\d{1,3})>1", header[0])
    assert match is not None
    assert divmod(int(match.group(1)), 8) == (facility, severity)


def test_default_pri_is_local0_info() -> None:
    assert bytes(build({})).startswith(b"<134>1 ")
    assert FACILITIES["local0"] == 16
    assert FACILITIES["kern"] == 0
    assert FACILITIES["local7"] == 23
    assert sorted(FACILITIES.values()) == list(range(24))


@pytest.mark.parametrize(("facility", "severity"), [(-1, 6), (24, 6), (16, -1), (16, 8)])
def test_out_of_range_pri_parts_are_refused(facility: int, severity: int) -> None:
    with pytest.raises(ValueError):
        build({}, facility=facility, severity=severity)


@given(events, st.sampled_from(["octet-counting", "lf"]))
def test_framing_delimits_exactly_one_message(event: dict[str, Any], framing: str) -> None:
    message = build(event)
    framed = b"".join(frame_parts(message, framing))
    assert message.size == len(bytes(message))
    if framing == "lf":
        assert framed == bytes(message) + b"\n"
        assert framed.count(b"\n") == 1
    else:
        length, space, rest = framed.partition(b" ")
        assert space == b" "
        assert re.fullmatch(rb"[1-9][0-9]*", length)
        assert int(length) == len(rest)
        assert rest == bytes(message)


def test_octet_count_is_bytes_not_characters() -> None:
    message = build({"name": "東京😀"})
    length, _, rest = b"".join(frame_parts(message, "octet-counting")).partition(b" ")
    assert int(length) == len(rest) > len(rest.decode("utf-8"))


def test_unknown_framing_and_embedded_newline_are_refused() -> None:
    with pytest.raises(ValueError):
        frame_parts(Message(b"x ", b"{}"), "netstring")
    with pytest.raises(ValueError):
        frame_parts(Message(b"two\n", b"{}"), "lf")
    with pytest.raises(ValueError):  # in MSG, a view into its page
        frame_parts(Message(b"x ", memoryview(b'{"a":1}\n{"b":2}')), "lf")


@given(aware_datetimes)
def test_timestamp_is_utc_with_at_most_six_fraction_digits(moment: datetime) -> None:
    header, _ = split_message(build({}, timestamp=moment))
    text = header[1].decode("ascii")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", text)
    # Compared in UTC: aware datetimes of different zones never compare equal inside a fold.
    assert datetime.fromisoformat(text) == moment.astimezone(UTC)


def test_missing_timestamp_is_nilvalue_and_naive_is_refused() -> None:
    header, _ = split_message(build({}, timestamp=None))
    assert header[1] == b"-"
    with pytest.raises(ValueError):
        build({}, timestamp=datetime(2024, 1, 1, 12, 0, 0))


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    st.text("0123456789", min_size=0, max_size=9),
    st.sampled_from(["Z", "z", "+00:00", "+05:30", "-08:00", "-00:00", "+14:00"]),
    st.sampled_from("Tt"),
)
def test_graph_timestamps_parse_with_truncated_fraction(
    moment: datetime, digits: str, zone: str, separator: str
) -> None:
    stamp = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    text = stamp + (f".{digits}" if digits else "") + zone
    parsed = parse_event_time(text)
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)
    expected_micro = int(Decimal(f"0.{digits or 0}") * 1_000_000)
    offset = timedelta(0) if zone in "Zz" else _offset(zone)
    expected = moment.replace(microsecond=expected_micro, tzinfo=timezone(offset))
    assert parsed == expected
    if len(digits) > 6:
        assert parsed.microsecond == int(digits[:6])


def _offset(zone: str) -> timedelta:
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))


def test_graph_example_timestamp() -> None:
    assert parse_event_time("2020-03-13T19:15:41.6195833Z") == datetime(
        2020, 3, 13, 19, 15, 41, 619583, tzinfo=UTC
    )
    assert parse_event_time("2020-03-13T23:59:59.9999999Z") == datetime(
        2020, 3, 13, 23, 59, 59, 999999, tzinfo=UTC
    )


@given(aware_datetimes)
def test_formatted_timestamp_parses_back(moment: datetime) -> None:
    header, _ = split_message(build({}, timestamp=moment))
    assert parse_event_time(header[1].decode("ascii")) == moment


@given(st.datetimes(min_value=datetime(2100, 1, 2), timezones=st.just(UTC)))
def test_a_year_after_2099_is_written_as_nilvalue(moment: datetime) -> None:
    header, _ = split_message(build({}, timestamp=moment))
    assert header[1] == b"-"


@pytest.mark.parametrize(
    "value",
    [
        None,
        1584126941,
        1584126941.5,
        ["2020-03-13T19:15:41Z"],
        "",
        "2020-03-13",
        "2020-03-13T19:15:41",
        "2020-03-13 19:15:41Z",
        "2020-03-13T19:15:41.Z",
        "2020-03-13T19:15:41.1234567890Z",
        "2020-02-30T00:00:00Z",
        "2020-03-13T24:00:00Z",
        "2020-03-13T19:15:41+25:00",
        "0001-01-01T00:00:00+01:00",
        "\uff12\uff10\uff12\uff10-03-13T19:15:41Z",
        datetime(2020, 3, 13, 19, 15, 41),
    ],
)
def test_unparsable_times_are_none(value: object) -> None:
    assert parse_event_time(value) is None


@given(st.text() | st.integers() | st.floats() | st.none() | st.binary())
def test_parse_event_time_never_raises(value: object) -> None:
    parsed = parse_event_time(value)
    assert parsed is None or parsed.utcoffset() == timedelta(0)


@given(header_text, header_text, header_text, header_text)
def test_header_fields_are_always_legal(
    hostname: str, app_name: str, procid: str, msgid: str
) -> None:
    header, msg = split_message(
        build({"k": "v"}, hostname=hostname, app_name=app_name, procid=procid, msgid=msgid)
    )
    limits = {2: (hostname, 255), 3: (app_name, 48), 4: (procid, 128), 5: (msgid, 32)}
    for index, (original, limit) in limits.items():
        field = header[index]
        assert PRINTUSASCII_FIELD.fullmatch(field), field
        assert len(field) <= limit
        raw = original.encode("utf-8", "surrogatepass")
        if original and PRINTUSASCII_FIELD.fullmatch(raw) and len(original) <= limit:
            assert field == raw
    assert json.loads(msg) == {"k": "v"}


def test_empty_or_illegal_header_fields() -> None:
    header, _ = split_message(build({}, hostname="", procid="", msgid=""))
    assert header[2:6] == [b"-", b"siem-exporter", b"-", b"-"]
    header, _ = split_message(build({}, hostname="my host", msgid="sign-ins ü" + "x" * 40))
    assert header[2] == b"my_host"
    assert header[5] == b"sign-ins__" + b"x" * 22


@pytest.mark.parametrize(
    ("protocol", "framing"), [("smtp", "lf"), ("tcp", "netstring"), ("udp", "none")]
)
def test_transport_refuses_unknown_protocol_or_framing(protocol: str, framing: str) -> None:
    with pytest.raises(ValueError):
        SyslogTransport(host="127.0.0.1", port=514, protocol=protocol, framing=framing)


def test_oversized_udp_datagram_is_refused_before_sending() -> None:
    transport = SyslogTransport(host="127.0.0.1", port=9, protocol="udp", framing="lf")
    oversized = build({"blob": "x" * MAX_UDP_DATAGRAM})
    with pytest.raises(SinkUnavailable, match=r"127\.0\.0\.1:9: .*exceeds the UDP maximum"):
        transport.deliver([oversized])


def test_an_event_that_came_as_compact_json_is_sent_as_it_came() -> None:
    """The bytes the source checked and kept are MSG, not a re-serialisation of them."""
    raw = b'{"id":"x","n":1.50,"s":"\\u00e9"}'
    _, msg = split_message(build(RawEvent(raw, {"id": "x"})))
    assert msg == raw

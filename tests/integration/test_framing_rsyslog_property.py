"""Property: any event survives format_message, framing and a real rsyslogd's parser intact.

tests/integration/test_syslog_rsyslog.py sends a fixed list of hostile strings; here
hypothesis generates the events (any JSON object: control characters, lone surrogates,
huge numbers, deep nesting, any key) and the source names, and one rsyslogd per module
parses every message. What rsyslog hands its output as MSG must ``json.loads`` back to the
very object, and MSGID must be the source name, for both stream framings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.syslog import SyslogTransport, format_message
from tests.rsyslog import RsyslogReceiver
from tests.strategies import json_events as events

source_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,31}\Z")
# rsyslog's RFC 5424 parser refuses years after 2099 (see the test at the end).
timestamps = st.none() | st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[RsyslogReceiver]:
    with RsyslogReceiver() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def transports(receiver: RsyslogReceiver) -> Iterator[dict[str, SyslogTransport]]:
    opened = {
        framing: SyslogTransport(
            host=receiver.host, port=receiver.port, protocol="tcp", framing=framing
        )
        for framing in ("octet-counting", "lf")
    }
    yield opened
    for transport in opened.values():
        transport.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    event=events,
    msgid=source_names,
    timestamp=timestamps,
    framing=st.sampled_from(["octet-counting", "lf"]),
)
def test_any_event_reaches_rsyslog_as_the_same_json(
    receiver: RsyslogReceiver,
    transports: dict[str, SyslogTransport],
    event: dict[str, Any],
    msgid: str,
    timestamp: datetime | None,
    framing: str,
) -> None:
    before = len(receiver.messages())
    message = format_message(
        event, msgid=msgid, timestamp=timestamp, hostname="collector-1", procid="4242"
    )
    transports[framing].deliver([message])
    received = receiver.wait_for(before + 1, timeout=20)
    assert len(received) == before + 1, "one message must arrive as exactly one message"
    got_msgid, msg = received[-1]
    assert got_msgid == msgid
    assert "\n" not in msg
    assert json.loads(msg) == event


def test_an_event_time_after_2099_still_parses(
    receiver: RsyslogReceiver, transports: dict[str, SyslogTransport]
) -> None:
    before = len(receiver.messages())
    event = {"id": "far-future", "createdDateTime": "2100-01-01T00:00:00Z"}
    message = format_message(
        event,
        msgid="signins",
        timestamp=datetime(2100, 1, 1, tzinfo=UTC),
        hostname="collector-1",
        procid="4242",
    )
    transports["octet-counting"].deliver([message])
    got_msgid, msg = receiver.wait_for(before + 1, timeout=20)[-1]
    assert (got_msgid, msg) == ("signins", json.dumps(event, separators=(",", ":")))

"""Delivery's decisions: every sink, retried until it accepts, and never a success on shutdown.

The transports are stand-ins that accept or refuse on cue, so the retry and bookkeeping
logic of :class:`Delivery` is driven in manual time; what a real transport puts on the wire
is tested against rsyslogd in ``tests/integration``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.clock import ManualClock
from exporter.deadletter import DeadLetters
from exporter.delivery import Delivery
from exporter.errors import Interrupted, SinkUnavailable, StateError
from exporter.graph import key_events
from exporter.graph_page import parse_page
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, RawEvent, Refusal
from exporter.relp_transport import RelpTransport
from exporter.syslog import MAX_UDP_DATAGRAM, Message
from exporter.syslog_sink import SyslogSettings, SyslogSink
from tests.relp_fake import Behaviour, FakeRelpServer

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedTransport:
    """Refuses the first ``refusals`` batches, then accepts and keeps each one."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.accepted: list[list[bytes]] = []
        self.attempts = 0

    def deliver(self, messages: Sequence[Message]) -> Sequence[Refusal]:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise SinkUnavailable("scripted refusal")
        self.accepted.append([bytes(m) for m in messages])
        return ()

    def close(self) -> None:
        return


class StoppingClock(ManualClock):
    """A clock whose sleeps report a shutdown once ``stop_after`` sleeps were taken."""

    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        super().sleep(seconds)
        return len(self.sleeps) >= self.stop_after


def sink(
    name: str,
    transport: ScriptedTransport | RelpTransport,
    *,
    protocol: str = "tcp",
    max_message_size: int | None = None,
) -> SyslogSink:
    return SyslogSink(
        name,
        SyslogSettings(
            host="siem.invalid",
            port=6514,
            protocol=protocol,
            framing="octet-counting",
            ca_file=None,
            facility=16,
            hostname="collector-1",
            max_message_size=max_message_size,
        ),
        transport,
    )


def batch(count: int) -> list[KeyedEvent]:
    return [
        KeyedEvent(n.to_bytes(16), True, WHEN.timestamp(), WHEN, {"id": f"event-{n}", "n": n})
        for n in range(count)
    ]


def delivery_for(
    sinks: Sequence[SyslogSink], clock: ManualClock, dead_letters: DeadLetters | None = None
) -> tuple[Delivery, CollectorRegistry, Health]:
    registry = CollectorRegistry()
    health = Health()
    letters = dead_letters or DeadLetters(Path(tempfile.mkdtemp()) / "dead.jsonl", 1 << 20)
    return Delivery(sinks, ExporterMetrics(registry), health, clock, letters), registry, health


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"siem_exporter_{name}", labels)


def test_every_sink_gets_the_batch_once_and_each_acceptance_is_counted() -> None:
    first, second = ScriptedTransport(), ScriptedTransport()
    delivery, registry, _ = delivery_for([sink("a", first), sink("b", second)], ManualClock())
    delivery.send("signins", batch(3))
    for transport in (first, second):
        assert len(transport.accepted) == 1
        assert [m.split(b" ", 7) for m in transport.accepted[0]] == [
            [
                b"<134>1",
                b"2026-01-01T00:00:00.000000Z",
                b"collector-1",
                b"siem-exporter",
                str(os.getpid()).encode(),
                b"signins",
                b"-",
                b'{"id":"event-%d","n":%d}' % (n, n),
            ]
            for n in range(3)
        ]
    assert sample(registry, "events_sent_total", source="signins", sink="a") == 3
    assert sample(registry, "events_sent_total", source="signins", sink="b") == 3


def test_a_refusing_sink_is_retried_with_backoff_and_the_other_is_not_sent_it_again() -> None:
    steady, flaky = ScriptedTransport(), ScriptedTransport(refusals=3)
    clock = StoppingClock(stop_after=100)
    delivery, registry, health = delivery_for([sink("a", steady), sink("b", flaky)], clock)
    delivery.send("signins", batch(2))
    assert len(steady.accepted) == 1, "the sink that accepted was sent the batch again"
    assert flaky.attempts == 4 and len(flaky.accepted) == 1
    ceilings = [min(30.0, 0.5 * 2**attempt) for attempt in range(3)]
    assert len(clock.sleeps) == 3
    assert all(c / 2 <= slept <= c for slept, c in zip(clock.sleeps, ceilings, strict=True))
    assert sample(registry, "sink_errors_total", sink="b") == 3
    assert sample(registry, "sink_errors_total", sink="a") is None
    assert sample(registry, "sink_up", sink="b") == 1
    assert health.ready() == (True, "ok")


def test_retries_of_a_long_outage_are_at_most_30_seconds_apart() -> None:
    down = ScriptedTransport(refusals=12)
    clock = StoppingClock(stop_after=100)
    delivery, _, _ = delivery_for([sink("a", down)], clock)
    delivery.send("signins", batch(1))
    assert max(clock.sleeps) <= 30.0
    assert min(clock.sleeps[-4:]) >= 15.0, "the cap is reached, not stayed below"


def test_a_sink_down_shows_in_readiness_until_it_accepts() -> None:
    down = ScriptedTransport(refusals=10)
    clock = StoppingClock(stop_after=2)
    delivery, registry, health = delivery_for([sink("a", down)], clock)
    with pytest.raises(Interrupted):
        delivery.send("signins", batch(1))
    assert health.ready() == (False, "sink down: a")
    assert sample(registry, "sink_up", sink="a") == 0


def test_a_shutdown_during_retries_is_never_reported_as_delivered() -> None:
    refusing, later = ScriptedTransport(refusals=10), ScriptedTransport()
    clock = StoppingClock(stop_after=2)
    delivery, registry, _ = delivery_for([sink("a", refusing), sink("b", later)], clock)
    with pytest.raises(Interrupted):
        delivery.send("signins", batch(5))
    assert refusing.accepted == [] and later.attempts == 0
    assert sample(registry, "events_sent_total", source="signins", sink="a") is None


def test_a_warning_is_tried_once_on_every_sink_and_never_retried() -> None:
    refusing, steady = ScriptedTransport(refusals=1), ScriptedTransport()
    clock = StoppingClock(stop_after=100)
    delivery, registry, _ = delivery_for([sink("a", refusing), sink("b", steady)], clock)
    delivery.send_warning("WARNING: x", WHEN)
    assert refusing.attempts == 1 and clock.sleeps == []
    (warning,) = steady.accepted[0]
    pri, *_, msgid, data, text = warning.split(b" ", 7)
    assert (pri, msgid, data, text) == (b"<132>1", b"warning", b"-", b"WARNING: x")
    assert sample(registry, "sink_errors_total", sink="a") == 1


def big_batch(sizes: Sequence[int]) -> list[KeyedEvent]:
    """Events whose ``blob`` field makes each message about ``size`` bytes long."""
    return [
        KeyedEvent(
            n.to_bytes(16), True, WHEN.timestamp(), WHEN, {"id": f"event-{n}", "blob": "x" * size}
        )
        for n, size in enumerate(sizes)
    ]


@pytest.mark.parametrize(
    ("protocol", "max_message_size", "too_big"),
    [("udp", None, MAX_UDP_DATAGRAM), ("tcp", 4000, 4000), ("udp", 100_000, MAX_UDP_DATAGRAM)],
)
def test_a_message_too_large_for_the_receiver_is_kept_on_disk_counted_and_the_rest_flows(
    tmp_path: Path, protocol: str, max_message_size: int | None, too_big: int
) -> None:
    transport = ScriptedTransport()
    letters = DeadLetters(tmp_path / "dead.jsonl", 1 << 20)
    clock = StoppingClock(stop_after=1)
    delivery, registry, health = delivery_for(
        [sink("a", transport, protocol=protocol, max_message_size=max_message_size)],
        clock,
        letters,
    )
    events = big_batch([100, too_big, 200, too_big + 5000])
    delivery.send("signins", events)

    sent = transport.accepted
    assert len(sent) == 1 and [b'"event-0"' in m for m in sent[0]] == [True, False]
    assert b'"event-2"' in sent[0][1]
    assert all(len(m) <= too_big for m in sent[0])
    assert clock.sleeps == [], "a refusal for good is not retried"
    assert sample(registry, "events_sent_total", source="signins", sink="a") == 2
    assert sample(registry, "events_rejected_total", sink="a", reason="too_large") == 2
    assert sample(registry, "events_rejected_total", sink="a", reason="refused") is None
    assert sample(registry, "sink_errors_total", sink="a") is None
    assert sample(registry, "dead_letter_events") == 2
    assert health.ready()[0], "a refused message does not make the sink unready"
    lines = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(x["id"], x["source"], x["sink"], x["reason"]) for x in lines] == [
        ("event-1", "signins", "a", "too_large"),
        ("event-3", "signins", "a", "too_large"),
    ]
    assert [x["event"] for x in lines] == [events[1].event, events[3].event]
    assert lines[0]["key"] == events[1].key.hex()
    assert lines[0]["event_time"] == "2026-01-01T00:00:00Z"


def test_past_its_cap_the_dead_letter_file_keeps_ids_and_its_count_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dead.jsonl"
    letters = DeadLetters(path, 3000)
    events = big_batch([1000, 1000, 1000])
    kept = [
        letters.record(sink="a", source="s", item=e, reason="refused", detail="500", now=0.0)
        for e in events
    ]
    assert kept == [True, True, False]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["event-0", "event-1", "event-2"]
    assert lines[2]["event"] is None and lines[1]["event"] == events[1].event
    assert path.stat().st_size > 2000
    reopened = DeadLetters(path, 3000)
    assert reopened.count == 3
    registry = CollectorRegistry()
    Delivery([], ExporterMetrics(registry), Health(), ManualClock(), reopened)
    assert sample(registry, "dead_letter_events") == 3, "the alert stays up across restarts"


def test_a_refused_event_that_cannot_be_kept_stops_delivery_instead_of_vanishing(
    tmp_path: Path,
) -> None:
    letters = DeadLetters(tmp_path / "missing-dir" / "dead.jsonl", 1 << 20)
    transport = ScriptedTransport()
    delivery, registry, _ = delivery_for(
        [sink("a", transport, protocol="udp")], ManualClock(), letters
    )
    with pytest.raises(StateError, match="dead-letter file"):
        delivery.send("signins", big_batch([MAX_UDP_DATAGRAM]))
    assert sample(registry, "events_sent_total", source="signins", sink="a") is None


def test_a_message_a_relp_receiver_refuses_again_and_again_is_kept_and_the_rest_flows(
    tmp_path: Path,
) -> None:
    """The receiver's ``500`` for one message ends, after three tries, in the dead-letter
    file under ``refused``; a message too large is refused before it is sent, and the
    positions of both map back to the right events of the batch."""
    server = FakeRelpServer()
    server.behaviour = Behaviour(
        answer=lambda m: b"500 no" if b'"event-3"' in m else b"200 OK",
    )
    transport = RelpTransport(host="127.0.0.1", port=server.port, ack_timeout=2.0)
    letters = DeadLetters(tmp_path / "dead.jsonl", 1 << 20)
    clock = StoppingClock(stop_after=10)
    delivery, registry, _ = delivery_for(
        [sink("a", transport, protocol="relp", max_message_size=4000)], clock, letters
    )
    events = big_batch([5000, 100, 100, 100, 100])
    delivery.send("signins", events)
    transport.close()

    ids = sorted(json.loads(m.split(b" - ", 1)[1])["id"] for m in server.accepted)
    assert ids == ["event-1", "event-2", "event-4"], "each accepted message once"
    assert len(clock.sleeps) == 2, "retried until refused three times in a row"
    assert sample(registry, "events_rejected_total", sink="a", reason="refused") == 1
    assert sample(registry, "events_rejected_total", sink="a", reason="too_large") == 1
    assert sample(registry, "events_sent_total", source="signins", sink="a") == 3
    lines = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted((x["id"], x["reason"]) for x in lines) == [
        ("event-0", "too_large"),
        ("event-3", "refused"),
    ]
    assert any("500 no" in x["detail"] for x in lines)


def test_an_event_kept_as_the_bytes_the_api_sent_is_dead_lettered_whole(tmp_path: Path) -> None:
    """Graph's events travel as their page's own JSON (``RawEvent``); the dead-letter file
    must keep that JSON as the event, not fail on an object it cannot serialise."""
    body = json.dumps({"value": [{"id": "event-0", "blob": "x" * 5000, "n": [1, {"é": None}]}]})
    (event,) = key_events(
        parse_page(body.encode(), ("id", "createdDateTime"))[0], "createdDateTime"
    )
    assert isinstance(event.event, RawEvent)
    letters = DeadLetters(tmp_path / "dead.jsonl", 1 << 20)
    delivery, registry, _ = delivery_for(
        [sink("a", ScriptedTransport(), max_message_size=4000)], StoppingClock(1), letters
    )
    delivery.send("signins", [event])
    (line,) = (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["event"] == json.loads(body)["value"][0]
    assert sample(registry, "dead_letter_events") == 1


def test_an_id_with_a_lone_surrogate_is_dead_lettered_not_a_crash(tmp_path: Path) -> None:
    """JSON's ``"\\ud800"`` is a valid id that UTF-8 cannot hold: the line keeps it as that
    escape, so the refused event is still named by the id the API gave it."""
    body = json.dumps({"value": [{"id": "odd-\ud800", "blob": "x" * 5000}]})  # ASCII escapes
    (event,) = key_events(
        parse_page(body.encode(), ("id", "createdDateTime"))[0], "createdDateTime"
    )
    letters = DeadLetters(tmp_path / "dead.jsonl", 1 << 20)
    delivery, registry, _ = delivery_for(
        [sink("a", ScriptedTransport(), max_message_size=4000)], StoppingClock(1), letters
    )
    delivery.send("signins", [event])
    (line,) = (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["id"] == "odd-\ud800"
    assert json.loads(line)["event"] == json.loads(body)["value"][0]
    assert sample(registry, "dead_letter_events") == 1

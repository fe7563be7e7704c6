"""Delivery's decisions: every sink, retried until it accepts, and never a success on shutdown.

The transports are stand-ins that accept or refuse on cue, so the retry and bookkeeping
logic of :class:`Delivery` is driven in manual time; what a real transport puts on the wire
is tested against rsyslogd in ``tests/integration``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from exporter.clock import ManualClock
from exporter.delivery import Delivery
from exporter.errors import Interrupted, SinkUnavailable
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent
from exporter.syslog_sink import SyslogSettings, SyslogSink

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


class ScriptedTransport:
    """Refuses the first ``refusals`` batches, then accepts and keeps each one."""

    def __init__(self, refusals: int = 0) -> None:
        self.refusals = refusals
        self.accepted: list[list[bytes]] = []
        self.attempts = 0

    def deliver(self, messages: Sequence[bytes]) -> None:
        self.attempts += 1
        if self.attempts <= self.refusals:
            raise SinkUnavailable("scripted refusal")
        self.accepted.append(list(messages))

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


def sink(name: str, transport: ScriptedTransport) -> SyslogSink:
    return SyslogSink(
        name,
        SyslogSettings(
            host="siem.invalid",
            port=6514,
            protocol="tcp",
            framing="octet-counting",
            ca_file=None,
            facility=16,
            hostname="collector-1",
        ),
        transport,
    )


def batch(count: int) -> list[KeyedEvent]:
    return [
        KeyedEvent(n.to_bytes(16), True, WHEN.timestamp(), WHEN, {"id": f"event-{n}", "n": n})
        for n in range(count)
    ]


def delivery_for(
    sinks: Sequence[SyslogSink], clock: ManualClock
) -> tuple[Delivery, CollectorRegistry, Health]:
    registry = CollectorRegistry()
    health = Health()
    return Delivery(sinks, ExporterMetrics(registry), health, clock), registry, health


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

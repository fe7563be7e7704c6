"""Handing a batch of events to every configured SIEM sink, retrying until each accepts it.

A batch counts as delivered only when every sink accepted it; until then nothing is written
to the ledger, so a SIEM outage delays events and never loses them. A sink that accepted a
batch is not sent it again while another sink is still retrying.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.clock import Clock
from exporter.config import SyslogSinkConfig
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.retry import backoff
from exporter.syslog import SinkError, SyslogTransport, format_message, format_text_message

log = logging.getLogger(__name__)

SINK_RETRY_CAP = 30.0
WARNING_MSGID = "warning"
WARNING_SEVERITY = 4


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event on its way out, with the timestamp its syslog header will carry."""

    event: dict[str, Any]
    event_time: datetime | None


class Sink:
    """One SIEM receiver: its config, formatting and transport."""

    def __init__(self, config: SyslogSinkConfig) -> None:
        self.config = config
        self.name = config.name
        self.procid = str(os.getpid())
        self.transport = SyslogTransport(
            host=config.host,
            port=config.port,
            protocol=config.protocol,
            framing=config.framing,
            ca_file=config.ca_file,
        )

    def format(self, msgid: str, item: OutgoingEvent) -> bytes:
        """The RFC 5424 message for one event, with this sink's facility and hostname."""
        return format_message(
            item.event,
            msgid=msgid,
            timestamp=item.event_time,
            hostname=self.config.hostname,
            procid=self.procid,
            facility=self.config.facility,
        )

    def format_warning(self, text: str, timestamp: datetime) -> bytes:
        """An in-band WARNING line (MSGID ``warning``, severity warning) for this sink."""
        return format_text_message(
            text,
            msgid=WARNING_MSGID,
            timestamp=timestamp,
            hostname=self.config.hostname,
            procid=self.procid,
            facility=self.config.facility,
            severity=WARNING_SEVERITY,
        )


class Delivery:
    """The set of sinks, shared by every source loop.

    One batch at a time per sink connection: each transport serialises its own socket, so
    sources in their own threads may call ``send`` at once.
    """

    def __init__(
        self, sinks: Sequence[Sink], metrics: ExporterMetrics, health: Health, clock: Clock
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.health = health
        self.clock = clock

    def send(self, source: str, batch: Sequence[OutgoingEvent]) -> bool:
        """Deliver ``batch`` to every sink; False only when shutdown interrupted the retries."""
        for sink in self.sinks:
            messages = [sink.format(source, item) for item in batch]
            if not self.send_messages(sink, messages, retry=True):
                return False
            self.metrics.events_sent.labels(source, sink.name).inc(len(batch))
        return True

    def send_messages(self, sink: Sink, messages: Sequence[bytes], *, retry: bool) -> bool:
        """Send preformatted messages to one sink, retrying with backoff when ``retry``."""
        attempt = 0
        while True:
            try:
                sink.transport.deliver(messages)
            except SinkError as exc:
                self.metrics.sink_errors.labels(sink.name).inc()
                self.metrics.sink_up.labels(sink.name).set(0)
                self.health.sink_state(sink.name, up=False)
                delay = backoff(attempt, base=0.5, cap=SINK_RETRY_CAP)
                log.warning(
                    "sink refused the batch, will retry" if retry else "sink refused a message",
                    extra=fields(sink=sink.name, error=str(exc), retry_in=round(delay, 2)),
                )
                if not retry or self.clock.sleep(delay):
                    return False
                attempt += 1
                continue
            self.metrics.sink_up.labels(sink.name).set(1)
            self.health.sink_state(sink.name, up=True)
            return True

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """Send one in-band warning to every sink, once: a sink that is down has bigger news."""
        for sink in self.sinks:
            self.send_messages(sink, [sink.format_warning(text, timestamp)], retry=False)

    def close(self) -> None:
        for sink in self.sinks:
            sink.transport.close()

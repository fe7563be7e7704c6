"""Handing a batch of events to every configured SIEM sink, retrying until each accepts it.

A batch counts as delivered only when every sink accepted it; until then nothing is written
to the ledger, so a SIEM outage delays events and never loses them. A sink that accepted a
batch is not sent it again while another sink is still retrying. Sinks are adapters behind
:class:`exporter.pipeline.Sink` that only format and transmit; the retries, backoff,
metrics and readiness are here, once for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from exporter.clock import Clock
from exporter.errors import Interrupted, SinkError
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Sink
from exporter.retry import backoff

log = logging.getLogger(__name__)

SINK_RETRY_CAP = 30.0


class Delivery:
    """The set of sinks, shared by every source loop: the loops' :class:`Outlet`.

    One batch at a time per sink connection: each sink's transport serialises its own
    socket, so sources in their own threads may call ``send`` at once.
    """

    def __init__(
        self, sinks: Sequence[Sink], metrics: ExporterMetrics, health: Health, clock: Clock
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.health = health
        self.clock = clock

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        """Deliver ``batch`` to every sink; ``Interrupted`` when shutdown cut the retries short."""
        for sink in self.sinks:
            self._until_accepted(sink, partial(sink.send_batch, source, batch), retry=True)
            self.metrics.events_sent.labels(source, sink.name).inc(len(batch))

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """Send one in-band warning to every sink, once: a sink that is down has bigger news."""
        for sink in self.sinks:
            self._until_accepted(sink, partial(sink.send_warning, text, timestamp), retry=False)

    def _until_accepted(self, sink: Sink, attempt: Callable[[], None], *, retry: bool) -> None:
        """Run ``attempt`` until the sink accepts, with backoff, when ``retry``; else once.

        ``Interrupted`` when shutdown came during a backoff.
        """
        failures = 0
        while True:
            try:
                attempt()
            except SinkError as exc:
                self.metrics.sink_errors.labels(sink.name).inc()
                self.metrics.sink_up.labels(sink.name).set(0)
                self.health.sink_state(sink.name, up=False)
                delay = backoff(failures, base=0.5, cap=SINK_RETRY_CAP)
                log.warning(
                    "sink refused the batch, will retry" if retry else "sink refused a message",
                    extra=fields(sink=sink.name, error=str(exc), retry_in=round(delay, 2)),
                )
                if not retry:
                    return
                if self.clock.sleep(delay):
                    raise Interrupted from None
                failures += 1
                continue
            self.metrics.sink_up.labels(sink.name).set(1)
            self.health.sink_state(sink.name, up=True)
            return

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

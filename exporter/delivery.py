"""Handing a batch of events to every configured SIEM sink, retrying until each accepts it.

A batch counts as delivered only when every sink accepted it; until then nothing is written
to the ledger, so a SIEM outage delays events and never loses them. A sink that accepted a
batch is not sent it again while another sink is still retrying. Sinks are adapters behind
:class:`exporter.pipeline.Sink` that only format and transmit; the retries, backoff,
metrics and readiness are here, once for all of them.

A message a sink refuses for good (a :class:`exporter.pipeline.Refusal`: too large, or
refused again and again) would block its source for ever if it were retried: it is counted
in ``events_rejected_total``, written to the dead-letter file and logged, and the rest of the
batch counts as delivered. Nothing is dropped silently, and no source waits on it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

from exporter.clock import Clock
from exporter.deadletter import DeadLetters
from exporter.errors import Interrupted, SinkError
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Refusal, Sink
from exporter.retry import backoff

log = logging.getLogger(__name__)

SINK_RETRY_CAP = 30.0

T = TypeVar("T")


class Delivery:
    """The set of sinks, shared by every source loop: the loops' :class:`Outlet`.

    One batch at a time per sink connection: each sink's transport serialises its own
    socket, so sources in their own threads may call ``send`` at once.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        metrics: ExporterMetrics,
        health: Health,
        clock: Clock,
        dead_letters: DeadLetters,
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.dead_letters = dead_letters
        metrics.dead_letter_events.set(dead_letters.count)

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        """Deliver ``batch`` to every sink; ``Interrupted`` when shutdown cut the retries short."""
        for sink in self.sinks:
            refused = self._until_accepted(sink, partial(sink.send_batch, source, batch))
            for refusal in refused:
                self._reject(sink.name, source, batch[refusal.index], refusal)
            self.metrics.events_sent.labels(source, sink.name).inc(len(batch) - len(refused))

    def _reject(self, sink: str, source: str, item: KeyedEvent, refusal: Refusal) -> None:
        """Keep a refused event in the dead-letter file, count it and say so."""
        kept = self.dead_letters.record(
            sink=sink,
            source=source,
            item=item,
            reason=refusal.reason,
            detail=refusal.detail,
            now=self.clock.now(),
        )
        self.metrics.events_rejected.labels(sink, refusal.reason).inc()
        self.metrics.dead_letter_events.set(self.dead_letters.count)
        log.error(
            "sink refused an event for good; kept in the dead-letter file"
            if kept
            else "sink refused an event for good; its id is in the dead-letter file, which "
            "is over its size cap, so the event itself is not",
            extra=fields(
                sink=sink,
                source=source,
                id=item.event.get("id"),
                reason=refusal.reason,
                detail=refusal.detail,
                file=str(self.dead_letters.path),
            ),
        )

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """Send one in-band warning to every sink, once: a sink that is down has bigger news."""
        for sink in self.sinks:
            with contextlib.suppress(SinkError):
                self._attempt(sink, partial(sink.send_warning, text, timestamp), retry_in=None)

    def _until_accepted(self, sink: Sink, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` until the sink accepts, with backoff, and return what it returned.

        ``Interrupted`` when shutdown came during a backoff.
        """
        failures = 0
        while True:
            delay = backoff(failures, base=0.5, cap=SINK_RETRY_CAP)
            try:
                return self._attempt(sink, attempt, retry_in=delay)
            except SinkError:
                if self.clock.sleep(delay):
                    raise Interrupted from None
                failures += 1

    def _attempt(self, sink: Sink, attempt: Callable[[], T], *, retry_in: float | None) -> T:
        """One try, its outcome recorded in the metrics, the health and (failed) the log."""
        try:
            outcome = attempt()
        except SinkError as exc:
            self.metrics.sink_errors.labels(sink.name).inc()
            self.metrics.sink_up.labels(sink.name).set(0)
            self.health.sink_state(sink.name, up=False)
            if retry_in is None:
                log.warning("sink refused a message", extra=fields(sink=sink.name, error=str(exc)))
            else:
                log.warning(
                    "sink refused the batch, will retry",
                    extra=fields(sink=sink.name, error=str(exc), retry_in=round(retry_in, 2)),
                )
            raise
        self.metrics.sink_up.labels(sink.name).set(1)
        self.health.sink_state(sink.name, up=True)
        return outcome

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

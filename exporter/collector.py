"""The loop: plan a window, fetch a page, drop what was delivered, send, record, observe.

One :class:`SourceLoop` per configured source, each in its own thread, all sharing the token
provider, the request budget, the ledger and the sinks. Per page, new events go to every
sink and only then into the ledger; a shutdown lets the page in flight finish (sent and
recorded) and stops before the next one, so at most that one page can be sent twice after
a crash, and nothing is lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from exporter.clock import Clock
from exporter.config import BudgetConfig, SourceConfig
from exporter.delivery import Delivery, OutgoingEvent
from exporter.errors import GraphError, StateError, TokenError
from exporter.graph import Interrupted, Page
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger, event_key
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.retry import backoff
from exporter.syslog import parse_event_time
from exporter.window import (
    Lateness,
    QueryWindow,
    WindowPolicy,
    eviction_horizon,
    observe,
    plan_window,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_LAST_COMPLETE = "last_complete"
CHECKPOINT_LAST_START = "last_start"
CHECKPOINT_NEWEST_EVENT = "newest_event_time"
CHECKPOINT_LATENESS = "lateness_seconds"
CHECKPOINT_LATENESS_AT = "lateness_at"


class EventPages(Protocol):
    """Where a source's events come from: Graph over HTTPS, or a model in simulated time."""

    throttled: int  # throttle retries so far, for the in-band "sustained throttling" warning

    def pages(self, source: SourceConfig, start: float, end: float | None = None) -> Iterator[Page]:
        """Every page of events with ``start <= event time (<= end)``, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class KeyedEvent:
    """An event from a page with its dedupe key and parsed event time."""

    key: bytes
    has_id: bool
    event_time: float | None
    event: dict[str, Any]


def key_events(events: Iterable[dict[str, Any]], time_field: str) -> list[KeyedEvent]:
    """Attach dedupe keys and event times to a page's events."""
    keyed = []
    for event in events:
        key, has_id = event_key(event)
        when = parse_event_time(event.get(time_field))
        keyed.append(KeyedEvent(key, has_id, when.timestamp() if when else None, event))
    return keyed


def select_new(
    page: Sequence[KeyedEvent], delivered: set[bytes], seen_this_poll: set[bytes]
) -> list[KeyedEvent]:
    """The events of a page to send: not delivered before, and not twice within the page or poll."""
    fresh = []
    for item in page:
        if item.key in delivered or item.key in seen_this_poll:
            continue
        seen_this_poll.add(item.key)
        fresh.append(item)
    return fresh


def arrival_lags(
    fresh: Iterable[KeyedEvent], now: float, previous_start: float | None
) -> list[float]:
    """Arrival lags of new events that the previous complete query would have returned if visible.

    Only those tell when an event became visible: it was absent from the previous query (as
    of its time) and is here now. An event older than the previous window's start may simply
    never have been asked for (first poll, wider window), so it says nothing about lateness.
    """
    if previous_start is None:
        return []
    return [
        now - item.event_time
        for item in fresh
        if item.event_time is not None and item.event_time >= previous_start
    ]


@dataclass
class PollOutcome:
    """What one complete poll saw."""

    pages: int = 0
    events: int = 0
    new: int = 0
    newest_event_time: float | None = None
    max_lag: float = 0.0
    throttled: int = 0
    window: QueryWindow | None = None
    lags: list[float] = field(default_factory=list)


class SourceLoop:
    """Polls one source until ``stop`` is set."""

    def __init__(
        self,
        source: SourceConfig,
        graph: EventPages,
        ledger: Ledger,
        delivery: Delivery,
        metrics: ExporterMetrics,
        health: Health,
        clock: Clock,
        stop: threading.Event,
        warnings: InbandWarnings,
        budget: BudgetConfig | None = None,
    ) -> None:
        self.source = source
        self.graph = graph
        self.ledger = ledger
        self.delivery = delivery
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.stop = stop
        self.warnings = warnings
        self.budget = budget or BudgetConfig(requests=5, per=10.0)
        self.policy = WindowPolicy(source.lookback, source.max_lookback, source.poll_interval)
        name = source.name
        self.last_complete = ledger.checkpoint(name, CHECKPOINT_LAST_COMPLETE)
        self.last_start = ledger.checkpoint(name, CHECKPOINT_LAST_START)
        self.newest_event_time = ledger.checkpoint(name, CHECKPOINT_NEWEST_EVENT)
        self.lateness = Lateness(
            ledger.checkpoint(name, CHECKPOINT_LATENESS) or 0.0,
            ledger.checkpoint(name, CHECKPOINT_LATENESS_AT) or 0.0,
        )

    def run(self) -> None:
        """Poll every ``poll_interval`` (measured start to start) until shutdown."""
        name = self.source.name
        while not self.stop.is_set():
            started = self.clock.now()
            self.health.beat(name)
            try:
                self.poll_once()
            except Interrupted:
                break
            except TokenError as exc:
                self.warnings.raise_if(name, "token", True, f"token request failed ({exc.reason})")
            except GraphError as exc:
                log.warning(
                    "poll abandoned, the next one covers it",
                    extra=fields(source=name, reason=exc.reason, error=str(exc)),
                )
            except StateError:
                log.exception("state file failed", extra=fields(source=name))
            else:
                self.warnings.raise_if(name, "token", False, "")
            remaining = started + self.source.poll_interval - self.clock.now()
            if self.clock.sleep(remaining):
                break
        log.info("source loop stopped", extra=fields(source=name))

    def poll_once(self) -> PollOutcome:
        """One complete query from the planned window start to the last page."""
        name = self.source.name
        started = self.clock.now()
        window = plan_window(started, self.lateness, self.last_complete, self.policy)
        self.metrics.query_window.labels(name).set(window.seconds)
        if window.clipped:
            self.metrics.lookback_clipped.labels(name).inc()
            log.warning(
                "the gap since the last complete poll exceeds max_lookback; older events "
                "that arrived meanwhile cannot be fetched",
                extra=fields(source=name, max_lookback=self.source.max_lookback),
            )
        throttled_before = self.graph.throttled
        outcome = PollOutcome(window=window)
        seen_this_poll: set[bytes] = set()
        for page in self.graph.pages(self.source, window.start):
            self.health.progressed(name)
            outcome.pages += 1
            if not page.events:
                self.metrics.empty_pages.labels(name).inc()
                continue
            self._handle_page(page.events, seen_this_poll, outcome)
            if self.stop.is_set():
                raise Interrupted
        outcome.throttled = self.graph.throttled - throttled_before
        self._complete(window, outcome)
        return outcome

    def _handle_page(
        self, events: list[dict[str, Any]], seen_this_poll: set[bytes], outcome: PollOutcome
    ) -> None:
        name = self.source.name
        page = key_events(events, self.source.time_field)
        delivered = self.ledger.delivered(name, [item.key for item in page])
        fresh = select_new(page, delivered, seen_this_poll)
        now = self.clock.now()
        outcome.events += len(page)
        times = [item.event_time for item in page if item.event_time is not None]
        if times:
            newest = max(times)
            if outcome.newest_event_time is None or newest > outcome.newest_event_time:
                outcome.newest_event_time = newest
        duplicates = len(page) - len(fresh)
        if duplicates:
            self.metrics.duplicates.labels(name).inc(duplicates)
        if not fresh:
            return
        without_id = sum(1 for item in fresh if not item.has_id)
        if without_id:
            self.metrics.events_without_id.labels(name).inc(without_id)
        batch = [
            OutgoingEvent(item.event, parse_event_time(item.event.get(self.source.time_field)))
            for item in fresh
        ]
        if not self.delivery.send(name, batch):
            raise Interrupted
        self._persist(
            lambda: self.ledger.record(name, [(item.key, item.event_time or now) for item in fresh])
        )
        outcome.new += len(fresh)
        lags = arrival_lags(fresh, now, self.last_start)
        for lag in lags:
            self.metrics.arrival_lag.labels(name).observe(max(0.0, lag))
        outcome.max_lag = max([outcome.max_lag, *lags])

    def _complete(self, window: QueryWindow, outcome: PollOutcome) -> None:
        """Record a complete poll: checkpoints, drift, the lateness mark, eviction, metrics."""
        name = self.source.name
        finished = self.clock.now()
        if outcome.newest_event_time is not None:
            self.newest_event_time = max(outcome.newest_event_time, self.newest_event_time or 0.0)
        drift = None if self.newest_event_time is None else finished - self.newest_event_time
        worst = max(outcome.max_lag, drift or 0.0)
        self.lateness = observe(self.lateness, finished, worst, self.policy)
        self.last_complete = window.asof
        self.last_start = window.start
        checkpoints = {
            CHECKPOINT_LAST_COMPLETE: window.asof,
            CHECKPOINT_LAST_START: window.start,
            CHECKPOINT_LATENESS: self.lateness.seconds,
            CHECKPOINT_LATENESS_AT: self.lateness.at,
        }
        if self.newest_event_time is not None:
            checkpoints[CHECKPOINT_NEWEST_EVENT] = self.newest_event_time
        self._persist(lambda: self.ledger.set_checkpoints(name, checkpoints))
        self._persist(lambda: self.ledger.evict(name, eviction_horizon(finished, self.policy)))
        if drift is not None:
            self.metrics.api_drift.labels(name).set(drift)
        self.metrics.last_success.labels(name).set(finished)
        self.metrics.cycle_duration.labels(name).observe(finished - window.asof)
        self.health.progressed(name)
        self.warnings.check_poll(name, window, outcome, drift)
        log.info(
            "poll complete",
            extra=fields(
                source=name,
                window_seconds=round(window.seconds),
                pages=outcome.pages,
                events=outcome.events,
                new=outcome.new,
                duplicates=outcome.events - outcome.new,
                drift_seconds=None if drift is None else round(drift, 1),
                max_lag_seconds=round(outcome.max_lag, 1),
            ),
        )

    def _persist(self, write: Callable[[], T]) -> T:
        """Retry a ledger write until it succeeds: a full disk pauses delivery, it loses nothing."""
        attempt = 0
        while True:
            try:
                return write()
            except StateError as exc:
                delay = backoff(attempt, cap=60.0)
                log.error(
                    "cannot write the state file; delivery paused",
                    extra=fields(source=self.source.name, error=str(exc), retry_in=round(delay)),
                )
                if self.clock.sleep(delay):
                    raise Interrupted from None
                attempt += 1

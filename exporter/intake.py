"""One page taken in: drop what was delivered, send the rest, record it, learn from its lags.

The loop (:mod:`exporter.collector`) decides which query's page comes next; what becomes
of a page once fetched is decided here, the same for every tier. New events go to every
sink and only then into the ledger, so a crash between the two sends a page twice at most
and never loses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.clock import Clock
from exporter.errors import Interrupted, StateError
from exporter.ledger import Ledger
from exporter.logs import fields
from exporter.metrics import ExporterMetrics
from exporter.pipeline import KeyedEvent, Outlet, Page
from exporter.planner import SourcePlanner
from exporter.retry import backoff
from exporter.schedule import CATCH_UP, Launch, QuerySchedule
from exporter.tiers import Tier

log = logging.getLogger(__name__)

T = TypeVar("T")


def select_new(
    page: Sequence[KeyedEvent], delivered: set[bytes], seen_this_poll: set[bytes]
) -> list[KeyedEvent]:
    """The events of a page to send: not delivered before, and not twice within the page or poll."""
    new = []
    for item in page:
        if item.key in delivered or item.key in seen_this_poll:
            continue
        seen_this_poll.add(item.key)
        new.append(item)
    return new


def arrival_lags(
    new: Iterable[KeyedEvent], now: float, previous_start: float | None
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
        for item in new
        if item.event_time is not None and item.event_time >= previous_start
    ]


@dataclass
class RunTally:
    """What one query has seen so far; its tier and times are its :class:`Launch`'s."""

    pages: int = 0
    requests: int = 0
    throttle_retries: int = 0
    events: int = 0
    listed: int = 0  # what the listings held: events, or a source's own entries (Page.listed)
    new: int = 0
    newest_event_time: float | None = None
    window_newest: float | None = None  # a source's own, when it reports one (Page)
    max_lag: float = 0.0


@dataclass
class TierRun:
    """A query of one tier in progress: its pages are pulled one at a time."""

    launch: Launch
    tally: RunTally
    pages: Iterator[Page]
    seen: set[bytes] = field(default_factory=set)

    @property
    def tier(self) -> Tier:
        return self.launch.tier


class PageIntake:
    """Takes in the pages of one source's queries, whichever tier fetched them."""

    def __init__(
        self,
        source: str,
        ledger: Ledger,
        delivery: Outlet,
        metrics: ExporterMetrics,
        clock: Clock,
        planner: SourcePlanner,
        schedule: QuerySchedule,
    ) -> None:
        self.source = source
        self.ledger = ledger
        self.delivery = delivery
        self.metrics = metrics
        self.clock = clock
        self.planner = planner
        self.schedule = schedule

    def take(self, page: list[KeyedEvent], run: TierRun) -> None:
        """Send the page's new events, record them, and learn from their lags what it can."""
        name = self.source
        tally = run.tally
        delivered = self.ledger.delivered(name, [(item.key, item.event_time) for item in page])
        new = select_new(page, delivered, run.seen)
        now = self.clock.now()
        tally.events += len(page)
        times = [item.event_time for item in page if item.event_time is not None]
        if times:
            newest = max(times)
            if tally.newest_event_time is None or newest > tally.newest_event_time:
                tally.newest_event_time = newest
        duplicates = len(page) - len(new)
        if duplicates:
            self.metrics.duplicates.labels(name).inc(duplicates)
        if not new:
            return
        without_id = sum(1 for item in new if not item.has_id)
        if without_id:
            self.metrics.events_without_id.labels(name).inc(without_id)
        self.delivery.send(name, new)  # Interrupted on shutdown: then nothing is recorded
        persist(
            lambda: self.ledger.record(name, [(item.key, item.event_time) for item in new], now),
            self.clock,
            name,
        )
        tally.new += len(new)
        if run.launch.backlog:
            return  # visible before this process first read the stretch: not lateness
        if run.tier.is_fresh:
            lags = arrival_lags(new, now, self.schedule.previous_fresh_start)
            self.planner.observe_fresh_lags(lags, now)
        else:
            self.metrics.late_events_found.labels(name, run.tier.name).inc(len(new))
            lags = [now - item.event_time for item in new if item.event_time is not None]
            if run.tier.name != CATCH_UP:  # an incident's release says nothing of lateness
                half_period = run.tier.interval / 2  # it became visible since the last look
                self.planner.observe_late_finds([max(0.0, lag - half_period) for lag in lags], now)
        arrival_lag = self.metrics.arrival_lag.labels(name)
        for lag in lags:
            arrival_lag.observe(max(0.0, lag))
        tally.max_lag = max([tally.max_lag, *lags])


def persist(write: Callable[[], T], clock: Clock, source: str) -> T:
    """Retry a ledger write until it succeeds: a full disk pauses delivery, it loses nothing."""
    attempt = 0
    while True:
        try:
            return write()
        except StateError as exc:
            delay = backoff(attempt, cap=60.0)
            log.error(
                "cannot write the state file; delivery paused",
                extra=fields(source=source, error=str(exc), retry_in=round(delay)),
            )
            if clock.sleep(delay):
                raise Interrupted from None
            attempt += 1

"""The loop: plan the tiers, fetch a page, drop what was delivered, send, record, observe.

One :class:`SourceLoop` per configured source, each in its own thread, all sharing the token
provider, the request budget, the ledger and the sinks. Within a source, the tiers of
:mod:`exporter.window` (a frequent fresh query and rarer deep sweeps) run interleaved page
by page, each getting at least its planned share of the budget. Per page, new events go to
every sink and only then into the ledger; a shutdown lets the page in flight finish (sent
and recorded) and stops before the next one, so at most that one page can be sent twice
after a crash, and nothing is lost.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from exporter.budget import BudgetShares
from exporter.clock import Clock
from exporter.config import BudgetConfig, SourceConfig
from exporter.delivery import Delivery, OutgoingEvent
from exporter.errors import GraphError, StateError, TokenError
from exporter.eventtime import parse_event_time
from exporter.graph import Interrupted, Page
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger, event_key
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.rescan import PRIOR_YIELD, Band, band_of, plan_rescans
from exporter.retry import backoff
from exporter.window import (
    DEEPEST,
    FRESH,
    FRESH_QUANTILE,
    LAG_HALF_LIFE,
    LagHistogram,
    SourcePolicy,
    Tier,
    describe_waits,
    eviction_horizon,
    guaranteed_lateness,
    late_event_waits,
    plan_tiers,
    sweep_behind,
    sweep_due,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_LAST_COMPLETE = "last_complete"
CHECKPOINT_LAST_START = "last_start"
CHECKPOINT_NEWEST_EVENT = "newest_event_time"
CHECKPOINT_FIRST_START = "first_start"
FRONTIER_PREFIX = "frontier:"
CREDIT_CAP = 20.0  # requests a tier may bank while it has nothing to fetch
RATE_SMOOTHING = 0.3
REPLAN_CHANGE = 0.2  # replan when the measured event rate moved by more than this share
RUN_RETRY_DELAY = 30.0
GAP_TOLERANCE = 1.0  # seconds of uncovered event time not worth a query
CATCH_UP = "catch-up"  # one-off queries for gaps the fresh tier left, see _queue_catch_up


def _moved(value: float | None, planned: float | None) -> bool:
    """Whether a measurement moved by more than ``REPLAN_CHANGE`` of what the plan assumed.

    Appearing or disappearing (a lag quantile needs enough samples) counts as moving.
    """
    if value is None or planned is None:
        return (value is None) != (planned is None)
    return abs(value - planned) > REPLAN_CHANGE * max(planned, 1e-9)


class EventPages(Protocol):
    """Where a source's events come from: Graph over HTTPS, or a model in simulated time."""

    throttled: int  # throttle retries so far, for the in-band "sustained throttling" warning
    budget_waited: float  # seconds waited for the request budget so far, for the tier metric

    def pages(self, source: SourceConfig, start: float, end: float | None = None) -> Iterator[Page]:
        """Every page of events with ``start <= event time (<= end)``, newest first."""
        ...


@dataclass(frozen=True, slots=True)
class KeyedEvent:
    """An event from a page with its dedupe key and parsed event time.

    ``event_time`` is ``when`` in epoch seconds (for lags and the ledger), computed once:
    every event passes through several lists per page.
    """

    key: bytes
    has_id: bool
    when: datetime | None
    event_time: float | None
    event: dict[str, Any]


def key_events(events: Iterable[dict[str, Any]], time_field: str) -> list[KeyedEvent]:
    """Attach dedupe keys and event times to a page's events."""
    keyed = []
    for event in events:
        key, has_id = event_key(event)
        when = parse_event_time(event.get(time_field))
        seconds = None if when is None else when.timestamp()
        keyed.append(KeyedEvent(key, has_id, when, seconds, event))
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
    """What one run of a tier saw."""

    tier: str
    asof: float
    start: float
    end: float | None
    pages: int = 0
    events: int = 0
    new: int = 0
    newest_event_time: float | None = None
    max_lag: float = 0.0
    throttled: int = 0

    @property
    def seconds(self) -> float:
        """How far back this query reached: the ``query_window_seconds`` gauge for fresh runs."""
        return self.asof - self.start


@dataclass
class TierRun:
    """A query of one tier in progress: its pages are pulled one at a time."""

    tier: Tier
    outcome: PollOutcome
    pages: Iterator[Page]
    seen: set[bytes] = field(default_factory=set)
    backlog: bool = False  # a first read of its stretch: what it finds may predate the start


class SourceLoop:
    """Runs one source's tiers until ``stop`` is set."""

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
        shares: BudgetShares | None = None,
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
        budget = budget or BudgetConfig(requests=5, per=10.0)
        self.shares = shares or BudgetShares(budget.usable, 1)
        self.policy = SourcePolicy(
            source.poll_interval, source.lookback, source.max_lookback, source.page_size
        )
        name = source.name
        self.lags = LagHistogram()
        self.rate = 0.0
        self.planned_rate = 0.0
        self.tiers = plan_tiers(self.policy, self.rate, None, self.shares.available(name))
        self.rescans: tuple[Tier, ...] = ()
        self.found_late = LagHistogram()  # ages at which sweeps and rescans find late events
        self.planned_yields: list[float] = []
        self.rescan_starts: dict[str, float] = {}
        self.plan_words = ""
        self.rescans_shrunk = False
        self.last_complete = ledger.checkpoint(name, CHECKPOINT_LAST_COMPLETE)
        self.last_fresh_start = ledger.checkpoint(name, CHECKPOINT_LAST_START)
        self.newest_event_time = ledger.checkpoint(name, CHECKPOINT_NEWEST_EVENT)
        self.previous_fresh_start: float | None = None
        self.planned_quantile: float | None = None
        self.frontiers: dict[str, float] = {}
        self.credits: dict[str, float] = {}
        self.completed_tiers: set[str] = set()
        self.warmed = False  # every tier of the schedule has completed a run since the start
        self.dark_from: float | None = None
        self.catch_up: tuple[float, float] | None = None
        self.not_before: dict[str, float] = {}
        self.active: dict[str, TierRun] = {}
        self._credit_at = clock.now()
        self._adopt_tiers(clock.now())

    # -- planning ------------------------------------------------------------------------

    @property
    def schedule(self) -> tuple[Tier, ...]:
        """Every tier that runs: fresh, the sweeps, deepest, then the rescans of spare budget."""
        return self.tiers + self.rescans

    def _adopt_tiers(self, now: float) -> None:
        """Take up a new plan; a sweep seen for the first time starts one band behind its age."""
        name = self.source.name
        new_frontiers: dict[str, float] = {}
        for tier in self.tiers:
            if tier.is_fresh or tier.name in self.frontiers:
                continue
            stored = self.ledger.checkpoint(name, FRONTIER_PREFIX + tier.name)
            if stored is None:
                stored = now - tier.age - tier.interval
                new_frontiers[FRONTIER_PREFIX + tier.name] = stored
            self.frontiers[tier.name] = stored
        if new_frontiers:
            # Persisted at once: a crash before the first sweep must not move them on.
            self._persist(lambda: self.ledger.set_checkpoints(name, new_frontiers))
        self.planned_rate = self.rate
        self._plan_rescans(now)

    def _band_yield(self, band: Band) -> float:
        """Late events found per second at the band's ages: the decayed count over its mean life."""
        return self.found_late.mass(band.low, band.high) * math.log(2) / LAG_HALF_LIFE

    def _yield_weights(self, rescans: Sequence[Tier]) -> list[float]:
        """Each rescan band's measured yield with the planner's prior: what a plan weighs."""
        return [self._band_yield(band_of(t)) + PRIOR_YIELD for t in rescans]

    def _yields_moved(self) -> bool:
        current = self._yield_weights(self.rescans)
        return any(_moved(c, p) for c, p in zip(current, self.planned_yields, strict=True))

    def _plan_rescans(self, now: float) -> None:
        """Spend what the tiers leave of this source's share on rescans, and publish the plan."""
        name = self.source.name
        self.found_late.observe((), now)  # decay to now
        fresh = self.tiers[0]
        spare = self.shares.available(name) - sum(t.requests_per_second for t in self.tiers)
        plan = plan_rescans(
            fresh.age,
            self.policy.max_lookback,
            self._band_yield,
            self.rate,
            self.policy.page_size,
            spare,
            self.policy.poll_interval,
            self.source.rescan_floor,
        )
        gone = {t.name for t in self.rescans} - {t.name for t in plan.tiers}
        self.rescans = plan.tiers
        self.planned_yields = self._yield_weights(plan.tiers)
        self.shares.publish(name, sum(tier.requests_per_second for tier in self.schedule))
        self.metrics.publish_plan(name, self.schedule, gone, spare, plan.floor_met)
        waits = late_event_waits(self.schedule)
        self.metrics.late_event_max_wait.labels(name).set(max(w for _, w in waits))
        words = describe_waits(waits)
        if words != self.plan_words:
            self.plan_words = words
            log.info(words, extra=fields(source=name, rescans=len(plan.tiers)))
        shrunk = not plan.floor_met and self.policy.max_lookback > fresh.age
        if shrunk and not self.rescans_shrunk:
            log.warning(
                "the spare budget cannot rescan every band of age as often as rescan_floor",
                extra=fields(source=name, spare_requests_per_second=round(spare, 4)),
            )
        self.rescans_shrunk = shrunk

    def _replan(self, now: float) -> None:
        """Re-plan when the measured rate, lag distribution or late-event yields moved enough."""
        quantile = self.lags.quantile(FRESH_QUANTILE)
        if not (_moved(self.rate, self.planned_rate) or _moved(quantile, self.planned_quantile)):
            self.found_late.observe((), now)
            if self._yields_moved():
                self._plan_rescans(now)
            return
        self.tiers = plan_tiers(
            self.policy, self.rate, quantile, self.shares.available(self.source.name)
        )
        self.planned_quantile = quantile
        self._adopt_tiers(now)
        log.info(
            "tiers planned",
            extra=fields(
                source=self.source.name,
                events_per_second=round(self.rate, 2),
                tiers=[(t.name, round(t.age), round(t.interval)) for t in self.schedule],
            ),
        )

    # -- scheduling ----------------------------------------------------------------------

    def run(self) -> None:
        """Start tiers as they fall due and pull their pages, fairly, until shutdown."""
        name = self.source.name
        while not self.stop.is_set():
            now = self.clock.now()
            self.health.beat(name)
            self._start_due(now)
            self._publish_schedule(now)
            if not self.active:
                if self.clock.sleep(max(0.05, self._next_due(now) - now)):
                    break
                continue
            run = self._pick(now)
            try:
                self._step(run)
            except Interrupted:
                break
            except TokenError as exc:
                self._abandon(run, f"token request failed ({exc.reason})")
                self.warnings.raise_if(name, "token", True, f"token request failed ({exc.reason})")
            except GraphError as exc:
                self._abandon(run, str(exc), reason=exc.reason)
            except StateError as exc:
                self._abandon(run, str(exc))
        log.info("source loop stopped", extra=fields(source=name))

    def _due(self, tier: Tier, now: float) -> bool:
        if tier.name in self.active or now < self.not_before.get(tier.name, 0.0):
            return False
        if tier.is_rescan:
            return now >= self.rescan_starts.get(tier.name, -math.inf) + tier.interval
        if tier.is_fresh:
            return self.last_fresh_start is None or now >= self.last_fresh_start + tier.interval
        return sweep_due(now, tier, self.frontiers[tier.name])

    def _next_due(self, now: float) -> float:
        moments = []
        for tier in self.schedule:
            if tier.is_rescan:
                due = self.rescan_starts.get(tier.name, now - tier.interval) + tier.interval
            elif tier.is_fresh:
                due = (self.last_fresh_start or now) + tier.interval
            else:
                due = self.frontiers[tier.name] + tier.age + tier.interval
            moments.append(max(due, self.not_before.get(tier.name, 0.0)))
        if self.catch_up is not None:
            moments.append(self.not_before.get(CATCH_UP, now))
        return min(moments)

    def _start_due(self, now: float) -> None:
        for tier in self.schedule:
            if not self._due(tier, now):
                continue
            if tier.is_rescan:
                start, end = self._rescan_range(now, tier)
                self.rescan_starts[tier.name] = now
                if end - start <= GAP_TOLERANCE:
                    continue
            elif tier.is_fresh:
                start, end = self._fresh_start(now, tier), None
                if self.last_complete is not None:
                    start = self._cover_fresh_gap(self.last_complete - tier.age, start, tier)
                self.last_fresh_start = now
                self.metrics.query_window.labels(self.source.name).set(tier.window)
            else:
                start, end = self.frontiers[tier.name], now - tier.age
            self._launch(tier, start, end, now)
        idle = CATCH_UP not in self.active and now >= self.not_before.get(CATCH_UP, 0.0)
        if self.catch_up is not None and idle:
            start, end = self.catch_up
            self.catch_up = None
            catch_up = Tier(CATCH_UP, self.tiers[0].interval, 0.0, end - start, 0.0)
            self._launch(catch_up, start, end, now)

    def _rescan_range(self, now: float, tier: Tier) -> tuple[float, float]:
        """From the band's old edge at its last rescan to its young edge now.

        So every event as late as the band that became visible since then is in range,
        whatever band edges it drifted across meanwhile (see :mod:`exporter.rescan`); never
        before the oldest frontier, below which the ledger forgets what it sent.
        """
        band = band_of(tier)
        since = self.rescan_starts.get(tier.name, now - tier.interval)
        return max(since - band.high, min(self.frontiers.values())), now - band.low

    def _cover_fresh_gap(self, covered_from: float, start: float, tier: Tier) -> float:
        """The fresh query's start, reaching back over what late or failed runs left uncovered.

        A gap up to one window (a run that started late while other tiers held the budget)
        costs a fraction of a page when the fresh query simply starts earlier, but at least a
        whole request as a query of its own. A longer one (Graph was down) is queued as a
        catch-up on leftover budget, so the fresh tier stays fresh.
        """
        if start - covered_from <= tier.window:
            return min(start, covered_from)
        self._queue_catch_up(covered_from, start)
        return start

    def _queue_catch_up(self, start: float, end: float) -> None:
        """Ask once, on leftover budget, for events with ``start <= time <= end``.

        Used for stretches the fresh tier did not cover in time (it ran late, failed, or the
        API held events back); without it they would wait for the sweep whose age covers
        them. Bounded below by the oldest frontier, which eviction respects.
        """
        start = max(start, min(self.frontiers.values(), default=start))
        if end - start <= GAP_TOLERANCE:
            return
        if self.catch_up is not None:
            start, end = min(start, self.catch_up[0]), max(end, self.catch_up[1])
        self.catch_up = (start, end)

    def _launch(self, tier: Tier, start: float, end: float | None, now: float) -> None:
        """Begin a query of ``tier``; its pages are pulled one at a time by the loop."""
        outcome = PollOutcome(tier.name, now, start, end, throttled=self.graph.throttled)
        self.metrics.tier_window.labels(self.source.name, tier.name).set(
            (end if end is not None else now) - start
        )
        self.active[tier.name] = TierRun(
            tier,
            outcome,
            self.graph.pages(self.source, start, end),
            backlog=not self.warmed and tier.name not in self.completed_tiers,
        )

    def _fresh_start(self, now: float, tier: Tier) -> float:
        """The fresh window's start; until a first fresh query completes, where the first began.

        Sweeps only reach back from their own frontiers, so the first window's older part
        would otherwise be left to chance if the first query is cut short.
        """
        start = now - tier.window
        if self.last_complete is not None:
            return start
        name = self.source.name
        first = self.ledger.checkpoint(name, CHECKPOINT_FIRST_START)
        if first is None:
            self._persist(
                lambda: self.ledger.set_checkpoints(name, {CHECKPOINT_FIRST_START: start})
            )
            return start
        return max(min(start, first), now - self.source.max_lookback)

    def _pick(self, now: float) -> TierRun:
        """The run whose tier is furthest below its planned share of requests (fresh on ties).

        Rescans never go while a fresh query has pages to fetch: they spend what the budget
        has to spare, and a fresh query waiting behind them would deliver everything later.
        Among themselves the one whose next rescan falls due first goes first (earliest
        deadline): a band rescanned every minute is not held up by a deep band's hundreds
        of pages, and one that read a long backlog does not then wait for others' credits.

        A catch-up query does the shallow sweeps' job (fetching what the fresh window missed)
        for the stretch it covers, so while one runs it takes their turns and the rescans'
        too: after an incident it reads the released stretch once, and rescans sharing the
        budget with it would read the same stretch again, each at its own period, so the
        last of the release would wait for the slowest band.
        """
        elapsed = max(0.0, now - self._credit_at)
        self._credit_at = now
        for tier in self.schedule:
            credit = self.credits.get(tier.name, 0.0) + tier.requests_per_second * elapsed
            self.credits[tier.name] = min(CREDIT_CAP, credit)
        runs = [run for run in self.active.values() if not run.tier.is_rescan]
        if CATCH_UP in self.active:
            runs = [
                run for run in runs if run.tier.is_fresh or run.tier.name in (CATCH_UP, DEEPEST)
            ]
        rescans = [run for run in self.active.values() if run.tier.is_rescan]
        if rescans and FRESH not in self.active and CATCH_UP not in self.active:
            runs.append(min(rescans, key=lambda run: run.outcome.asof + run.tier.interval))
        return max(runs, key=lambda run: (self.credits.get(run.tier.name, 0.0), run.tier.is_fresh))

    def _publish_schedule(self, now: float) -> None:
        name = self.source.name
        behind: dict[str, float] = {}
        for tier in self.schedule:
            if tier.is_fresh or tier.is_rescan:
                last = self.last_fresh_start if tier.is_fresh else self.rescan_starts.get(tier.name)
                late = now - (last or now) - tier.interval
                behind[tier.name] = max(0.0, late) if tier.name not in self.active else 0.0
            else:
                behind[tier.name] = sweep_behind(now, tier, self.frontiers[tier.name])
            self.metrics.tier_behind.labels(name, tier.name).set(behind[tier.name])
        self.metrics.guaranteed_lateness.labels(name).set(guaranteed_lateness(self.tiers, behind))

    # -- one page ------------------------------------------------------------------------

    def _step(self, run: TierRun) -> None:
        """Fetch and handle the run's next page, or complete the run."""
        name = self.source.name
        waited_before = self.graph.budget_waited
        try:
            page = next(run.pages)
        except StopIteration:
            self._complete(run)
            return
        finally:
            waited = self.graph.budget_waited - waited_before
            self.metrics.tier_budget_wait.labels(name, run.tier.name).inc(waited)
        self.credits[run.tier.name] = self.credits.get(run.tier.name, 0.0) - 1.0
        self.metrics.tier_requests.labels(name, run.tier.name).inc()
        self.health.progressed(name)
        run.outcome.pages += 1
        if not page.events:
            self.metrics.empty_pages.labels(name).inc()
        else:
            self._handle_page(page.events, run)
        if self.stop.is_set():
            raise Interrupted

    def _handle_page(self, events: list[dict[str, Any]], run: TierRun) -> None:
        name = self.source.name
        outcome = run.outcome
        page = key_events(events, self.source.time_field)
        delivered = self.ledger.delivered(name, [(item.key, item.event_time) for item in page])
        fresh = select_new(page, delivered, run.seen)
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
        batch = [OutgoingEvent(item.event, item.when) for item in fresh]
        if not self.delivery.send(name, batch):
            raise Interrupted
        self._persist(
            lambda: self.ledger.record(name, [(item.key, item.event_time) for item in fresh], now)
        )
        outcome.new += len(fresh)
        if run.backlog:
            return  # visible before this process first read the stretch: not lateness
        if run.tier.is_fresh:
            lags = arrival_lags(fresh, now, self.previous_fresh_start)
            self.lags.observe(lags, now)
        else:
            self.metrics.late_events_found.labels(name, run.tier.name).inc(len(fresh))
            lags = [now - item.event_time for item in fresh if item.event_time is not None]
            if run.tier.name != CATCH_UP:  # an incident's release says nothing of lateness
                half_period = run.tier.interval / 2  # it became visible since the last look
                self.found_late.observe([max(0.0, lag - half_period) for lag in lags], now)
        arrival_lag = self.metrics.arrival_lag.labels(name)
        for lag in lags:
            arrival_lag.observe(max(0.0, lag))
        outcome.max_lag = max([outcome.max_lag, *lags])

    def _abandon(self, run: TierRun, error: str, reason: str = "other") -> None:
        """A run that failed for good: its tier retries later; nothing it did not finish counts."""
        self.active.pop(run.tier.name, None)
        self.not_before[run.tier.name] = self.clock.now() + min(RUN_RETRY_DELAY, run.tier.interval)
        if run.tier.is_rescan:  # the next rescan reaches back over what this one did not read
            self.rescan_starts[run.tier.name] = run.outcome.start + band_of(run.tier).high
        if run.tier.name == CATCH_UP and run.outcome.end is not None:
            self._queue_catch_up(run.outcome.start, run.outcome.end)
        log.warning(
            "query abandoned, the tier retries",
            extra=fields(source=self.source.name, tier=run.tier.name, reason=reason, error=error),
        )

    # -- completion ----------------------------------------------------------------------

    def _complete(self, run: TierRun) -> None:
        """A run reached its last page: move the tier on, record checkpoints, observe."""
        name = self.source.name
        tier, outcome = run.tier, run.outcome
        self.active.pop(tier.name, None)
        self._mark_completed(tier)
        outcome.throttled = self.graph.throttled - outcome.throttled
        finished = self.clock.now()
        checkpoints: dict[str, float] = {}
        if tier.is_fresh:
            self._complete_fresh(outcome, finished, checkpoints)
        elif tier.name in self.frontiers:
            assert outcome.end is not None
            self.frontiers[tier.name] = outcome.end
            checkpoints[FRONTIER_PREFIX + tier.name] = outcome.end
        self._persist(lambda: self.ledger.set_checkpoints(name, checkpoints))
        in_flight = [active.outcome.start for active in self.active.values()]
        horizon = eviction_horizon(self.frontiers.values(), in_flight)
        self._persist(lambda: self.ledger.evict(name, horizon))
        self.health.progressed(name)
        log.info(
            "query complete",
            extra=fields(
                source=name,
                tier=tier.name,
                window_seconds=round((outcome.end or outcome.asof) - outcome.start),
                pages=outcome.pages,
                events=outcome.events,
                new=outcome.new,
                duplicates=outcome.events - outcome.new,
                max_lag_seconds=round(outcome.max_lag, 1),
            ),
        )

    def _mark_completed(self, tier: Tier) -> None:
        """Once every tier has completed a run, every age up to ``max_lookback`` was read.

        Until then a tier's first run reads its stretch for the first time and cannot tell
        lateness from the backlog of before the start. After it, a stretch is always one some
        tier read before, so a rescan band that a replan creates finds late events, not
        backlog, from its first run.
        """
        self.completed_tiers.add(tier.name)
        if not self.warmed:
            self.warmed = all(t.name in self.completed_tiers for t in self.schedule)

    def _complete_fresh(
        self, outcome: PollOutcome, finished: float, checkpoints: dict[str, float]
    ) -> None:
        name = self.source.name
        if outcome.newest_event_time is not None:
            self.newest_event_time = max(outcome.newest_event_time, self.newest_event_time or 0.0)
            checkpoints[CHECKPOINT_NEWEST_EVENT] = self.newest_event_time
        drift = None if self.newest_event_time is None else finished - self.newest_event_time
        if outcome.newest_event_time is not None and outcome.newest_event_time > outcome.start:
            # Events per second over the stretch that holds visible events: an incident that
            # hides the recent past must not make the source look quiet.
            measured = outcome.events / (outcome.newest_event_time - outcome.start)
            self.rate = (
                measured
                if not self.rate
                else RATE_SMOOTHING * measured + (1 - RATE_SMOOTHING) * self.rate
            )
        self.previous_fresh_start = outcome.start
        self.last_complete = outcome.asof
        checkpoints[CHECKPOINT_LAST_COMPLETE] = outcome.asof
        checkpoints[CHECKPOINT_LAST_START] = outcome.asof
        if drift is not None:
            self.metrics.api_drift.labels(name).set(drift)
        self.metrics.last_success.labels(name).set(finished)
        self.metrics.cycle_duration.labels(name).observe(finished - outcome.asof)
        self.warnings.check_poll(name, outcome.seconds, outcome.events, outcome.throttled, drift)
        self._watch_for_incident(outcome)
        self._replan(finished)

    def _watch_for_incident(self, outcome: PollOutcome) -> None:
        """After nothing new was visible for longer than the fresh tier's age, catch up at once.

        When the API holds events back (an incident) and then releases them, they are older
        than the fresh window and would wait for the sweep whose age covers them, hours
        perhaps. So the stretch from the last event seen before going dark to the start of
        the first fresh query that sees events again is queried once, on the leftover budget.
        Events held back from before the last one seen count too: the shallow sweeps passed
        them while they were invisible, so the stretch reaches back as far as those sweeps do.
        """
        fresh = self.tiers[0]
        # Measured when the query began (its result set is fixed then), not when its last
        # page came in: a long query under a busy budget is not an incident.
        quiet = None if self.newest_event_time is None else outcome.asof - self.newest_event_time
        if quiet is not None and quiet > fresh.age:
            if self.dark_from is None:
                self.dark_from = self.newest_event_time
            return
        if self.dark_from is None:
            return
        reach = max([fresh.window, *(t.age + t.interval for t in self.tiers[1:-1])])
        self._queue_catch_up(self.dark_from - reach, outcome.start)
        self.dark_from = None

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

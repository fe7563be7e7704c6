"""The loop: plan the tiers, fetch a page, drop what was delivered, send, record, observe.

One :class:`SourceLoop` per configured source, each in its own thread, all sharing the token
provider, the request budget, the ledger and the sinks. Within a source, the tiers of
:mod:`exporter.tiers` (a frequent fresh query and rarer deep sweeps) and the rescans of
:mod:`exporter.rescan` run interleaved page by page, in the order :mod:`exporter.schedule`
decides, each getting at least its planned share of the budget. Per page, new events go to
every sink and only then into the ledger; a shutdown lets the page in flight finish (sent
and recorded) and stops before the next one, so at most that one page can be sent twice
after a crash, and nothing is lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from exporter.budget import BudgetShares
from exporter.clock import Clock
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import Interrupted, SourceError, StateError, TokenError
from exporter.inband import InbandWarnings
from exporter.intake import PageIntake, RunTally, TierRun, persist
from exporter.ledger import Ledger
from exporter.logs import fields
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import Outlet, Source
from exporter.planner import CHECKPOINT_EVENT_RATE, SourcePlanner
from exporter.schedule import (
    CHECKPOINT_FIRST_START,
    CHECKPOINT_LAST_COMPLETE,
    CHECKPOINT_NEWEST_EVENT,
    FRONTIER_PREFIX,
    Launch,
    QuerySchedule,
)
from exporter.tiers import (
    DEEPEST,
    Tier,
    guaranteed_lateness,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class SourceLoop:
    """Runs one source's queries until ``stop`` is set; :class:`QuerySchedule` says which."""

    def __init__(
        self,
        source: SourceConfig,
        api: Source,
        ledger: Ledger,
        delivery: Outlet,
        metrics: ExporterMetrics,
        health: Health,
        clock: Clock,
        stop: threading.Event,
        warnings: InbandWarnings,
        budget: BudgetConfig | None = None,
        shares: BudgetShares | None = None,
    ) -> None:
        self.source = source
        self.api = api
        self.ledger = ledger
        self.delivery = delivery
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.stop = stop
        self.warnings = warnings
        budget = budget or BudgetConfig(requests=5, per=10.0)
        self.planner = SourcePlanner(source, shares or BudgetShares(budget.usable, 1), metrics)
        name = source.name
        stored = {
            checkpoint: value
            for checkpoint in (
                CHECKPOINT_LAST_COMPLETE,
                CHECKPOINT_NEWEST_EVENT,
                CHECKPOINT_FIRST_START,
            )
            if (value := ledger.checkpoint(name, checkpoint)) is not None
        }
        self.planner.resume_rate(ledger.checkpoint(name, CHECKPOINT_EVENT_RATE))
        tiers = self.planner.tiers()
        self.schedule = QuerySchedule(tiers, stored, clock.now(), source.max_lookback)
        self.active: dict[str, TierRun] = {}
        self.intake = PageIntake(
            name, ledger, delivery, metrics, clock, self.planner, self.schedule
        )
        self._adopt_tiers(tiers, clock.now())

    def _adopt_tiers(self, tiers: tuple[Tier, ...], now: float) -> None:
        """Take up a new plan of tiers, resuming stored frontiers, and plan the rescans."""
        name = self.source.name
        stored = {
            sweep: value
            for sweep in self.schedule.unknown_sweeps(tiers)
            if (value := self.ledger.checkpoint(name, FRONTIER_PREFIX + sweep)) is not None
        }
        new_frontiers = self.schedule.adopt(tiers, stored, now)
        for stopped in self.schedule.stop_dropped():
            self.active.pop(stopped, None)
        if new_frontiers:
            # Persisted at once: a crash before the first sweep must not move them on.
            self._persist(lambda: self.ledger.set_checkpoints(name, new_frontiers))
        self.planner.adopted(self.schedule, now)

    def _replan(self, now: float) -> None:
        """Take up new tiers when the planner's measurements moved enough to plan again."""
        tiers = self.planner.replan(self.schedule, now)
        if tiers is None:
            return
        self._adopt_tiers(tiers, now)
        log.info(
            "tiers planned",
            extra=fields(
                source=self.source.name,
                events_per_second=round(self.planner.rate, 2),
                tiers=[(t.name, round(t.age), round(t.interval)) for t in self.schedule.all],
            ),
        )

    # -- running -------------------------------------------------------------------------

    def run(self) -> None:
        """Start queries as they fall due and pull their pages, fairly, until shutdown."""
        name = self.source.name
        while not self.stop.is_set():
            now = self.clock.now()
            self.health.beat(name)
            for launch in self.schedule.launches(now):
                self._launch(launch)
            self._publish_schedule(now)
            if not self.active:
                if self.clock.sleep(max(0.05, self.schedule.next_due(now) - now)):
                    break
                continue
            run = self.active[self.schedule.pick(now)]
            try:
                self._step(run)
            except Interrupted:
                break
            except TokenError as exc:
                self._abandon(run, f"token request failed ({exc.reason})")
                self.warnings.raise_if(name, "token", True, f"token request failed ({exc.reason})")
            except SourceError as exc:
                self._abandon(run, str(exc), reason=exc.reason, retry_after=exc.retry_after)
                if exc.retry_after is not None:
                    self.health.blocked(name, exc.reason)
            except StateError as exc:
                self._abandon(run, str(exc))
        log.info("source loop stopped", extra=fields(source=name))

    def _launch(self, launch: Launch) -> None:
        """Begin a query; its pages are pulled one at a time by the loop."""
        name = self.source.name
        if launch.persist:
            self._persist(lambda: self.ledger.set_checkpoints(name, launch.persist))
        tier, start, end = launch.tier, launch.start, launch.end
        if tier.is_fresh:
            self.metrics.query_window.labels(name).set(tier.window)
        self.metrics.tier_window.labels(name, tier.name).set(
            (end if end is not None else launch.asof) - start
        )
        self.active[tier.name] = TierRun(launch, RunTally(), self.api.pages(start, end))

    def _publish_schedule(self, now: float) -> None:
        name = self.source.name
        behind = self.schedule.behind(now)
        for tier, seconds in behind.items():
            self.metrics.tier_behind.labels(name, tier).set(seconds)
        self.metrics.guaranteed_lateness.labels(name).set(
            guaranteed_lateness(self.schedule.tiers, behind)
        )

    # -- one page ------------------------------------------------------------------------

    def _step(self, run: TierRun) -> None:
        """Fetch and handle the run's next page, or complete the run."""
        name = self.source.name
        try:
            page = next(run.pages)
        except StopIteration:
            self._complete(run)
            return
        tally = run.tally
        self.metrics.tier_budget_wait.labels(name, run.tier.name).inc(page.budget_wait)
        self.schedule.fetched(run.tier.name)
        self.metrics.tier_requests.labels(name, run.tier.name).inc()
        self.health.progressed(name)
        tally.pages += 1
        tally.requests += page.requests
        tally.throttle_retries += page.throttle_retries
        tally.listed += len(page.events) if page.listed is None else page.listed
        if page.window_newest is not None:
            tally.window_newest = max(page.window_newest, tally.window_newest or 0.0)
        if not page.events:
            self.metrics.empty_pages.labels(name).inc()
        else:
            self.intake.take(page.events, run)
        if self.stop.is_set():
            raise Interrupted

    def _abandon(
        self, run: TierRun, error: str, reason: str = "other", retry_after: float | None = None
    ) -> None:
        """A run that failed for good: its tier retries later; nothing it did not finish counts."""
        self.active.pop(run.tier.name, None)
        self.schedule.abandoned(run.tier.name, self.clock.now(), retry_after)
        log.warning(
            "query abandoned, the tier retries",
            extra=fields(source=self.source.name, tier=run.tier.name, reason=reason, error=error),
        )

    # -- completion ----------------------------------------------------------------------

    def _complete(self, run: TierRun) -> None:
        """A run reached its last page: move the tier on, record checkpoints, observe."""
        name = self.source.name
        tier, tally, launch = run.tier, run.tally, run.launch
        self.active.pop(tier.name, None)
        finished = self.clock.now()
        checkpoints = self.schedule.completed(tier.name, tally.newest_event_time)
        if tier.is_fresh:
            self._observe_fresh(run, finished)
        elif tier.name in self.schedule.frontiers and tier.name != DEEPEST:
            # A shallow sweep's band is settled and recent; the deepest's is a day old.
            assert launch.end is not None, "a sweep's band has an end"
            self.planner.observe_band(tally.events, launch.start, launch.end)
        if self.planner.rate:
            checkpoints = {**checkpoints, CHECKPOINT_EVENT_RATE: self.planner.rate}
        self._persist(lambda: self.ledger.set_checkpoints(name, checkpoints))
        horizon = self.schedule.eviction_horizon()
        self._persist(lambda: self.ledger.evict(name, horizon))
        self.health.progressed(name)
        log.info(
            "query complete",
            extra=fields(
                source=name,
                tier=tier.name,
                window_seconds=round((launch.end or launch.asof) - launch.start),
                pages=tally.pages,
                requests=tally.requests,
                events=tally.events,
                new=tally.new,
                duplicates=tally.events - tally.new,
                max_lag_seconds=round(tally.max_lag, 1),
            ),
        )

    def _observe_fresh(self, run: TierRun, finished: float) -> None:
        """What a completed fresh query measured: the event rate, drift, warnings; replan.

        Drift against the window is on the window's axis: event time, or Page.window_newest.
        """
        name = self.source.name
        tally, start = run.tally, run.launch.start
        newest = self.schedule.newest_event_time
        drift = None if newest is None else finished - newest
        window_newest = newest if tally.window_newest is None else tally.window_newest
        window_drift = None if window_newest is None else finished - window_newest
        self.planner.observe_rate(tally.events, tally.newest_event_time, start)
        if drift is not None:
            self.metrics.api_drift.labels(name).set(drift)
        if window_drift is not None:
            self.metrics.window_drift.labels(name).set(window_drift)
        self.metrics.last_success.labels(name).set(finished)
        self.metrics.cycle_duration.labels(name).observe(finished - run.launch.asof)
        window = run.launch.asof - start  # how far back the fresh query reached
        self.warnings.check_poll(name, window, tally.listed, tally.throttle_retries, window_drift)
        self._replan(finished)

    def _persist(self, write: Callable[[], T]) -> T:
        return persist(write, self.clock, self.source.name)

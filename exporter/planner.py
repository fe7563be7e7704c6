"""One source's planning: what it measured, and the tiers and rescans planned from that.

The loop (:mod:`exporter.collector`) reports what its queries saw: new events' arrival lags
on the fresh tier, the ages at which sweeps and rescans found late events, the event rate
of each completed fresh query. :class:`SourcePlanner` keeps those measurements and decides
when they moved enough to plan again (:func:`exporter.tiers.plan_tiers` for the tiers,
:func:`exporter.rescan.plan_rescans` for the spare budget). It publishes each plan to the
metrics and the budget shares and says it in the log; it reads and writes no ledger and
sends nothing, so the loop keeps all the I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

from exporter.budget import BudgetShares
from exporter.config import SourceConfig
from exporter.logs import fields
from exporter.metrics import ExporterMetrics
from exporter.rescan import PRIOR_YIELD, Band, band_of, plan_rescans, rescan_weight
from exporter.schedule import QuerySchedule
from exporter.tiers import (
    EARLY_SWEEP,
    FRESH_QUANTILE,
    LAG_HALF_LIFE,
    LagHistogram,
    SourcePolicy,
    Tier,
    describe_waits,
    late_event_waits,
    outgrown,
    plan_tiers,
)

log = logging.getLogger(__name__)

RATE_SMOOTHING = 0.3
# The measured event rate, kept with the frontiers: a restart plans on it at once instead of
# on no rate, which affords every sweep until the first fresh query says otherwise.
CHECKPOINT_EVENT_RATE = "event_rate"
REPLAN_CHANGE = 0.2  # replan when the measured event rate moved by more than this share


def _smoothed(previous: float, measured: float) -> float:
    """An exponentially weighted mean of measurements, the first taken as it is."""
    return measured if not previous else RATE_SMOOTHING * measured + (1 - RATE_SMOOTHING) * previous


def moved(value: float | None, planned: float | None) -> bool:
    """Whether a measurement moved by more than ``REPLAN_CHANGE`` of what the plan assumed.

    Appearing or disappearing (a lag quantile needs enough samples) counts as moving.
    """
    if value is None or planned is None:
        return (value is None) != (planned is None)
    return abs(value - planned) > REPLAN_CHANGE * max(planned, 1e-9)


class SourcePlanner:
    """The measurements of one source and the plans they lead to."""

    def __init__(
        self, source: SourceConfig, shares: BudgetShares, metrics: ExporterMetrics
    ) -> None:
        self.source = source
        self.shares = shares
        self.metrics = metrics
        self.policy = SourcePolicy(
            source.poll_interval, source.lookback, source.max_lookback, source.page_size
        )
        self.lags = LagHistogram()  # arrival lags of new events on the fresh tier
        self.found_late = LagHistogram()  # ages at which sweeps and rescans find late events
        self.rate = 0.0  # what plans use: the larger of the two measurements below
        self.fresh_rate = 0.0
        self.settled_rate = 0.0
        self.planned_rate = 0.0
        self.planned_quantile: float | None = None
        self.planned_yields: list[float] = []
        self.planned_spare = 0.0
        self.plan_words = ""
        self.rescans_shrunk = False

    # -- what the loop reports -----------------------------------------------------------

    def observe_fresh_lags(self, lags: Iterable[float], now: float) -> None:
        self.lags.observe(lags, now)

    def observe_late_finds(self, ages: Iterable[float], now: float) -> None:
        self.found_late.observe(ages, now)

    def resume_rate(self, stored: float | None) -> None:
        """Start from the rate an earlier process measured (``CHECKPOINT_EVENT_RATE``)."""
        if stored is not None and stored > 0 and not self.rate:
            self.fresh_rate = self.rate = stored

    def observe_rate(self, events: int, newest: float | None, start: float) -> None:
        """A fresh query read ``events`` from ``start``; the newest of them at ``newest``.

        Events per second over the stretch that holds visible events: an incident that hides
        the recent past must not make the source look quiet. It runs low: the youngest
        events of the window are not all visible yet (the same lags the fresh window is
        sized for), so it is a floor, and the first measure, and the first to see a surge.
        """
        if newest is None or newest <= start:
            return
        self.fresh_rate = _smoothed(self.fresh_rate, events / (newest - start))
        self.rate = max(self.fresh_rate, self.settled_rate)

    def observe_band(self, events: int, start: float, end: float) -> None:
        """A shallow sweep read ``events`` in the band ``[start, end]`` of event time.

        The band has aged past the sweep's age, so it holds nearly every event that will
        ever be in it: a true rate, which is what a plan's pages are priced on; the fresh
        query's runs a tenth or more low, and a band sized to fill its last page on it
        needs one page more. An empty band says nothing (an incident holds events back).
        """
        if events <= 0 or end <= start:
            return
        self.settled_rate = _smoothed(self.settled_rate, events / (end - start))
        self.rate = max(self.fresh_rate, self.settled_rate)

    # -- plans ---------------------------------------------------------------------------

    def tiers(self, quantile: float | None = None, rate: float | None = None) -> tuple[Tier, ...]:
        """The tiers for ``rate`` (by default the rate measured so far), within this source's
        share of the budget; an early sweep where what the other sources leave pays for it,
        or slowing the fresh tier is worth it (:func:`exporter.tiers.plan_tiers`)."""
        name = self.source.name
        return plan_tiers(
            self.policy,
            self.rate if rate is None else rate,
            quantile,
            self.shares.available(name),
            self.shares.room(name),
        )

    def adopted(self, schedule: QuerySchedule, now: float) -> None:
        """The schedule took up a plan of tiers: remember what it assumed, plan the rescans."""
        self.planned_rate = self.rate
        self.plan_rescans(schedule, now)

    def replan(self, schedule: QuerySchedule, now: float) -> tuple[Tier, ...] | None:
        """New tiers when the rate or the lags moved enough, the rate outgrew the pages a
        tier was planned for, or the other sources' plans moved this one's (the caller
        adopts them); otherwise None, after re-planning
        only the rescans if the late-event yields moved or the other sources' plans moved
        this source's rescan budget."""
        quantile = self.lags.quantile(FRESH_QUANTILE)
        outgrew = outgrown(schedule.tiers, self.rate, self.policy.page_size)
        if not (
            outgrew or moved(self.rate, self.planned_rate) or moved(quantile, self.planned_quantile)
        ):
            if self._shares_moved(schedule):
                return self.tiers(self.planned_quantile)
            self.found_late.observe((), now)
            spare_moved = moved(self.shares.spare(self.source.name), self.planned_spare)
            if spare_moved or self._yields_moved(schedule):
                self.plan_rescans(schedule, now)
            return None
        self.planned_quantile = quantile
        return self.tiers(quantile)

    def _shares_moved(self, schedule: QuerySchedule) -> bool:
        """Whether the other sources' plans changed this one: the same measurements now give
        other tiers (an early sweep comes or goes, the fresh tier slows to pay for it or
        speeds up again). Planned on what the current plan assumed, so that a rate drifting
        within ``REPLAN_CHANGE`` does not re-plan at every query."""
        return self.tiers(self.planned_quantile, self.planned_rate) != schedule.tiers

    def plan_rescans(self, schedule: QuerySchedule, now: float) -> None:
        """Spend this source's part of what every source's tiers leave on rescans; publish."""
        name = self.source.name
        self.found_late.observe((), now)  # decay to now
        fresh = schedule.tiers[0]
        late_yield = self._band_yield(Band(fresh.age, self.policy.max_lookback))
        required, early = self._spends(schedule.tiers)
        self.shares.publish(name, required, rescan_weight(self.rate, late_yield), early)
        spare = self.shares.spare(name)
        self.planned_spare = spare
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
        gone = {t.name for t in schedule.rescans} - {t.name for t in plan.tiers}
        schedule.rescans = plan.tiers
        self.planned_yields = self._yield_weights(plan.tiers)
        self.metrics.publish_plan(name, schedule.all, gone, spare, plan.floor_met)
        waits = late_event_waits(schedule.all)
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

    def _spends(self, tiers: Sequence[Tier]) -> tuple[float, float]:
        """What the plan's required tiers spend, and what its early sweep takes from the room
        the other sources leave.

        An early sweep the source paid for by slowing its own fresh tier takes nothing from
        the others: the plan then counts as required up to what it would spend without an
        early sweep, so the other sources' required tiers do not grow into it.
        """
        total = sum(t.requests_per_second for t in tiers)
        own = sum(t.requests_per_second for t in tiers if t.name != EARLY_SWEEP)
        without = plan_tiers(
            self.policy,
            self.planned_rate,
            self.planned_quantile,
            self.shares.available(self.source.name),
        )
        required = max(own, min(total, sum(t.requests_per_second for t in without)))
        return required, total - required

    def _band_yield(self, band: Band) -> float:
        """Late events found per second at the band's ages: the decayed count over its mean life."""
        return self.found_late.mass(band.low, band.high) * math.log(2) / LAG_HALF_LIFE

    def _yield_weights(self, rescans: Sequence[Tier]) -> list[float]:
        """Each rescan band's measured yield with the planner's prior: what a plan weighs."""
        return [self._band_yield(band_of(t)) + PRIOR_YIELD for t in rescans]

    def _yields_moved(self, schedule: QuerySchedule) -> bool:
        current = self._yield_weights(schedule.rescans)
        return any(moved(c, p) for c, p in zip(current, self.planned_yields, strict=True))

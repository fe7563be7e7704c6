"""The best latency the budget allows: our planner, told the true lateness instead of measuring it.

Ours sizes its fresh window from the arrival lags it measures and spreads the spare budget
over bands of age by the late events it has found (:mod:`exporter.rescan`). Given the
profile's true lateness instead (read off the events themselves), the same square-root
allocation on the same budget, page size and config is the best a collector of this design
can do: an event ``L`` late then waits at most :func:`exporter.tiers.longest_wait` of that
schedule, uniformly distributed below it (it becomes visible at a random point of the period
of the tier that finds it). ``ours/best`` in the tables compares the measured latencies with
these.

An incident's release is not lateness a schedule can plan for: every event it held back
becomes visible at once, and the best any collector can do is read them back to back on the
whole usable budget, so the last waits ``pages / usable rate`` and the others are spread
evenly below that (the fresh tier's share is ignored: a bound, not a plan).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from bench.model import Events
from exporter.config import BudgetConfig, SourceConfig
from exporter.rescan import Band, plan_rescans
from exporter.tiers import FRESH_QUANTILE, SourcePolicy, Tier, longest_wait, plan_tiers

SAMPLE = 200_000


@dataclass(frozen=True, slots=True)
class Best:
    """The latencies of the best schedule, over a sample of the eligible events."""

    p99: float
    maximum: float
    schedule: tuple[Tier, ...]


def best_latencies(events: Events, source: SourceConfig, budget: BudgetConfig) -> Best | None:
    """The square-root schedule for the events' true lateness, and the latencies it gives;
    None when no event becomes visible within the horizon."""
    rng = random.Random(1)
    eligible = [i for i in range(len(events)) if events.available[i] <= events.end]
    if not eligible:
        return None
    released_at = events.incident[1] if events.incident else None
    released = sum(1 for i in eligible if events.available[i] == released_at)
    release = math.ceil(released / source.page_size) / budget.usable
    sample = rng.sample(eligible, min(SAMPLE, len(eligible)))
    held = [i for i in sample if events.available[i] == released_at]
    lateness = sorted(
        events.available[i] - events.times[i] / 1e6
        for i in sample
        if events.available[i] != released_at
    )
    schedule = best_schedule(lateness, events.per_day / 86400.0, source, budget)
    waits = [rng.random() * longest_wait(schedule, late) for late in lateness]
    waits = sorted(waits + [rng.random() * release for _ in held])
    maximum = max([longest_wait(schedule, late) for late in lateness] + [release] * bool(held))
    return Best(waits[min(len(waits) - 1, int(0.99 * len(waits)))], maximum, schedule)


def best_schedule(
    lateness: list[float], rate: float, source: SourceConfig, budget: BudgetConfig
) -> tuple[Tier, ...]:
    """Tiers and rescans planned from the true lateness (``lateness`` sorted, a sample)."""
    policy = SourcePolicy(
        source.poll_interval, source.lookback, source.max_lookback, source.page_size
    )
    quantile = lateness[min(len(lateness) - 1, int(FRESH_QUANTILE * len(lateness)))]
    tiers = plan_tiers(policy, rate, quantile, budget.usable)
    fresh = tiers[0]

    def yields(band: Band) -> float:
        inside = bisect.bisect_right(lateness, band.high) - bisect.bisect_right(lateness, band.low)
        return rate * inside / len(lateness)

    spare = budget.usable - sum(t.requests_per_second for t in tiers)
    rescans = plan_rescans(
        fresh.age,
        policy.max_lookback,
        yields,
        rate,
        policy.page_size,
        spare,
        policy.poll_interval,
        source.rescan_floor,
    )
    return tiers + rescans.tiers

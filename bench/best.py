"""The best latency the budget allows: our planner, told the true lateness instead of measuring it.

Ours sizes its fresh window from the arrival lags it measures and spreads the spare budget
over bands of age by the late events it has found (:mod:`exporter.rescan`). Given the
profile's true lateness instead (read off the events themselves), the same square-root
allocation on the same budget, page size and config is the best a collector of this design
can do: an event ``L`` late then waits at most :func:`exporter.window.longest_wait` of that
schedule, uniformly distributed below it (it becomes visible at a random point of the period
of the tier that finds it). ``ours/best`` in the tables compares the measured latencies with
these.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from bench.model import Events
from exporter.config import BudgetConfig, SourceConfig
from exporter.rescan import Band, plan_rescans
from exporter.window import FRESH_QUANTILE, SourcePolicy, Tier, longest_wait, plan_tiers

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
    sample = rng.sample(eligible, min(SAMPLE, len(eligible)))
    lateness = sorted(events.available[i] - events.times[i] / 1e6 for i in sample)
    schedule = best_schedule(lateness, events.per_day / 86400.0, source, budget)
    waits = sorted(rng.random() * longest_wait(schedule, late) for late in lateness)
    maximum = max(longest_wait(schedule, late) for late in lateness)
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

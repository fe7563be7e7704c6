"""Rescans: the spare request budget, spent re-reading the ages where late events turn up.

The guarantee sweeps of :mod:`exporter.tiers` ask for each stretch of event time once, at
fixed ages, so an event that becomes visible an hour late waits for the sweep whose age is
above an hour. The budget left after the fresh tier and the sweeps is lost if unspent (it
is a rate: a request not made in a 10-second window is gone), so it goes to *rescans*:
between the fresh tier's age and ``max_lookback``, bands of age (geometric, twice as old
each) are queried again and again, each every ``period`` seconds.

A rescan of band ``[low, high)`` at time ``t`` asks for event time ``[t' - high, t - low]``,
``t'`` being when the band was last rescanned. An event ``L`` late with ``low <= L < high``
that became visible after ``t'`` has an event time in that range, so it is found within one
period of becoming visible, whatever band boundaries it drifts across meanwhile. Rescans
share the one ledger with every tier, so they never send an event twice; they guarantee
nothing after a restart (their state is not kept), which is what the sweeps are for.

How often to rescan each band: band ``b`` costs ``c_b`` pages per rescan beyond the new
stretch it reads (its width times the event rate, over the page size) and yields ``n_b``
late events per second (measured: the late events found at its ages). The expected wait
``sum(n_b * T_b / 2)`` under ``sum(c_b / T_b) <= spare`` is least at ``T_b = k *
sqrt(c_b / n_b)`` (Lagrange): bands where late events turn up are rescanned often, cold ones
rarely, and expensive wide bands less often than cheap ones. Each period is kept between
``poll_interval`` (more often is not worth a request) and the lesser of ``floor`` (a band
whose yield is zero today is still probed) and twice the period of the plan that rescans
every band equally often (which minimises the longest wait: the square-root rule minimises
the mean, and a band measured cold may only be quiet so far); ``k`` is found by bisection so
the plan spends the spare budget. Every band also reads each new event once per rescan (the ``rate / page_size``
requests per second that no period changes), so the number of bands is chosen too: the one
with the least expected wait among those that fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.tiers import MIN_RATE, RESCAN_PREFIX, Tier, pages_for

BAND_RATIO = 2.0
MAX_BANDS = 12
# Late events per second assumed in every band before any is measured: small enough that
# one measured find outweighs it, so that cold bands drift towards ``floor``.
PRIOR_YIELD = 1e-6
BISECTION_STEPS = 60
MAX_STRETCH = 2.0  # the longest period, as a multiple of the equal-period plan's


@dataclass(frozen=True, slots=True)
class Band:
    """A band of age: events at least ``low`` and less than ``high`` seconds late."""

    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True, slots=True)
class RescanPlan:
    """The rescan tiers, youngest band first, and whether every band meets the floor."""

    tiers: tuple[Tier, ...]
    floor_met: bool

    @property
    def requests_per_second(self) -> float:
        return sum(tier.requests_per_second for tier in self.tiers)


def band_of(tier: Tier) -> Band:
    """The band a rescan tier covers: ``age`` is its young end, ``window`` its width."""
    return Band(tier.age, tier.age + tier.window)


def bands_between(low: float, high: float, count: int) -> tuple[Band, ...]:
    """``count`` bands from ``low`` to ``high``, each the same ratio older than the last."""
    if count < 1 or high <= low or low <= 0:
        return ()
    edges = [low * (high / low) ** (i / count) for i in range(count + 1)]
    edges[-1] = high
    return tuple(Band(a, b) for a, b in itertools.pairwise(edges))


def band_counts(low: float, high: float) -> range:
    """How many bands are worth weighing: up to one per doubling of age, at most MAX_BANDS."""
    if high <= low or low <= 0:
        return range(0)
    doublings = math.log(high / low) / math.log(BAND_RATIO)
    return range(1, max(1, min(MAX_BANDS, math.ceil(doublings - 1e-9))) + 1)


def rescan_spend(band: Band, period: float, rate: float, page_size: int) -> float:
    """Requests per second: each rescan reads the band and the stretch since the last one."""
    return pages_for(rate * (band.width + period), page_size) / period


def rescan_weight(rate: float, late_yield: float) -> float:
    """What a source's claim on the sources' common rescan budget weighs.

    The same square-root rule across sources as across bands: a source whose rescans cost
    ``c`` pages each (its event rate times the width read) and find ``n`` late events per
    second waits least, for all sources together, at a period proportional to
    ``sqrt(c / n)``, so it should spend ``c / T``, in proportion to ``sqrt(rate * n)``.
    A big stream gets more than a small one with the same share of late events (its
    rescans cost more), a stream where late events turn up more than one where they do not;
    ``PRIOR_YIELD`` keeps a stream measured quiet in the running.
    """
    return math.sqrt(max(rate, 0.0) * (max(late_yield, 0.0) + PRIOR_YIELD))


def plan_rescans(
    low: float,
    high: float,
    yields: Callable[[Band], float],
    rate: float,
    page_size: int,
    spare: float,
    shortest: float,
    floor: float,
) -> RescanPlan:
    """The rescans that spend ``spare`` requests/s between ages ``low`` and ``high``.

    ``yields(band)`` is the measured number of late events found per second at the band's
    ages. Of every band count that fits, the plan with the least expected wait is chosen,
    preferring plans that keep every period within ``floor``.
    """
    best: tuple[bool, float, tuple[Tier, ...]] | None = None
    for count in band_counts(low, high):
        bands = bands_between(low, high, count)
        weights = [max(yields(band), 0.0) + PRIOR_YIELD for band in bands]
        periods = _periods(bands, weights, rate, page_size, spare, shortest, floor)
        if periods is None:
            continue
        floor_met = max(periods) <= floor * (1 + 1e-9)
        expected_wait = sum(n * t / 2 for n, t in zip(weights, periods, strict=True)) / sum(weights)
        candidate = (not floor_met, expected_wait, _tiers(bands, periods, rate, page_size))
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    if best is None:
        return RescanPlan((), floor_met=False)
    return RescanPlan(best[2], floor_met=not best[0])


def _tiers(
    bands: Sequence[Band], periods: Sequence[float], rate: float, page_size: int
) -> tuple[Tier, ...]:
    return tuple(
        Tier(
            f"{RESCAN_PREFIX}{i + 1}",
            period,
            band.low,
            band.width,
            rescan_spend(band, period, rate, page_size),
        )
        for i, (band, period) in enumerate(zip(bands, periods, strict=True))
    )


def _periods(
    bands: Sequence[Band],
    yields: Sequence[float],
    rate: float,
    page_size: int,
    spare: float,
    shortest: float,
    floor: float,
) -> list[float] | None:
    """Square-root periods that spend at most ``spare``, each within bounds.

    Below: ``shortest``. Above: ``floor``, and at most ``MAX_STRETCH`` times the period at
    which every band would be rescanned equally often on the same budget (the plan that
    minimises the longest wait), so that a band the measurements call cold still gets a
    fair share and the longest wait stays within a small factor of the least it can be.
    When even that equal period is longer than ``floor``, every band gets it. None when the
    bands cannot be afforded at any period (each reads every new event once).
    """
    shortest = max(shortest, 1.0)
    costs = [max(1.0, rate * band.width / page_size) if rate >= MIN_RATE else 1.0 for band in bands]

    def spend(periods: Sequence[float]) -> float:
        return sum(
            rescan_spend(band, period, rate, page_size)
            for band, period in zip(bands, periods, strict=True)
        )

    equal = _least(lambda period: spend([period] * len(bands)) <= spare, shortest)
    if equal is None:
        return None
    longest = max(equal, min(floor, MAX_STRETCH * equal))

    def at(k: float) -> list[float]:
        return [
            min(longest, max(shortest, k * math.sqrt(c / n)))
            for c, n in zip(costs, yields, strict=True)
        ]

    if spend(at(0.0)) <= spare:
        return at(0.0)
    k = _least(lambda k: spend(at(k)) <= spare, 1e-12)
    return at(k) if k is not None else [longest] * len(bands)


def _least(fits: Callable[[float], bool], low: float, high: float = 1e12) -> float | None:
    """The least value in ``[low, high]`` that ``fits`` (by bisection in log space; larger values
    fit more easily, up to the steps of page rounding), None when not even ``high`` does."""
    if fits(low):
        return low
    if not fits(high):
        return None
    for _ in range(BISECTION_STEPS):
        middle = math.sqrt(low * high)
        if fits(middle):
            high = middle
        else:
            low = middle
    return high

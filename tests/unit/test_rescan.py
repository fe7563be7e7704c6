"""The rescans of spare budget: they spend it, keep to the floor, and favour where late events are."""

from __future__ import annotations

import itertools
import math

from hypothesis import assume, given
from hypothesis import strategies as st

from exporter.rescan import (
    PRIOR_YIELD,
    Band,
    band_of,
    bands_between,
    plan_rescans,
    rescan_spend,
)
from exporter.tiers import LAG_BUCKETS, LagHistogram, SourcePolicy, late_event_waits, plan_tiers

ages = st.floats(min_value=60, max_value=3 * 86400)
rates = st.floats(min_value=0, max_value=200)  # events/s: up to 17M a day
spares = st.floats(min_value=0, max_value=0.5)
page_sizes = st.sampled_from([100, 1000])
yield_tables = st.dictionaries(
    st.sampled_from(LAG_BUCKETS), st.floats(min_value=0, max_value=5), max_size=6
)


def yields_from(table: dict[float, float]) -> object:
    """Late events per second by band: the yields of the buckets the band reaches into."""

    def band_yield(band: Band) -> float:
        return sum(y for bound, y in table.items() if band.low < bound <= band.high)

    return band_yield


@given(ages, ages, rates, page_sizes, spares, yield_tables, st.floats(min_value=1, max_value=600))
def test_a_plan_covers_the_ages_spends_within_the_spare_budget_and_keeps_its_periods(
    low: float,
    span: float,
    rate: float,
    page_size: int,
    spare: float,
    table: dict[float, float],
    shortest: float,
) -> None:
    high = low + span
    floor = 4 * 3600.0
    plan = plan_rescans(low, high, yields_from(table), rate, page_size, spare, shortest, floor)
    if not plan.tiers:
        return
    bands = [band_of(t) for t in plan.tiers]
    assert math.isclose(bands[0].low, low) and math.isclose(bands[-1].high, high)
    for before, after in itertools.pairwise(bands):
        assert math.isclose(before.high, after.low), "bands are contiguous"
    assert plan.requests_per_second <= spare + 1e-9
    for tier in plan.tiers:
        assert tier.interval >= shortest - 1e-9
        assert math.isclose(
            tier.requests_per_second, rescan_spend(band_of(tier), tier.interval, rate, page_size)
        )
        if plan.floor_met:
            assert tier.interval <= floor * (1 + 1e-9)
    if any(tier.interval > shortest * 1.01 for tier in plan.tiers):
        assert plan.requests_per_second >= 0.8 * spare, "spare budget left unspent"


@given(
    st.floats(min_value=60, max_value=3600),
    st.floats(min_value=4 * 3600, max_value=3 * 86400),
    st.floats(min_value=0.5, max_value=5),
    st.floats(min_value=0.02, max_value=0.1),
    yield_tables,
)
def test_periods_follow_the_square_root_rule_where_no_bound_holds_them(
    low: float, span: float, rate: float, spare: float, table: dict[float, float]
) -> None:
    """T_b proportional to sqrt(c_b / n_b): the expected wait is least for the budget."""
    yields = yields_from(table)
    plan = plan_rescans(low, low + span, yields, rate, 1000, spare, 1.0, 1e9)
    longest = max(t.interval for t in plan.tiers)
    free = [t for t in plan.tiers if 1.0 * 1.01 < t.interval < longest * (1 - 1e-9)]
    assume(len(free) >= 2)
    ratios = []
    for tier in free:
        band = band_of(tier)
        cost = max(1.0, rate * band.width / 1000)
        ratios.append(tier.interval / math.sqrt(cost / (yields(band) + PRIOR_YIELD)))
    assert max(ratios) <= min(ratios) * (1 + 1e-6)


def test_bands_where_late_events_turn_up_are_rescanned_most_often() -> None:
    rate, page = 1_000_000 / 86400, 1000
    hot = Band(300.0, 1800.0)

    def yields(band: Band) -> float:
        overlap = max(0.0, min(band.high, hot.high) - max(band.low, hot.low))
        return 0.1 * overlap / hot.width

    plan = plan_rescans(150.0, 25 * 3600.0, yields, rate, page, 0.3, 60.0, 4 * 3600.0)
    assert plan.floor_met and len(plan.tiers) >= 4
    hottest = min(plan.tiers, key=lambda t: t.interval)
    assert band_of(hottest).low < hot.high and band_of(hottest).high > hot.low
    coldest = max(plan.tiers, key=lambda t: t.interval)
    assert band_of(coldest).low >= hot.high
    assert hottest.interval * 4 < coldest.interval


def test_without_spare_budget_there_are_no_rescans_and_the_floor_is_not_met() -> None:
    rate = 10_000_000 / 86400
    policy = SourcePolicy(60.0, 120.0, 25 * 3600.0, 1000)
    usable = 0.45
    tiers = plan_tiers(policy, rate, 90.0, usable)
    spare = usable - sum(t.requests_per_second for t in tiers)
    plan = plan_rescans(
        tiers[0].age, policy.max_lookback, lambda b: 0.0, rate, 1000, spare, 60, 4 * 3600
    )
    assert not plan.floor_met
    assert plan.requests_per_second <= max(0.0, spare) + 1e-9
    assert plan_rescans(100.0, 9000.0, lambda b: 1.0, 1.0, 1000, 0.0, 60.0, 3600.0).tiers == ()


@given(ages, st.integers(min_value=1, max_value=12))
def test_bands_are_geometric(low: float, count: int) -> None:
    bands = bands_between(low, low * 1000, count)
    assert len(bands) == count
    ratios = [b.high / b.low for b in bands]
    assert max(ratios) <= min(ratios) * (1 + 1e-9)


@given(
    st.lists(st.floats(min_value=0, max_value=10 * 86400), min_size=1, max_size=200),
    st.floats(min_value=0, max_value=86400),
    st.floats(min_value=0, max_value=86400),
)
def test_histogram_mass_adds_up_across_any_split(lags: list[float], a: float, b: float) -> None:
    histogram = LagHistogram()
    histogram.observe(lags, 1.0)
    low, high = sorted((a, b))
    whole = histogram.mass(0.0, math.inf)
    assert math.isclose(whole, len(lags))
    parts = histogram.mass(0.0, low) + histogram.mass(low, high) + histogram.mass(high, math.inf)
    assert math.isclose(parts, whole, rel_tol=1e-9)
    inside = [lag for lag in lags if (low < lag or low == 0.0) and lag <= high]  # (lower, bound]
    bounds = [0.0, *LAG_BUCKETS]
    aligned = low in bounds and high in bounds and low < high
    if aligned:
        assert math.isclose(histogram.mass(low, high), len(inside), abs_tol=1e-9)


def test_the_plan_in_plain_words_counts_the_rescans() -> None:
    rate = 1_000_000 / 86400
    policy = SourcePolicy(60.0, 120.0, 25 * 3600.0, 1000)
    tiers = plan_tiers(policy, rate, 120.0, 0.45)
    spare = 0.45 - sum(t.requests_per_second for t in tiers)
    plan = plan_rescans(
        tiers[0].age, policy.max_lookback, lambda b: 0.0, rate, 1000, spare, 60, 4 * 3600
    )
    assert plan.tiers
    before = max(wait for _, wait in late_event_waits(tiers))
    after = max(wait for _, wait in late_event_waits(tiers + plan.tiers))
    assert after <= 4 * 3600 < before, "cold bands are still probed within the floor"

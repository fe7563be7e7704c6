"""The tier planner: budgets, ages and coverage, for arbitrary rates and configs."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.rescan import plan_rescans
from exporter.tiers import (
    DEEPEST,
    EARLY_SWEEP,
    EARLY_SWEEP_AGE,
    FIRST_SWEEP_AGE,
    FRESH,
    FRESH_QUANTILE,
    LAG_BUCKETS,
    LAG_HALF_LIFE,
    MIN_LAG_SAMPLES,
    SLOWEST_FRESH_LOOKBACKS,
    SLOWING_STEP,
    LagHistogram,
    SourcePolicy,
    Tier,
    describe_waits,
    eviction_horizon,
    fill_pages,
    guaranteed_lateness,
    late_event_waits,
    longest_wait,
    pages_for,
    plan_tiers,
    sweep_behind,
    sweep_due,
)

rates = st.floats(min_value=0, max_value=500)  # events/s: 0 to 43M a day


@st.composite
def policies(draw: st.DrawFn) -> SourcePolicy:
    interval = draw(st.floats(min_value=1, max_value=600))
    lookback = interval + draw(st.floats(min_value=1, max_value=7200))
    max_lookback = lookback + draw(st.floats(min_value=60, max_value=30 * 86400))
    return SourcePolicy(interval, lookback, max_lookback, draw(st.sampled_from([100, 1000])))


@given(policies(), rates, st.none() | st.floats(min_value=0, max_value=86400))
def test_every_plan_has_fresh_shallow_and_deepest_tiers_covering_max_lookback(
    policy: SourcePolicy, rate: float, quantile: float | None
) -> None:
    tiers = plan_tiers(policy, rate, quantile, 0.5)
    fresh, deepest = tiers[0], tiers[-1]
    assert fresh.name == FRESH and deepest.name == DEEPEST
    assert fresh.interval >= policy.poll_interval
    assert fresh.age >= policy.lookback - 1e-6, "successive fresh queries overlap by lookback"
    assert math.isclose(fresh.window, fresh.age + fresh.interval)
    assert deepest.age == policy.max_lookback
    ages = [t.age for t in tiers]
    assert ages == sorted(ages), "sweeps get deeper, the deepest last"
    assert len({t.name for t in tiers}) == len(tiers)
    if deepest.age > max(2 * fresh.age, fresh.interval, FIRST_SWEEP_AGE):
        assert len(tiers) >= 3, "what the fresh window misses must not wait for max_lookback"
    assert deepest.interval <= max(3600.0, policy.poll_interval), (
        "events up to max_lookback late arrive within max_lookback plus an hour"
    )


def spend(tiers: tuple[Tier, ...]) -> float:
    return sum(t.requests_per_second for t in tiers)


@given(policies(), st.floats(min_value=0, max_value=50), st.floats(min_value=0, max_value=0.5))
def test_a_plan_that_fits_spends_within_the_budget(
    policy: SourcePolicy, rate: float, room: float
) -> None:
    budget = 0.5
    tiers = plan_tiers(policy, rate, None, budget, room)
    if tiers[0].interval < policy.lookback * SLOWEST_FRESH_LOOKBACKS:  # not at its slowest
        assert spend(tiers) <= budget + 1e-9
    without = plan_tiers(policy, rate, None, budget)
    assert EARLY_SWEEP not in {t.name for t in without}, "no room given, no early sweep"
    early = [t for t in tiers if t.name == EARLY_SWEEP]
    if not early:
        assert tiers == without
        return
    assert spend(tiers) <= max(spend(without), room) + 1e-9, "never more than the others leave"
    later = next(t.age for t in tiers if t.age > early[0].age)
    worth = 2 * (1 - FRESH_QUANTILE) / FRESH_QUANTILE * (later - early[0].age)
    assert without[0].interval <= tiers[0].interval <= without[0].interval + worth + 1e-6, (
        "the fresh tier slows down for the early sweep only while the mean wait gains"
    )


@pytest.mark.parametrize("lag", [None, 600.0])
def test_a_stream_slowed_to_fit_its_budget_spends_nearly_all_of_it(lag: float | None) -> None:
    """The busiest stream is the one whose fresh query is slowed to fit its share; a coarse
    step (a quarter at a time) left up to 15 % of that share unspent, which went to the
    quiet streams while the busy one's events waited a quarter longer."""
    policy = SourcePolicy(60.0, 120.0, 90000.0, 1000)
    slowest = policy.lookback * SLOWEST_FRESH_LOOKBACKS
    for per_day in (2e6, 4e6, 6e6, 8e6):
        for budget in (0.05 + i * 0.01 for i in range(40)):
            tiers = plan_tiers(policy, per_day / 86400, lag, budget)
            if policy.poll_interval < tiers[0].interval < slowest:
                assert 0.95 * budget <= spend(tiers) <= budget + 1e-9, (per_day, budget)
    beyond = plan_tiers(policy, 50e6 / 86400, lag, 0.05)
    assert slowest <= beyond[0].interval <= slowest * SLOWING_STEP
    assert spend(beyond) > 0.05, "past its slowest fresh query a stream no longer fits"


def test_the_spare_budget_pays_for_an_early_sweep_that_finds_what_the_fresh_window_missed() -> None:
    """Microsoft's once-published 2 and 5 minutes (p95, p99): the events 2-5 minutes late
    fall out of a fresh window that covers the 95th percentile, and waited for the first
    shallow sweep at 45 minutes (p99 about 50 minutes in the combined benchmark)."""
    policy = SourcePolicy(60.0, 120.0, 90000.0, 1000)
    rate = 2_500_000 / 86400
    without = plan_tiers(policy, rate, 150.0, 0.3)
    tiers = plan_tiers(policy, rate, 150.0, 0.3, room=spend(without) + 0.1)
    first, *rest = (t.name for t in without)
    assert [t.name for t in tiers] == [first, EARLY_SWEEP, *rest]
    fresh, early = tiers[0], tiers[1]
    assert fresh == without[0], "the room pays: the fresh tier is not slowed down"
    assert fresh.age < 300.0 < early.age == EARLY_SWEEP_AGE < tiers[2].age
    assert longest_wait(without, 300.0) > FIRST_SWEEP_AGE - 300.0
    assert longest_wait(tiers, 300.0) <= EARLY_SWEEP_AGE + early.interval - 300.0
    assert early.interval <= EARLY_SWEEP_AGE / 2, "within minutes"


def test_a_busy_stream_slows_its_fresh_query_to_pay_for_its_early_sweep() -> None:
    """5M non-interactive sign-ins a day, whose fresh query, sweeps and deepest sweep take
    all that the other streams leave (the combined benchmark): the events 2-5 minutes late
    waited 45 minutes; a fresh query every two or three minutes instead of every 75 seconds
    pays for finding them within ten."""
    policy = SourcePolicy(60.0, 120.0, 90000.0, 1000)
    rate = 5_000_000 / 86400
    budget = 0.3
    without = plan_tiers(policy, rate, 150.0, budget)
    assert without[0].interval > policy.poll_interval, "the budget already slows it"
    tiers = plan_tiers(policy, rate, 150.0, budget, room=0.0)
    assert [t.name for t in tiers][:2] == [FRESH, EARLY_SWEEP]
    assert spend(tiers) <= spend(without) + 1e-9, "paid by the source itself"
    assert without[0].interval < tiers[0].interval <= 4 * 60.0
    assert longest_wait(without, 300.0) > FIRST_SWEEP_AGE - 300.0
    assert longest_wait(tiers, 300.0) <= EARLY_SWEEP_AGE + tiers[1].interval - 300.0


def test_no_early_sweep_where_slowing_the_fresh_query_costs_more_wait_than_it_saves() -> None:
    """At 10M a day the fresh query already runs every few minutes; slowing it further frees
    too little for a sweep that reads every event once more."""
    policy = SourcePolicy(60.0, 120.0, 90000.0, 1000)
    rate = 10_000_000 / 86400
    without = plan_tiers(policy, rate, 150.0, 0.45)
    assert plan_tiers(policy, rate, 150.0, 0.45, room=0.0) == without


def test_no_early_sweep_where_the_fresh_window_already_reaches_past_it() -> None:
    """A quiet source's fresh window stretches to fill its page: nothing left to find early."""
    policy = SourcePolicy(60.0, 120.0, 90000.0, 1000)
    tiers = plan_tiers(policy, 50_000 / 86400, 150.0, 0.3, room=0.3)
    assert tiers[0].age > EARLY_SWEEP_AGE
    assert EARLY_SWEEP not in {t.name for t in tiers}


def test_at_ten_million_a_day_the_plan_stays_within_graphs_budget() -> None:
    policy = SourcePolicy(60.0, 120.0, 2 * 86400.0, 1000)
    rate = 10_000_000 / 86400
    usable = 0.5 * 0.9  # Graph's 5 per 10 s, less the default reserve
    tiers = plan_tiers(policy, rate, 90.0, usable)
    spend = sum(t.requests_per_second for t in tiers)
    assert spend <= usable
    assert rate / spend >= 250, "unique events per request"


def test_low_volume_affords_shallow_sweeps_between_fresh_and_deepest() -> None:
    policy = SourcePolicy(60.0, 300.0, 2 * 86400.0, 1000)
    tiers = plan_tiers(policy, 1_000_000 / 86400, 120.0, 0.5)
    assert len(tiers) >= 3
    assert all(t.age > tiers[0].age for t in tiers[1:])


@given(
    st.floats(min_value=0.001, max_value=1e5),
    st.floats(min_value=0.01, max_value=1000),
    st.sampled_from([10, 1000]),
)
def test_filled_windows_use_no_more_pages(window: float, rate: float, page_size: int) -> None:
    filled = fill_pages(window, rate, page_size)
    assert filled >= window
    assert pages_for(rate * filled, page_size) == pages_for(rate * window, page_size)


def poisson_count(rng: random.Random, rate: float, length: float) -> int:
    """How many events of a Poisson process of ``rate`` fall in ``length`` seconds."""
    count, at = 0, rng.expovariate(rate)
    while at <= length:
        count, at = count + 1, at + rng.expovariate(rate)
    return count


@pytest.mark.parametrize(("rate", "pages"), [(1.16, 1), (11.6, 2), (58.0, 16)])
def test_a_filled_window_rarely_needs_one_page_more(rate: float, pages: int) -> None:
    """A stretched band is read in the pages it was planned for at least 19 times in 20,
    though its events vary as a Poisson count does and the rate runs 1 % above the measure
    it was planned on: one event too many costs a whole page (filled to 97 %, a two-page
    band took a third page about one time in eleven)."""
    page_size = 1000
    filled = fill_pages((pages - 0.5) * page_size / rate, rate, page_size)
    assert pages_for(rate * filled, page_size) == pages
    rng = random.Random(7)
    trials = 400
    over = sum(poisson_count(rng, rate * 1.01, filled) > pages * page_size for _ in range(trials))
    assert over <= trials / 20


def test_lag_quantiles_need_samples_interpolate_and_decay() -> None:
    histogram = LagHistogram()
    histogram.observe([5.0] * 10, now=1000.0)
    assert histogram.quantile(0.95) is None
    histogram.observe([5.0] * 80 + [500.0] * 10, now=1000.0)
    assert 2.0 < histogram.quantile(0.5) <= 5.0  # type: ignore[operator]
    assert 300.0 < histogram.quantile(0.95) <= 600.0  # type: ignore[operator]
    histogram.observe([30.0] * 400, now=1000.0 + 30 * 3600)
    assert histogram.quantile(0.95) <= 30.0, "old lags have decayed away"  # type: ignore[operator]


def test_sweep_schedule_and_guarantee() -> None:
    sweep = Tier("deepest", interval=3600.0, age=86400.0, window=3600.0, requests_per_second=0.1)
    fresh = Tier("fresh", interval=60.0, age=300.0, window=360.0, requests_per_second=0.1)
    now = 10 * 86400.0
    on_time = now - sweep.age - sweep.interval
    assert sweep_due(now, sweep, on_time)
    assert not sweep_due(now, sweep, on_time + 1)
    assert sweep_behind(now, sweep, on_time) == 0.0
    assert sweep_behind(now, sweep, on_time - 7200) == 7200.0
    assert guaranteed_lateness([fresh, sweep], {"deepest": 0.0}) == 86400.0
    assert guaranteed_lateness([fresh, sweep], {"deepest": 7200.0}) == 300.0
    assert eviction_horizon([now - 5, on_time], clock_skew=600) == on_time - 600


def test_eviction_keeps_ten_minutes_below_the_oldest_frontier_for_graph_clock_skew() -> None:
    assert eviction_horizon([9000.0, 5000.0, 7000.0]) == 5000.0 - 600.0
    assert eviction_horizon([9000.0, 5000.0], [4000.0, 8000.0]) == 4000.0 - 600.0


def worst_wait(tiers: tuple[Tier, ...], lateness: float) -> float:
    """The longest an event ``lateness`` late waits after it becomes visible, from the
    schedule itself, whichever tier comes first: the fresh query sees it at its next run; a
    rescan of the band of age holding it at its next run; a sweep at the end of the band
    holding it, once that band is ``age`` old."""
    waits = []
    for tier in tiers:
        if tier.is_rescan:
            if tier.age <= lateness <= tier.age + tier.window:
                waits.append(tier.interval)
        elif tier.age >= lateness:
            waits.append(tier.interval if tier.is_fresh else tier.age + tier.interval - lateness)
    return min(waits)


@given(
    policies(),
    rates,
    st.none() | st.floats(min_value=0, max_value=86400),
    st.floats(min_value=0, max_value=1, exclude_min=True),
    st.floats(min_value=0, max_value=0.5),
    st.floats(min_value=0, max_value=1),
)
def test_each_band_of_lateness_is_found_within_its_stated_wait(
    policy: SourcePolicy,
    rate: float,
    quantile: float | None,
    share: float,
    spare: float,
    hot: float,
) -> None:
    tiers = plan_tiers(policy, rate, quantile, 0.5)
    fresh = tiers[0]
    hot_age = fresh.age + hot * (policy.max_lookback - fresh.age)
    rescans = plan_rescans(
        fresh.age,
        policy.max_lookback,
        lambda band: 1.0 if band.low <= hot_age <= band.high else 0.0,
        rate,
        policy.page_size,
        spare,
        policy.poll_interval,
        4 * 3600.0,
    ).tiers
    schedule = tiers + rescans
    waits = late_event_waits(schedule)
    assert waits[-1][0] == policy.max_lookback, "the bands reach max_lookback"
    assert [late for late, _ in waits] == sorted({late for late, _ in waits})
    below = 0.0
    for late, wait in waits:
        lateness = min(late, below + share * (late - below))  # no rounding past the band
        if lateness > below:
            assert worst_wait(schedule, lateness) <= wait + 1e-6
        below = late


def test_the_plan_in_plain_words() -> None:
    tiers = (
        Tier(FRESH, interval=60.0, age=134.0, window=194.0, requests_per_second=0.03),
        Tier("sweep-1", interval=679.0, age=2700.0, window=679.0, requests_per_second=0.01),
        Tier(DEEPEST, interval=3600.0, age=90000.0, window=3600.0, requests_per_second=0.01),
    )
    waits = late_event_waits(tiers)
    assert waits == [
        (134.0, 60.0),
        (2700.0, 2700.0 + 679.0 - 134.0),
        (90000.0, 90000.0 + 3600.0 - 2700.0),
    ]
    assert describe_waits(waits) == (
        "late events up to 2.2m within 1m, up to 45m within 54m, up to 1.0d within 1.1d"
    )


LAGS = st.lists(st.floats(min_value=0.0, max_value=10 * 86400.0), min_size=1, max_size=50)


@given(LAGS, st.floats(min_value=1.0, max_value=4.0))
def test_lags_lose_half_their_weight_every_half_life(lags: list[float], half_lives: float) -> None:
    """Old lags fade at exactly the stated rate: the planner weighs recent lateness, and a
    stretch of quiet must neither erase what it learnt at once nor keep it for ever."""
    histogram = LagHistogram()
    histogram.observe(lags, 1_800_000_000.0)
    histogram.observe((), 1_800_000_000.0 + half_lives * LAG_HALF_LIFE)
    expected = len(lags) * 0.5**half_lives
    assert math.isclose(histogram.mass(0.0, math.inf), expected, rel_tol=1e-9)


@given(LAGS, st.floats(min_value=0.0, max_value=86400.0), st.floats(min_value=0.0, max_value=1.0))
def test_the_mass_of_lags_adds_up_over_adjacent_ranges(
    lags: list[float], low: float, share: float
) -> None:
    """Mass is a measure: the whole range holds every lag, adjacent ranges add up, and a
    range below every lag holds nothing of them."""
    histogram = LagHistogram()
    histogram.observe(lags, 1_800_000_000.0)
    assert math.isclose(histogram.mass(0.0, math.inf), len(lags))
    middle = low + share * (10 * 86400.0 - low)
    parts = (
        histogram.mass(0.0, low) + histogram.mass(low, middle) + histogram.mass(middle, math.inf)
    )
    assert math.isclose(parts, len(lags), rel_tol=1e-9)
    assert histogram.mass(0.0, 0.0) == 0.0
    if min(lags) > 1.0:  # above the first bucket: nothing is interpolated below it
        assert histogram.mass(0.0, 0.5) == 0.0


def test_a_lag_beyond_the_last_bucket_counts_only_where_the_range_is_open_ended() -> None:
    last = LAG_BUCKETS[-1]
    histogram = LagHistogram()
    histogram.observe([last * 2, last * 3], 1_800_000_000.0)
    assert histogram.mass(0.0, last) == 0.0
    assert histogram.mass(last, math.inf) == 2.0
    assert histogram.mass(0.0, last * 10) == 0.0, "no shape to interpolate beyond the last bound"


def test_a_quantile_interpolates_within_its_bucket_once_there_are_enough_samples() -> None:
    """As PromQL's histogram_quantile does: the planner sizes the fresh window by it."""
    assert LAG_BUCKETS[:2] == (1.0, 2.0)
    first = LagHistogram()
    first.observe([0.9] * (MIN_LAG_SAMPLES - 1), 1_800_000_000.0)
    assert first.quantile(0.5) is None, "too few samples to say"
    first.observe([0.9], 1_800_000_000.0)
    assert first.quantile(0.5) == 0.5, "half of the first bucket (0, 1]"
    second = LagHistogram()
    second.observe([1.5] * MIN_LAG_SAMPLES, 1_800_000_000.0)
    assert math.isclose(second.quantile(0.25) or 0.0, 1.25)
    assert math.isclose(second.quantile(1.0) or 0.0, 2.0)

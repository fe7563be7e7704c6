"""Sources on one budget: required tiers first, rescans from what is left, by weight."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.budget import BudgetShares, rescan_shares
from exporter.config import SourceConfig
from exporter.metrics import ExporterMetrics
from exporter.planner import SourcePlanner
from exporter.rescan import PRIOR_YIELD, rescan_weight
from exporter.schedule import QuerySchedule
from exporter.tiers import EARLY_SWEEP, MIN_RATE, Tier, outgrown, plan_tiers

names = st.sampled_from(["interactive", "noninteractive", "serviceprincipal", "audits"])
spends = st.floats(min_value=0, max_value=0.5)
# What rescan_weight gives: 0 for a silent source, else at least sqrt(MIN_RATE * PRIOR_YIELD).
# Weights below that (subnormal floats) only test rounding: no order of the arithmetic
# keeps both properties below exactly there.
weights = st.just(0.0) | st.floats(min_value=rescan_weight(MIN_RATE, 0.0), max_value=100)
plans = st.dictionaries(names, st.tuples(spends, weights), min_size=1)


@given(st.floats(min_value=0.01, max_value=1), plans)
def test_rescans_share_out_exactly_what_the_required_tiers_leave(
    rate: float, plan: dict[str, tuple[float, float]]
) -> None:
    required = {name: spend for name, (spend, _) in plan.items()}
    shares = rescan_shares(rate, required, {name: w for name, (_, w) in plan.items()})
    assert set(shares) == set(plan)
    assert all(share >= 0 for share in shares.values())
    left = max(0.0, rate - sum(required.values()))
    assert math.isclose(sum(shares.values()), left, abs_tol=1e-12)


@given(st.floats(min_value=0.01, max_value=1), plans)
def test_shares_follow_the_weights(rate: float, plan: dict[str, tuple[float, float]]) -> None:
    required = {name: spend for name, (spend, _) in plan.items()}
    weight = {name: w for name, (_, w) in plan.items()}
    shares = rescan_shares(rate, required, weight)
    total = sum(weight.values())
    for name, share in shares.items():
        if total > 0:
            assert math.isclose(share * total, shares_left(rate, required) * weight[name])
        else:
            assert math.isclose(share, shares_left(rate, required) / len(plan)), "equal"


def shares_left(rate: float, required: dict[str, float]) -> float:
    return max(0.0, rate - sum(required.values()))


@given(st.floats(min_value=0.05, max_value=1), plans, names, weights)
def test_no_source_s_rescans_take_what_another_s_required_tiers_may_plan(
    rate: float, plan: dict[str, tuple[float, float]], other: str, other_weight: float
) -> None:
    """What a source's tiers may plan depends on the others' required spend only."""
    shares = BudgetShares(rate, 4)
    for name, (spend, weight) in plan.items():
        shares.publish(name, spend, weight)
    before = {name: shares.available(name) for name in plan}
    required = plan.get(other, (0.0, 0.0))[0]
    shares.publish(other, required, other_weight)  # its rescans now weigh anything at all
    assert {name: shares.available(name) for name in plan} == before


def test_a_small_stream_planning_first_leaves_the_big_stream_its_required_tiers() -> None:
    """The combined benchmark's profile (b): interactive planned rescans on everything
    that was free when it planned, and the 5M stream's deepest sweep fell behind."""
    shares = BudgetShares(0.45, 4)
    shares.publish("interactive", 0.07, rescan_weight(11.6, 0.116))
    assert shares.spare("interactive") == 0.45 - 0.07, "alone, it may rescan with the rest"
    assert math.isclose(shares.available("noninteractive"), 0.38)
    shares.publish("noninteractive", 0.36, rescan_weight(57.9, 0.58))
    assert math.isclose(shares.available("noninteractive"), 0.38), "its rescans do not count"
    assert math.isclose(
        shares.spare("interactive") + shares.spare("noninteractive"), 0.45 - 0.07 - 0.36
    )
    assert shares.spare("noninteractive") > shares.spare("interactive")


@given(
    st.floats(min_value=0.1, max_value=200),
    st.floats(min_value=0.1, max_value=200),
    st.floats(min_value=1e-3, max_value=0.1),
)
def test_streams_with_the_same_share_of_late_events_rescan_in_proportion_to_volume(
    rate: float, other: float, late_share: float
) -> None:
    """Their rescans cost and find in proportion to volume, so equal periods are best."""
    weight = rescan_weight(rate, rate * late_share)
    other_weight = rescan_weight(other, other * late_share)
    # The prior counts for at most PRIOR_YIELD / 1e-4 of the smallest yield here.
    assert math.isclose(weight / other_weight, rate / other, rel_tol=PRIOR_YIELD / 1e-4)


@given(st.floats(min_value=0, max_value=200), st.floats(min_value=0, max_value=5))
def test_more_late_events_weigh_more_and_a_quiet_stream_keeps_a_claim(
    rate: float, late: float
) -> None:
    assert rescan_weight(rate, late + 0.1) >= rescan_weight(rate, late)
    if rate >= MIN_RATE:
        assert rescan_weight(rate, 0.0) > 0


def planner_for(
    name: str, rate: float, shares: BudgetShares
) -> tuple[SourcePlanner, QuerySchedule]:
    """A real planner and schedule for a source measured at ``rate`` events/s."""
    source = SourceConfig(name, "graph", None, 1000, 60.0, 120.0, 90000.0)
    metrics = ExporterMetrics(CollectorRegistry())
    metrics.initialise([source], [], {"identity_reports": shares.rate})
    planner = SourcePlanner(source, shares, metrics)
    planner.rate = rate
    tiers = planner.tiers()
    schedule = QuerySchedule(tiers, {}, 0.0, source.max_lookback)
    schedule.adopt(tiers, {}, 0.0)
    planner.adopted(schedule, 0.0)
    return planner, schedule


def settle(planner: SourcePlanner, schedule: QuerySchedule, now: float) -> None:
    """Adopt what the planner asks for until it asks for nothing new, as the loop does."""
    for _ in range(5):
        tiers = planner.replan(schedule, now)
        if tiers is None:
            return
        schedule.adopt(tiers, {}, now)
        planner.adopted(schedule, now)
    raise AssertionError("the plan keeps changing")


def early_sweep(schedule: QuerySchedule) -> list[Tier]:
    return [t for t in schedule.tiers if t.name == EARLY_SWEEP]


def spend(tiers: Sequence[Tier]) -> float:
    return sum(t.requests_per_second for t in tiers)


def test_the_early_sweep_gives_way_to_the_required_tiers_or_is_paid_by_its_own_stream() -> None:
    shares = BudgetShares(0.45, 2)
    big, big_schedule = planner_for("noninteractive", 28.9, shares)
    assert early_sweep(big_schedule), "alone, what nobody else needs pays for it"
    fast = big_schedule.tiers[0].interval
    required = spend(big_schedule.tiers) - spend(early_sweep(big_schedule))
    assert math.isclose(shares.available("other"), 0.45 - required), "not counted as required"
    other, other_schedule = planner_for("other", 0.0, shares)
    other.rate = 70.0  # a stream whose required tiers need all the rest, and more
    settle(other, other_schedule, 60.0)
    settle(big, big_schedule, 120.0)
    settle(other, other_schedule, 180.0)
    assert not early_sweep(other_schedule), "slowing its fresh query would cost more than it saves"
    assert early_sweep(big_schedule), "the big stream pays for its own"
    assert big_schedule.tiers[0].interval > fast, "by querying the fresh window less often"
    assert math.isclose(shares.available("other"), 0.45 - required), (
        "and the other stream's required tiers keep all they had"
    )
    assert spend(big_schedule.tiers) + spend(other_schedule.tiers) <= 0.45 + 1e-9


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=120.0), min_size=2, max_size=4))
def test_plans_on_one_budget_settle_and_early_sweeps_never_overspend_it(
    rates: list[float],
) -> None:
    """Each source re-plans when the others' plans move its own; in turns, as the loops do,
    they come to rest, and early sweeps spend only what the required tiers leave."""
    shares = BudgetShares(0.45, len(rates))
    planners = [planner_for(f"source-{i}", rate, shares) for i, rate in enumerate(rates)]
    for turn in range(4 * len(rates) + 1):
        moved = False
        for planner, schedule in planners:
            tiers = planner.replan(schedule, 60.0 * turn)
            if tiers is not None:
                schedule.adopt(tiers, {}, 60.0 * turn)
                planner.adopted(schedule, 60.0 * turn)
                moved = True
        if not moved:
            break
    else:
        raise AssertionError("the plans keep moving each other")
    total = sum(spend(schedule.tiers) for _, schedule in planners)
    required = sum(
        spend(plan_tiers(planner.policy, planner.rate, None, shares.available(planner.source.name)))
        for planner, _ in planners
    )
    assert total <= max(0.45, required) + 1e-9


def test_a_planner_publishes_its_required_tiers_and_rescans_only_the_common_rest() -> None:
    shares = BudgetShares(0.45, 2)
    small, small_schedule = planner_for("interactive", 11.6, shares)
    alone = sum(t.requests_per_second for t in small_schedule.rescans)
    assert alone > 0.2, "alone on the budget, its rescans spend the rest"
    _, big_schedule = planner_for("noninteractive", 57.9, shares)
    small_required = sum(
        t.requests_per_second for t in small_schedule.tiers if t.name != EARLY_SWEEP
    )
    assert math.isclose(shares.available("noninteractive"), 0.45 - small_required)
    settle(small, small_schedule, 60.0)
    required = sum(t.requests_per_second for s in (small_schedule, big_schedule) for t in s.tiers)
    rescans = sum(t.requests_per_second for s in (small_schedule, big_schedule) for t in s.rescans)
    assert required + rescans <= 0.45 + 1e-9, "the other's plan shrank its rescans"


@given(st.floats(min_value=0.1, max_value=50), st.floats(min_value=1e-3, max_value=5))
def test_the_square_root_rule_weighs_volume_and_late_events_alike(rate: float, late: float) -> None:
    """Four times the cost per rescan, or four times the late events: twice the claim."""
    weight = rescan_weight(rate, late)
    assert math.isclose(rescan_weight(4 * rate, late), 2 * weight, rel_tol=1e-9)
    assert math.isclose(rescan_weight(rate, 4 * late), 2 * weight, rel_tol=PRIOR_YIELD / late)


def test_a_rate_that_outgrows_the_pages_a_band_was_planned_for_replans() -> None:
    """A sweep's band is stretched to just short of its last page: a rate 6 % above the
    plan's (below the share that re-plans by itself) costs a page more per band, half as
    much again for a two-page band, until a plan sized on the new rate replaces it."""
    planner, schedule = planner_for("interactive", 11.5, BudgetShares(0.45, 1))
    settle(planner, schedule, 0.0)
    planner.rate *= 1.06
    assert outgrown(schedule.tiers, planner.rate, 1000), "the test's premise"
    tiers = planner.replan(schedule, 60.0)
    assert tiers is not None
    assert not outgrown(tiers, planner.rate, 1000)


def test_plans_take_the_settled_rate_but_the_fresh_query_sees_a_surge_first() -> None:
    """The fresh query's count runs low, so a sweep's settled band sets the rate; a surge
    shows in the fresh query minutes before it reaches a sweep's age, and lifts the rate
    at once."""
    planner, _ = planner_for("interactive", 0.0, BudgetShares(0.45, 1))
    planner.observe_rate(900, 100.0, 0.0)  # 9 a second, seen young
    planner.observe_band(1000, 0.0, 100.0)  # 10 a second, settled
    assert planner.rate == 10.0
    planner.observe_rate(3000, 200.0, 100.0)  # 30 a second
    assert planner.rate > 10.0

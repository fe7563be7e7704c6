"""The pure query schedule, driven by hypothesis through any order of completions and failures.

Whatever happens to the queries, the schedule must keep what the loop's guarantees rest on:
each sweep reads its stretch of event time once and without gaps, a rescan reaches back far
enough to find every event as late as its band, the ledger's eviction horizon never passes
a query that may still return events, and the pick respects who yields to whom.
"""

from __future__ import annotations

import copy
import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.rescan import band_of, plan_rescans
from exporter.schedule import CATCH_UP, FRONTIER_PREFIX, GAP_TOLERANCE, QuerySchedule
from exporter.tiers import FRESH, SourcePolicy, plan_tiers

START = 1_800_000_000.0
POLICY = SourcePolicy(poll_interval=60.0, lookback=120.0, max_lookback=6 * 3600.0, page_size=100)

# One step of the world: time passes, then the picked query either fetches a page, reads its
# last page, or fails for good; sometimes the fresh query sees nothing new (an incident).
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=900.0),
        st.sampled_from(["page", "complete", "complete", "abandon"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=120,
)


def schedule_for(rate: float) -> QuerySchedule:
    budget = 0.45
    tiers = plan_tiers(POLICY, rate, None, budget)
    schedule = QuerySchedule(tiers, {}, START, POLICY.max_lookback)
    schedule.adopt(tiers, {}, START)
    spare = budget - sum(t.requests_per_second for t in tiers)
    plan = plan_rescans(
        tiers[0].age,
        POLICY.max_lookback,
        lambda band: 0.0,
        rate,
        POLICY.page_size,
        spare,
        POLICY.poll_interval,
        4 * 3600.0,
    )
    schedule.rescans = plan.tiers
    return schedule


@settings(max_examples=150, deadline=None)
@given(st.floats(min_value=0.01, max_value=50.0), steps)
def test_whatever_happens_the_schedule_keeps_its_guarantees(
    rate: float, world: list[tuple[float, str, bool]]
) -> None:
    schedule = schedule_for(rate)
    now = START
    swept: dict[str, float] = dict(schedule.frontiers)  # where each sweep's reading stands
    rescanned: dict[str, float] = {}  # when each rescan band last began
    newest = START - 30.0
    for elapsed, outcome, dark in world:
        now += elapsed
        for launch in schedule.launches(now):
            tier = launch.tier
            if tier.is_rescan:
                band = band_of(tier)
                since = rescanned.get(tier.name, now - tier.interval)
                floor = min(schedule.frontiers.values())
                assert launch.start <= max(since - band.high, floor) + 1e-6, "a rescan left a gap"
                assert launch.end == now - band.low
                rescanned[tier.name] = now
            elif not tier.is_fresh and tier.name != CATCH_UP:
                assert launch.start == swept[tier.name], "a sweep skipped or re-read a stretch"
                assert launch.end is not None and launch.end <= now - tier.age
                bands = (launch.end - launch.start) / tier.interval
                assert bands >= 1 - 1e-6 and abs(bands - round(bands)) < 1e-6, (
                    "a sweep read part of a band (a late start must not stretch a band it "
                    "sized to fill its last page)"
                )
                assert now - tier.age - launch.end < tier.interval, "a sweep left a whole band"
        assert schedule.eviction_horizon() <= min(
            [*(a.start for a in schedule.active.values()), *schedule.frontiers.values()]
        ), "the ledger could forget what a query under way may still return"
        if not schedule.active:
            assert schedule.next_due(now) >= now or schedule.launches(now)
            continue
        name = schedule.pick(now)
        picked = schedule.active[name]
        if picked.tier.is_rescan:
            assert FRESH not in schedule.active, "a rescan went while a fresh query waited"
            assert CATCH_UP not in schedule.active, "a rescan went while a catch-up waited"
            due = [a.asof + a.tier.interval for a in schedule.active.values() if a.tier.is_rescan]
            assert picked.asof + picked.tier.interval == min(due), "earliest deadline first"
        if outcome == "page":
            schedule.fetched(name)
        elif outcome == "abandon":
            schedule.abandoned(name, now)
            if picked.tier.is_rescan:  # the next rescan reaches back over what this one missed
                rescanned[name] = picked.start + band_of(picked.tier).high
        else:
            if picked.tier.is_fresh and not dark:
                newest = now - 5.0
            checkpoints = schedule.completed(name, newest if picked.tier.is_fresh else None)
            if name in swept:
                assert picked.end is not None
                swept[name] = picked.end
                assert checkpoints[FRONTIER_PREFIX + name] == picked.end, "the frontier persists"


def test_after_an_incident_the_stretch_held_back_is_caught_up_once() -> None:
    """Nothing new visible for longer than the fresh tier's age, then events again: one
    catch-up from before the last event seen (as far back as the shallow sweeps reach) to
    the start of the query that saw events again."""
    schedule = schedule_for(1.0)
    fresh = schedule.tiers[0]
    now = START
    newest = START - 10.0
    for seen in [True, False, False, False, True]:
        while FRESH not in schedule.active:
            schedule.launches(now)
            now += fresh.interval
        launch = schedule.active[FRESH]
        if seen:
            newest = launch.asof - 10.0
        now += fresh.interval * 8  # long enough for the quiet to exceed the fresh age
        schedule.completed(FRESH, newest)
        for other in [n for n in schedule.active if n != FRESH]:
            schedule.completed(other)
    assert schedule.catch_up is not None, "the release is queued for a catch-up"
    begin, end = schedule.catch_up
    assert end == launch.start
    assert begin <= START - 10.0 - fresh.window

    # A catch-up that fails for good is queued again, whole, and retried after the delay.
    launched = {launch.tier.name: launch for launch in schedule.launches(now)}[CATCH_UP]
    assert launched.start == begin and launched.end is not None and launched.end >= end
    schedule.abandoned(CATCH_UP, now)
    retry = now + min(30.0, fresh.interval)
    assert CATCH_UP not in {launch.tier.name for launch in schedule.launches(retry - 0.1)}
    again = {launch.tier.name: launch for launch in schedule.launches(retry)}
    assert (again[CATCH_UP].start, again[CATCH_UP].end) == (launched.start, launched.end)


def test_a_rescan_band_added_after_every_tier_ran_counts_late_events_from_its_first_run() -> None:
    """Until every tier has read its stretch once, what a tier's first run finds may be the
    backlog of before the start; after that, every age was read before, so a band a replan
    adds finds late events at once, and they count."""
    schedule = schedule_for(1.0)
    now = START
    while not schedule.warmed:
        for launch in schedule.launches(now):
            first = launch.tier.name not in schedule.completed_tiers
            assert launch.backlog == first, "only first runs before every tier ran"
            schedule.completed(launch.tier.name)
        now += 60.0
        assert now < START + POLICY.max_lookback * 2, "every tier ran"
    added = dataclasses.replace(schedule.rescans[-1], name="rescan-99")
    schedule.rescans = (*schedule.rescans, added)
    [launch] = [launch for launch in schedule.launches(now) if launch.tier.name == added.name]
    assert not launch.backlog, "a band added after every tier ran"


def test_queries_running_side_by_side_get_requests_in_proportion_to_their_planned_shares() -> None:
    schedule = schedule_for(5.0)
    schedule.launches(START)
    running = [schedule.active[name].tier for name in schedule.active]
    running = [tier for tier in running if not tier.is_rescan]
    assert len(running) >= 2 and any(tier.is_fresh for tier in running)
    rate = sum(tier.requests_per_second for tier in running)
    picks = dict.fromkeys((tier.name for tier in running), 0)
    now = START
    for _ in range(2000):  # none of them ever reads its last page: each always wants more
        now += 1.0 / rate
        name = schedule.pick(now)
        schedule.fetched(name)
        picks[name] += 1
    for tier in running:
        expected = 2000 * tier.requests_per_second / rate
        assert abs(picks[tier.name] - expected) <= 0.02 * 2000, (picks, tier.name, expected)


def test_a_failed_query_is_retried_after_the_retry_delay_and_not_before() -> None:
    schedule = schedule_for(1.0)
    assert FRESH in {launch.tier.name for launch in schedule.launches(START)}
    fresh = schedule.active[FRESH].tier
    failed = START + 0.8 * fresh.interval  # it was due again at START + interval anyway
    retry = failed + min(30.0, fresh.interval)
    schedule.abandoned(FRESH, failed)
    assert FRESH not in {launch.tier.name for launch in schedule.launches(retry - 0.1)}
    assert FRESH in {launch.tier.name for launch in schedule.launches(retry)}


def settle(schedule: QuerySchedule, now: float) -> None:
    """What the loop does at ``now`` until nothing runs: launch what is due, read it at once."""
    while launched := schedule.launches(now):
        for launch in launched:
            schedule.completed(launch.tier.name, now - 5.0 if launch.tier.is_fresh else None)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([1e-4, 0.05, 1.0, 20.0]),
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=1800.0),  # idle time before the next launches
            st.floats(min_value=0.0, max_value=600.0),  # how long the queries then run
            st.lists(st.booleans(), min_size=8, max_size=8),  # which of them fail for good
            st.booleans(),  # the fresh query sees nothing new (an incident)
            st.floats(min_value=0.0, max_value=1.0),  # where in the sleep to look
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_the_loop_sleeping_until_next_due_neither_misses_a_query_nor_wakes_for_nothing(
    rate: float, world: list[tuple[float, float, list[bool], bool, float]]
) -> None:
    """While nothing runs the loop sleeps until ``next_due``: no query may fall due before
    then (it would start late), and one must at that moment (else the loop spins awake)."""
    schedule = schedule_for(rate)
    now, newest = START, START - 30.0
    for idle, running, failures, dark, look in world:
        now += idle
        schedule.launches(now)
        now += running
        for name, fails in zip(sorted(schedule.active), failures, strict=False):
            if fails:
                schedule.abandoned(name, now)
            else:
                fresh = schedule.active[name].tier.is_fresh
                if fresh and not dark:
                    newest = schedule.active[name].asof - 5.0
                schedule.completed(name, newest if fresh else None)
        for name in list(schedule.active):  # beyond the eight drawn: completed
            schedule.completed(name)
        settle(schedule, now)
        due = schedule.next_due(now)
        woken = copy.deepcopy(schedule).launches(max(due, now) + 1e-3)
        assert woken, "the loop wakes and nothing is due"
        for launch in woken:
            if launch.tier.name == CATCH_UP:
                assert launch.end is not None
                assert launch.end - launch.start > GAP_TOLERANCE, "a catch-up not worth a query"
        if due - 1e-3 > now:
            asleep = now + look * (due - 1e-3 - now)
            assert not copy.deepcopy(schedule).launches(asleep), "a query fell due in the sleep"


def test_a_query_under_way_keeps_the_ledger_from_forgetting_below_its_start() -> None:
    """A rescan launched before the deepest sweep moves its frontier on still reads from
    below the new frontier; until it completes the ledger must keep what it may return."""
    schedule = schedule_for(1.0)
    launched = {launch.tier.name: launch for launch in schedule.launches(START)}
    deep_band = schedule.rescans[-1].name
    rescan = launched[deep_band]
    for name in list(schedule.active):
        if name != deep_band:
            schedule.completed(name)
    assert rescan.start < min(schedule.frontiers.values()) - 600.0, "the frontier moved past it"
    assert schedule.eviction_horizon() <= rescan.start


def test_a_rescan_goes_when_it_leads_on_credit_and_no_fresh_or_catch_up_query_waits() -> None:
    """Rescans spend the spare budget: they must get their turns, not only yield them."""
    schedule = schedule_for(1.0)
    assert len(schedule.rescans) >= 2
    early, late = schedule.rescans[0], schedule.rescans[-1]
    sweep = next(t for t in schedule.tiers if not t.is_fresh)
    now = START + 3600.0
    schedule._launch(late, now - late.age - 600.0, now - late.age, now, {})
    assert schedule.pick(now) == late.name, "a rescan alone must be picked"
    schedule._launch(sweep, now - sweep.age - 600.0, now - sweep.age, now, {})
    schedule._launch(early, now - early.age - 600.0, now - early.age, now, {})
    schedule.credits.update({sweep.name: 1.0, early.name: 5.0, late.name: 9.0})
    due = {r.name: schedule.active[r.name].asof + r.interval for r in (early, late)}
    first = min(due, key=due.__getitem__)
    assert schedule.pick(now) == first, "the rescan due first goes, ahead of the sweep"
    schedule._launch(schedule.tiers[0], now - schedule.tiers[0].age, None, now, {})
    assert not schedule.active[schedule.pick(now)].tier.is_rescan, "the fresh query goes first"


def test_a_sweep_the_plan_drops_no_longer_keeps_the_ledger_from_forgetting() -> None:
    """At the first start the source looks quiet and the plan affords sweep-2 and sweep-3;
    once the rate is measured they are dropped. Their frontiers stayed, frozen at the
    start, and held the eviction horizon there for good: the ledger grew without end."""
    quiet = plan_tiers(POLICY, 0.0, None, 0.45)
    busy = plan_tiers(POLICY, 40.0, None, 0.45)
    dropped = {t.name for t in quiet} - {t.name for t in busy}
    assert dropped, "the quiet plan has sweeps the busy one lacks"
    schedule = QuerySchedule(quiet, {}, START, POLICY.max_lookback)
    schedule.adopt(quiet, {}, START)
    schedule.adopt(busy, {}, START + 60.0)
    later = START + 5 * 86400.0
    for tier in busy[1:]:  # every planned sweep kept up
        schedule.frontiers[tier.name] = later - tier.age - tier.interval
    deepest = busy[-1]
    assert schedule.eviction_horizon() == later - deepest.age - deepest.interval - 600.0


def test_a_sweep_planned_again_starts_afresh_and_a_stored_frontier_never_below_the_deepest() -> (
    None
):
    quiet = plan_tiers(POLICY, 0.0, None, 0.45)
    busy = plan_tiers(POLICY, 40.0, None, 0.45)
    dropped = next(t for t in quiet if t.name not in {b.name for b in busy})
    schedule = QuerySchedule(quiet, {}, START, POLICY.max_lookback)
    schedule.adopt(quiet, {}, START)
    schedule.adopt(busy, {}, START + 60.0)
    later = START + 86400.0
    assert dropped.name not in schedule.unknown_sweeps(quiet), "no stale frontier is looked up"
    persisted = schedule.adopt(quiet, {dropped.name: START}, later)
    fresh_start = later - dropped.age - dropped.interval
    assert schedule.frontiers[dropped.name] == fresh_start
    assert persisted[FRONTIER_PREFIX + dropped.name] == fresh_start
    # A new process: the stored frontier of a sweep an earlier process dropped is older than
    # what the ledger kept (the deepest sweep's frontier less the clock skew).
    deepest = later - POLICY.max_lookback - 3600.0
    restarted = QuerySchedule(quiet, {}, later, POLICY.max_lookback)
    persisted = restarted.adopt(quiet, {dropped.name: START, "deepest": deepest}, later)
    assert restarted.frontiers[dropped.name] == deepest
    assert persisted == {
        FRONTIER_PREFIX + t.name: later - t.age - t.interval
        for t in quiet[1:]
        if t.name not in (dropped.name, "deepest")
    } | {FRONTIER_PREFIX + dropped.name: deepest}

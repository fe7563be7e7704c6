"""The window planner: overlap, adaptation and bounds, driven with arbitrary times."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter.window import (
    Lateness,
    WindowPolicy,
    decayed,
    eviction_horizon,
    lookback_for,
    observe,
    plan_window,
)

NOW = 1_800_000_000.0
seconds = st.floats(min_value=0, max_value=30 * 86400, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn) -> WindowPolicy:
    interval = draw(st.floats(min_value=1, max_value=3600))
    lookback = interval + draw(st.floats(min_value=1, max_value=86400))
    max_lookback = lookback + draw(st.floats(min_value=0, max_value=30 * 86400))
    return WindowPolicy(lookback, max_lookback, interval)


@given(policies(), seconds, seconds)
def test_lookback_stays_within_its_bounds(policy: WindowPolicy, mark: float, age: float) -> None:
    lookback = lookback_for(Lateness(mark, NOW - age), NOW, policy)
    assert policy.lookback <= lookback <= policy.max_lookback


@given(policies(), seconds)
def test_observed_lateness_is_covered_with_a_poll_interval_to_spare(
    policy: WindowPolicy, late: float
) -> None:
    lateness = observe(Lateness(), NOW, late, policy)
    lookback = lookback_for(lateness, NOW, policy)
    assert lookback >= min(policy.max_lookback, late + policy.poll_interval)


@given(policies(), seconds, seconds, seconds)
def test_widening_is_immediate_and_shrinking_never_faster_than_the_half_life(
    policy: WindowPolicy, first: float, second: float, elapsed: float
) -> None:
    before = observe(Lateness(), NOW, first, policy)
    after = observe(before, NOW + elapsed, second, policy)
    assert after.seconds >= second
    assert after.seconds >= decayed(before, NOW + elapsed, policy)
    assert (
        decayed(before, NOW + elapsed, policy)
        >= first * 0.5 ** (elapsed / policy.shrink_half_life) * 0.999
    )


@given(policies(), seconds)
def test_successive_regular_polls_overlap_by_the_lookback(
    policy: WindowPolicy, mark: float
) -> None:
    lateness = Lateness(mark, NOW)
    first = plan_window(NOW, lateness, None, policy)
    later = NOW + policy.poll_interval
    second = plan_window(later, lateness, first.asof, policy)
    assert second.start <= first.asof - (second.lookback - policy.poll_interval) + 1e-6
    assert second.start <= later - policy.lookback
    assert second.seconds <= policy.max_lookback + 1e-6


@given(policies(), seconds)
def test_after_an_outage_the_window_reaches_back_to_the_last_complete_poll(
    policy: WindowPolicy, outage: float
) -> None:
    last_complete = NOW - outage
    window = plan_window(NOW, Lateness(), last_complete, policy)
    guaranteed = policy.lookback - policy.poll_interval
    if last_complete - guaranteed >= NOW - policy.max_lookback:
        assert window.start <= last_complete - guaranteed + 1e-6
        assert not window.clipped
    else:
        assert window.start == NOW - policy.max_lookback
        assert window.clipped


@given(policies(), seconds, st.floats(min_value=0, max_value=86400))
def test_no_future_window_reaches_before_the_eviction_horizon(
    policy: WindowPolicy, mark: float, later: float
) -> None:
    horizon = eviction_horizon(NOW, policy)
    window = plan_window(NOW + later, Lateness(mark, NOW), NOW - 10 * 86400, policy)
    assert window.start > horizon

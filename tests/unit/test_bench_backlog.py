"""The completeness benchmark's "keeps up" verdict judges a settled backlog.

Under profile (b) 1 % of events arrive up to 24 h late, so in a run's first day the late
events' flow is still ramping up: a collector that delivers every event on a fixed schedule
(one that keeps up by construction) still sees its backlog grow. These tests drive the
benchmark's scoring with such collectors, built from the benchmark's own ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.completeness_score import Measure, backlogs, early_backlog_end
from bench.model import DAY, PROFILES, Events

DEEPEST = 25 * 3600.0  # README's max_lookback: the sweep that finds what nothing else did
FRESH = 180.0  # the fresh window: lookback + poll interval


def _backlogs(
    days: float,
    deliver: Callable[[float, float], float],
    longest: float = PROFILES["b"].lateness.max_lateness,
) -> tuple[int | None, int]:
    """Early and late backlog of a collector that delivers an event (event time, visible
    at) at ``deliver(...)``, on 100k events a day of profile (b), scored as if the longest
    lateness were ``longest``."""
    events = Events(100_000, days, PROFILES["b"], seed=7)
    delivered = sorted(
        deliver(time_us / 1e6, visible)
        for time_us, visible in zip(events.times, events.available, strict=True)
    )
    return backlogs(sorted(events.available), delivered, Measure(events.start, events.end, longest))


def _steady(event_time: float, visible: float) -> float:
    """The fresh window finds what is visible within it; the deepest sweep the rest."""
    if visible - event_time <= FRESH:
        return visible + 60.0
    return max(visible, event_time + DEEPEST)


def test_a_steady_collector_keeps_up_once_the_late_flow_has_settled() -> None:
    early, late = _backlogs(2.25, _steady)
    assert early is not None
    assert abs(late - early) <= 0.1 * early, (early, late)


def test_a_one_day_horizon_cannot_judge_profile_b() -> None:
    """At 30 % of one day the steady collector's backlog is a fraction of its last hours':
    the verdict the benchmark gave before it waited for the flow to settle."""
    assert _backlogs(1.0, _steady)[0] is None
    thirty_percent = early_backlog_end(0.0, DAY, 1800.0)
    assert thirty_percent == 0.3 * DAY, "scored as (a): the window ends at 30 % of the day"
    early, late = _backlogs(1.0, _steady, longest=1800.0)
    assert early is not None
    assert late > 2 * early, (early, late)


def test_a_collector_falling_behind_is_caught_after_settling() -> None:
    """Every event waits longer the later it comes: the backlog grows."""

    def slowing(event_time: float, visible: float) -> float:
        return _steady(event_time, visible) + 0.05 * (visible - 1_767_225_600.0)

    early, late = _backlogs(2.25, slowing)
    assert early is not None
    assert late > 1.1 * early, (early, late)

"""The availability model of the simulated tenant, checked against brute force."""

from __future__ import annotations

import itertools
import random
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.sim.timeline import TICKS_PER_SECOND, Event, LatenessBand, LatenessModel, Timeline

START = 1_790_000_000.0

bands = st.lists(
    st.tuples(
        st.floats(0.01, 1.0),
        st.floats(0.01, 100.0),
        st.floats(0.0, 1000.0),
    ).map(lambda t: LatenessBand(t[0], t[1], t[1] + t[2])),
    min_size=1,
    max_size=3,
)


@st.composite
def timelines(draw: st.DrawFn) -> Timeline:
    return Timeline(
        rate=draw(st.floats(0.2, 20.0)),
        lateness=LatenessModel(tuple(draw(bands)), max_lateness=draw(st.floats(0.5, 600.0))),
        start=START,
        history=draw(st.floats(0.0, 120.0)),
        rng=random.Random(draw(st.integers(0, 2**32))),
    )


def brute_force(events: list[Event], asof: float, ge: float, le: float | None) -> list[str]:
    """The definition, with no bisect and exact comparisons of event times."""
    matching = [
        e
        for e in events
        if e.available_at <= asof
        and Fraction(e.ticks, TICKS_PER_SECOND) >= Fraction(ge)
        and (le is None or Fraction(e.ticks, TICKS_PER_SECOND) <= Fraction(le))
    ]
    matching.sort(key=lambda e: (e.event_time, e.id), reverse=True)
    return [e.id for e in matching]


@settings(max_examples=150, deadline=None)
@given(
    timeline=timelines(),
    run=st.floats(0.0, 300.0),
    asof_back=st.floats(0.0, 300.0),
    ge_back=st.floats(0.0, 500.0),
    le_back=st.one_of(st.none(), st.floats(0.0, 500.0)),
)
def test_visible_is_the_brute_force_filter_newest_first(
    timeline: Timeline,
    run: float,
    asof_back: float,
    ge_back: float,
    le_back: float | None,
) -> None:
    now = START + run
    asof = now - asof_back
    ge = asof - ge_back
    le = None if le_back is None else asof - le_back
    everything = timeline.truth(now)

    got = timeline.visible(asof, ge, le)

    assert [e.id for e in got] == brute_force(everything, asof, ge, le)
    assert all(a.ticks > b.ticks for a, b in itertools.pairwise(got))


@settings(max_examples=100, deadline=None)
@given(timeline=timelines(), run=st.floats(0.0, 600.0))
def test_lateness_is_positive_and_never_exceeds_max_lateness(
    timeline: Timeline, run: float
) -> None:
    events = timeline.truth(START + run)

    cap = timeline.lateness.max_lateness
    assert all(0 < e.available_at - e.event_time <= cap + 1e-6 for e in events)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.lists(st.floats(0.0, 50.0), max_size=12))
def test_history_does_not_depend_on_how_often_the_clock_is_read(
    seed: int, steps: list[float]
) -> None:
    def make() -> Timeline:
        lateness = LatenessModel((LatenessBand(1.0, 1.0, 60.0),), max_lateness=60.0)
        return Timeline(
            rate=5.0, lateness=lateness, start=START, history=30.0, rng=random.Random(seed)
        )

    stepped, once = make(), make()
    now = START
    for step in steps:
        now += step
        stepped.visible(now, START - 100)
    end = START + 300

    assert stepped.truth(end) == once.truth(end)


def test_events_come_at_roughly_the_configured_rate_including_history() -> None:
    lateness = LatenessModel((LatenessBand(1.0, 1.0, 5.0),), max_lateness=5.0)
    timeline = Timeline(
        rate=10.0, lateness=lateness, start=START, history=600.0, rng=random.Random(7)
    )

    events = timeline.truth(START + 400)

    assert 9000 < len(events) < 11000
    assert min(e.event_time for e in events) >= START - 600
    history_visible_at_start = timeline.visible(START, START - 600)
    assert len(history_visible_at_start) > 5500


def test_mixture_puts_the_expected_share_in_each_band() -> None:
    model = LatenessModel(
        (LatenessBand(0.9, 1.0, 10.0), LatenessBand(0.1, 100.0, 200.0)), max_lateness=150.0
    )
    rng = random.Random(3)

    samples = [model.sample(rng) for _ in range(20000)]

    slow = sum(s >= 100.0 for s in samples) / len(samples)
    assert 0.08 < slow < 0.12
    assert max(samples) == 150.0
    assert min(samples) >= 1.0


@settings(max_examples=60, deadline=None)
@given(timeline=timelines(), freeze_after=st.floats(0.0, 200.0), later=st.floats(0.0, 900.0))
def test_freeze_stops_generation_and_availability(
    timeline: Timeline, freeze_after: float, later: float
) -> None:
    frozen_at = START + freeze_after
    at_freeze = [e.id for e in timeline.visible(frozen_at, START - 1000)]

    timeline.freeze(frozen_at)
    afterwards = START + freeze_after + later

    assert [e.id for e in timeline.visible(afterwards, START - 1000)] == at_freeze
    assert all(e.event_time <= frozen_at for e in timeline.truth(afterwards))
    assert timeline.frozen_at == frozen_at


def test_incident_holds_events_back_then_releases_them_all() -> None:
    lateness = LatenessModel((LatenessBand(1.0, 1.0, 30.0),), max_lateness=30.0)
    timeline = Timeline(
        rate=5.0, lateness=lateness, start=START, history=0.0, rng=random.Random(11)
    )
    timeline.add_incident(START + 100, START + 200)

    during = timeline.visible(START + 199, START)
    after = timeline.visible(START + 200, START)

    assert all(e.available_at < START + 100 for e in during)
    assert max(e.event_time for e in during) < START + 100
    released = {e.id for e in after} - {e.id for e in during}
    assert len(released) > 300
    assert all(e.available_at == START + 200 for e in after if e.id in released)


def test_query_cost_is_bounded_by_the_range_not_the_whole_history() -> None:
    lateness = LatenessModel((LatenessBand(1.0, 0.5, 2.0),), max_lateness=2.0)
    timeline = Timeline(
        rate=200.0, lateness=lateness, start=START, history=300.0, rng=random.Random(5)
    )
    timeline.truth(START)

    def best_of_three(ge: float, le: float) -> float:
        timings = []
        for _ in range(3):
            began = time.perf_counter()
            timeline.visible(START, ge, le)
            timings.append(time.perf_counter() - began)
        return min(timings)

    narrow = best_of_three(START - 10, START - 5)
    wide = best_of_three(START - 300, START)

    assert len(timeline) > 50_000
    assert 800 < len(timeline.visible(START, START - 10, START - 5)) < 1200
    assert narrow * 10 < wide


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": (), "max_lateness": 1.0}, "bands"),
        ({"bands": (LatenessBand(1.0, 0.0, 1.0),), "max_lateness": 1.0}, "bands"),
        ({"bands": (LatenessBand(1.0, 1.0, 2.0),), "max_lateness": 0.0}, "max_lateness"),
    ],
)
def test_invalid_lateness_models_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LatenessModel(**kwargs)

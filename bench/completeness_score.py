"""How one completeness run is scored: what reached the SIEM against the ground truth.

:func:`measure` compares a run's deliveries with every event's visibility (one pass over the
events), :func:`summarise` turns that into the figures of one table row (an
:class:`Outcome`); :mod:`bench.completeness` runs the strategies and writes the tables,
:mod:`bench.combined` pools several sources' measures into one score.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.strategies import OURS, RunStats, World

SLOW = 3600.0
LATE_BEYOND = OURS.lookback + OURS.poll_interval  # what README's fresh window covers
KEEPS_UP_SLACK = 0.1  # a backlog that grew by less than this between early and late
BACKLOG_SPAN = 2 * 3600.0
BACKLOG_EARLY = 0.3  # share of the horizon: before (c)'s incident, past the start-up
SETTLE_MARGIN = 3600.0  # past the longest lateness: README's max_lookback is an hour more


@dataclass(frozen=True, slots=True)
class Outcome:
    """One strategy's score on one volume and profile."""

    volume: str
    profile: str
    strategy: str
    eligible: int
    delivered_late: int
    never_delivered: int
    slow: int
    duplicates: int
    unique: int
    requests: int
    throttled: int
    blocked: float
    backlog_early: int | None  # None: the horizon ends before the backlog can settle
    backlog_late: int
    latency_p50: float | None
    latency_p99: float | None
    latency_p999: float | None
    latency_max: float | None
    late_p99: float | None  # events later than the fresh window of README's advice
    late_max: float | None
    release_max: float | None  # events an incident held back, from their release
    guaranteed_lateness: float | None
    lost_within_guarantee: int | None
    wall_seconds: float
    requests_by_tier: tuple[tuple[str, int], ...] = ()
    best_p99: float | None = None  # bench.best: the square-root allocation, true lateness
    best_max: float | None = None

    @property
    def missing(self) -> int:
        return self.delivered_late + self.never_delivered

    @property
    def per_request(self) -> float:
        return self.unique / self.requests if self.requests else 0.0


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _backlog(available: Sequence[float], delivered: Sequence[float], at: float) -> int:
    """Visible by ``at`` and not delivered by then (both sequences sorted)."""
    return bisect.bisect_right(available, at) - bisect.bisect_right(delivered, at)


def _mean_backlog(
    available: Sequence[float], delivered: Sequence[float], until: float, span: float
) -> int:
    """The backlog sampled once a minute over ``[until - span, until)``, averaged."""
    samples = [
        _backlog(available, delivered, until - span + minute * 60.0)
        for minute in range(max(1, int(span // 60)))
    ]
    return round(sum(samples) / len(samples))


@dataclass(slots=True)
class Measure:
    """What reached the SIEM against the ground truth, before it is summarised.

    Apart from :class:`Outcome` so that a combined run can pool its sources' events into one
    score (quantiles do not add up, the events do).
    """

    start: float
    end: float
    longest_lateness: float
    eligible: int = 0
    delivered_late: int = 0
    never_delivered: int = 0
    slow: int = 0
    lost_within_guarantee: int = 0
    release_max: float | None = None
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    late_latencies: list[float] = field(default_factory=list)
    visible_at: list[float] = field(default_factory=list)
    delivered_at: list[float] = field(default_factory=list)

    def merge(self, other: Measure) -> Measure:
        """Both sources' events as one stream (same horizon)."""
        releases = [r for r in (self.release_max, other.release_max) if r is not None]
        return Measure(
            self.start,
            self.end,
            max(self.longest_lateness, other.longest_lateness),
            self.eligible + other.eligible,
            self.delivered_late + other.delivered_late,
            self.never_delivered + other.never_delivered,
            self.slow + other.slow,
            self.lost_within_guarantee + other.lost_within_guarantee,
            max(releases) if releases else None,
            self.sent + other.sent,
            self.latencies + other.latencies,
            self.late_latencies + other.late_latencies,
            self.visible_at + other.visible_at,
            self.delivered_at + other.delivered_at,
        )


def measure(world: World, sla: float, guaranteed: float | None) -> Measure:
    """Compare what reached the SIEM with the ground truth; one pass over the events."""
    events = world.events
    horizon = events.end
    m = Measure(events.start, events.end, events.profile.lateness.max_lateness, sent=world.log.sent)
    released_at = events.incident[1] if events.incident else None
    for time_us, available, first in zip(
        events.times, events.available, world.log.first, strict=True
    ):
        if first and first < available:
            raise AssertionError("an event was delivered before it was visible: model bug")
        if available > horizon:
            continue
        m.eligible += 1
        lost = not first or first - available > sla
        if not first:
            m.never_delivered += 1
        else:
            m.latencies.append(first - available)
            if available - time_us / 1e6 > LATE_BEYOND:
                m.late_latencies.append(first - available)
            if available == released_at:
                m.release_max = max(m.release_max or 0.0, first - available)
            m.delivered_late += lost
            m.slow += first - available > SLOW
        if lost and guaranteed is not None and available - time_us / 1e6 <= guaranteed:
            m.lost_within_guarantee += 1
    m.delivered_at = [first for first in world.log.first if first]
    m.visible_at = list(events.available)
    return m


def backlogs(
    visible_at: Sequence[float], delivered_at: Sequence[float], m: Measure
) -> tuple[int | None, int]:
    """The mean backlog early in the horizon (None when it cannot settle in time, see
    :func:`early_backlog_end`) and over its last ``BACKLOG_SPAN``; both sequences sorted."""
    early = early_backlog_end(m.start, m.end, m.longest_lateness)
    late = _mean_backlog(visible_at, delivered_at, m.end, BACKLOG_SPAN)
    if early is None:
        return None, late
    return _mean_backlog(visible_at, delivered_at, early, BACKLOG_SPAN), late


def summarise(
    m: Measure,
    volume: str,
    profile: str,
    strategy: str,
    stats: RunStats,
    wall: float,
) -> Outcome:
    """The figures of one table row."""
    delivered_at = sorted(m.delivered_at)
    visible_at = sorted(m.visible_at)
    latencies = sorted(m.latencies)
    late_latencies = sorted(m.late_latencies)
    backlog_early, backlog_late = backlogs(visible_at, delivered_at, m)
    guaranteed = stats.guaranteed_lateness
    return Outcome(
        volume=volume,
        profile=profile,
        strategy=strategy,
        eligible=m.eligible,
        delivered_late=m.delivered_late,
        never_delivered=m.never_delivered,
        slow=m.slow,
        duplicates=m.sent - len(delivered_at),
        unique=len(delivered_at),
        requests=stats.requests,
        throttled=stats.throttled,
        blocked=stats.blocked,
        backlog_early=backlog_early,
        backlog_late=backlog_late,
        latency_p50=_quantile(latencies, 0.5),
        latency_p99=_quantile(latencies, 0.99),
        latency_p999=_quantile(latencies, 0.999),
        latency_max=latencies[-1] if latencies else None,
        late_p99=_quantile(late_latencies, 0.99),
        late_max=late_latencies[-1] if late_latencies else None,
        release_max=m.release_max,
        guaranteed_lateness=guaranteed,
        lost_within_guarantee=None if guaranteed is None else m.lost_within_guarantee,
        wall_seconds=wall,
        requests_by_tier=stats.requests_by_tier,
    )


def score(
    world: World, volume: str, strategy: str, stats: RunStats, sla: float, wall: float
) -> Outcome:
    """One strategy's run on one source, scored."""
    m = measure(world, sla, stats.guaranteed_lateness)
    return summarise(m, volume, world.events.profile.name, strategy, stats, wall)


def settled_after(longest_lateness: float) -> float:
    """How far into a run, in seconds, the early backlog window ends at the earliest."""
    return longest_lateness + SETTLE_MARGIN + BACKLOG_SPAN


def early_backlog_end(start: float, end: float, longest_lateness: float) -> float | None:
    """Where the early backlog window ends, or None when the horizon is too short for one.

    Keeping up means the backlog holds steady, so both windows must lie where it can. Events
    of every lateness the profile draws become visible at their steady rate only once the
    longest lateness has passed since the start: before that, the late events' flow is still
    ramping up and the backlog grows whatever the collector does (under (b), where 1 % are up
    to 24 h late, a one-day horizon cannot tell keeping up from falling behind). So the early
    window ends at 30 % of the horizon or, if later, ``SETTLE_MARGIN`` and one window past
    the longest lateness, and it must end before the late window begins.
    """
    early = start + max(BACKLOG_EARLY * (end - start), settled_after(longest_lateness))
    return early if early <= end - BACKLOG_SPAN else None


def keeps_up(outcome: Outcome, floor: float = 1.0) -> bool | None:
    """The backlog at the horizon's end is within ``KEEPS_UP_SLACK`` of the early one, or
    at most ``floor`` (a low-volume source's backlog is a handful of events, mere noise);
    None when the horizon is too short to tell (:func:`early_backlog_end`)."""
    if outcome.backlog_early is None:
        return None
    return outcome.backlog_late <= max(outcome.backlog_early * (1 + KEEPS_UP_SLACK), floor)

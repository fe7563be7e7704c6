"""Which stretch of time to ask the API for, now: pure arithmetic over an injected clock.

Events appear in the API late and out of order, so each query reaches back ``lookback``
seconds, far more than the poll interval, and the ledger suppresses what comes back twice.
The lookback adapts: the planner keeps a slowly decaying high-water mark of how late events
have been seen to arrive (arrival lag) and of how stale the newest visible event is (API
drift). When that mark, with headroom, approaches the lookback, the lookback widens at once,
never beyond ``max_lookback``; when lateness falls, it shrinks back by half-lives, never below
the configured ``lookback``.

Whatever the lookback, a query never starts later than the earliest point that could still
hold an event not yet delivered: after an outage the start reaches back to cover everything
since the last complete poll, again bounded by ``max_lookback``.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HEADROOM = 1.5
DEFAULT_SHRINK_HALF_LIFE = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class WindowPolicy:
    """The bounds of one source's window, from its config."""

    lookback: float
    max_lookback: float
    poll_interval: float
    headroom: float = DEFAULT_HEADROOM
    shrink_half_life: float = DEFAULT_SHRINK_HALF_LIFE


@dataclass(frozen=True, slots=True)
class Lateness:
    """A high-water mark of observed lateness (seconds) and when it was last raised or decayed."""

    seconds: float = 0.0
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class QueryWindow:
    """One query: events with an event time at or after ``start``, as seen at ``asof``."""

    start: float
    asof: float
    lookback: float
    clipped: bool  # True when covering the gap since the last complete poll needed more than max_lookback

    @property
    def seconds(self) -> float:
        """How far back this query reaches: the ``query_window_seconds`` gauge."""
        return self.asof - self.start


def decayed(lateness: Lateness, now: float, policy: WindowPolicy) -> float:
    """The mark as it stands at ``now``: halved every ``shrink_half_life`` since it was set."""
    elapsed = max(0.0, now - lateness.at)
    return lateness.seconds * 0.5 ** (elapsed / policy.shrink_half_life)


def observe(lateness: Lateness, now: float, observed: float, policy: WindowPolicy) -> Lateness:
    """Fold a poll's worst lateness (max arrival lag or drift) into the mark: up at once, down slowly."""
    return Lateness(max(decayed(lateness, now, policy), max(0.0, observed)), now)


def lookback_for(lateness: Lateness, now: float, policy: WindowPolicy) -> float:
    """The lookback that covers the observed lateness with headroom plus one poll interval."""
    wanted = decayed(lateness, now, policy) * policy.headroom + policy.poll_interval
    return min(policy.max_lookback, max(policy.lookback, wanted))


def plan_window(
    now: float, lateness: Lateness, last_complete: float | None, policy: WindowPolicy
) -> QueryWindow:
    """The next query for a source whose last complete poll ran as of ``last_complete``.

    A lookback L polled every interval I catches events up to L - I late. After a gap, an
    event that became visible since ``last_complete`` with lateness up to L - I has an event
    time at or after ``last_complete - (L - I)``, so the query must start there at the latest.
    """
    lookback = lookback_for(lateness, now, policy)
    start = now - lookback
    if last_complete is not None:
        start = min(start, last_complete - (lookback - policy.poll_interval))
    floor = now - policy.max_lookback
    return QueryWindow(start=max(start, floor), asof=now, lookback=lookback, clipped=start < floor)


def eviction_horizon(now: float, policy: WindowPolicy, clock_skew: float = 600.0) -> float:
    """Ledger entries with an event time before this can never be returned by a future query.

    No query starts before ``now - max_lookback``; ``clock_skew`` covers a Graph clock that
    runs ahead of ours.
    """
    return now - policy.max_lookback - clock_skew

"""When each simulated event happened, and when the API starts to show it.

Real audit-log APIs reveal events late and out of order, which is what the collector
exists to survive. This model gives every event an event time and a later availability
time (event time + a heavy-tailed lateness) and answers "what would the API return at
instant `asof` for this time range". It is pure: no I/O, the clock is a float passed in,
randomness is a seeded `random.Random`, so the same seed gives the same history.

Event times are kept as integer ticks of 100 ns (the precision Graph serialises) and
strictly increase, so the newest-first order is total and a float epoch can never blur
two events into one timestamp.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

TICKS_PER_SECOND = 10_000_000
_MIN_LATENESS = 0.05
_NEVER = 2**62  # ticks to the next event of a silent (rate 0) timeline: far past any clock


class LatenessBand(NamedTuple):
    """One component of the lateness mixture: `weight` of events land in [low, high] s."""

    weight: float
    low: float
    high: float


@dataclass(frozen=True)
class LatenessModel:
    """A mixture of log-uniform bands, capped: log-uniform gives the heavy tail in each band."""

    bands: tuple[LatenessBand, ...]
    max_lateness: float
    _cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _log_ranges: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.bands or any(b.weight <= 0 or b.low <= 0 or b.high < b.low for b in self.bands):
            raise ValueError("lateness bands need positive weights and 0 < low <= high")
        if self.max_lateness <= 0:
            raise ValueError("max_lateness must be positive")
        # Precomputed once: sampling runs for every one of up to millions of events.
        cumulative = tuple(itertools.accumulate(b.weight for b in self.bands))
        log_ranges = tuple((math.log(b.low), math.log(b.high)) for b in self.bands)
        object.__setattr__(self, "_cumulative", cumulative)
        object.__setattr__(self, "_log_ranges", log_ranges)

    def sample(self, rng: random.Random) -> float:
        """Draw one lateness in seconds, never above `max_lateness`."""
        cumulative = self._cumulative
        pick = min(bisect.bisect(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)
        low, high = self._log_ranges[pick]
        value = math.exp(low + (high - low) * rng.random())
        return min(max(value, _MIN_LATENESS), self.max_lateness)


class Event(NamedTuple):
    """Ground truth for one event; `event_time` and `available_at` are epoch seconds."""

    id: str
    event_time: float
    available_at: float
    seq: int
    ticks: int


def to_ticks_ceil(seconds: float | Fraction) -> int:
    """The first tick at or after `seconds`, computed exactly (a `ge` bound)."""
    return math.ceil(Fraction(seconds) * TICKS_PER_SECOND)


def to_ticks_floor(seconds: float | Fraction) -> int:
    """The last tick at or before `seconds`, computed exactly (an `le` bound)."""
    return math.floor(Fraction(seconds) * TICKS_PER_SECOND)


def _default_id(seq: int) -> str:
    return f"event-{seq:012d}"


class Timeline:
    """The events of one source, generated lazily in event-time order as the clock advances.

    Only two arrays are stored (ticks, availability), so a million events stay small; ids
    come from `make_id(seq)` on demand so the caller decides the id format. A rate of 0
    generates nothing and draws nothing from `rng`, so a stream a scenario leaves silent
    costs nothing and still takes injected events.
    """

    def __init__(
        self,
        *,
        rate: float,
        lateness: LatenessModel,
        start: float,
        history: float,
        rng: random.Random,
        make_id: Callable[[int], str] = _default_id,
    ) -> None:
        """Begin generating at `start - history`; history whose lateness is over is visible."""
        if rate < 0:
            raise ValueError("rate must not be negative (events per second)")
        if history < 0:
            raise ValueError("history must not be negative")
        self.rate = rate
        self.lateness = lateness
        self.make_id = make_id
        self._rng = rng
        self._ticks: array[int] = array("q")
        self._available: array[float] = array("d")
        self._next_ticks = to_ticks_ceil(start - history) + self._gap_ticks()
        self._frozen_at: float | None = None
        self._incidents: list[tuple[float, float]] = []

    @property
    def frozen_at(self) -> float | None:
        """The instant after which nothing is generated or becomes available, if frozen."""
        return self._frozen_at

    def __len__(self) -> int:
        return len(self._ticks)

    def _gap_ticks(self) -> int:
        if self.rate == 0:
            return _NEVER
        return max(1, round(self._rng.expovariate(self.rate) * TICKS_PER_SECOND))

    def _horizon(self, now: float) -> float:
        return now if self._frozen_at is None else min(now, self._frozen_at)

    def advance(self, now: float) -> None:
        """Generate every event whose event time is at or before `now` (or the freeze)."""
        limit = to_ticks_floor(self._horizon(now))
        ticks, available, sample = self._ticks, self._available, self.lateness.sample
        while self._next_ticks <= limit:
            current = self._next_ticks
            ticks.append(current)
            available.append(current / TICKS_PER_SECOND + sample(self._rng))
            self._next_ticks = current + self._gap_ticks()

    def append(self, now: float) -> int:
        """One more event at about `now`, visible at once; returns its seq.

        For objects a test injects verbatim: ticks stay strictly increasing, so paging by
        ticks still never skips or repeats an event.
        """
        self.advance(now)
        current = self._ticks[-1] + 1 if self._ticks else to_ticks_floor(now)
        current = max(current, to_ticks_floor(now))
        self._ticks.append(current)
        self._available.append(now)
        self._next_ticks = max(self._next_ticks, current + 1)
        return len(self._ticks) - 1

    def freeze(self, at: float) -> None:
        """Stop the world at `at`: later events never exist, later availability never comes."""
        self.advance(at)
        self._frozen_at = at if self._frozen_at is None else min(self._frozen_at, at)

    def add_incident(self, start: float, end: float) -> None:
        """Hold back everything that would appear in [start, end) until `end` (an outage)."""
        if end <= start:
            raise ValueError("an incident must end after it starts")
        self._incidents.append((start, end))

    def clear_incidents(self) -> None:
        """Forget all incidents (events they held back become visible on their own schedule)."""
        self._incidents.clear()

    def _effective_available(self, available: float) -> float:
        changed = True
        while changed:
            changed = False
            for start, end in self._incidents:
                if start <= available < end:
                    available, changed = end, True
        return available

    def _event(self, index: int) -> Event:
        ticks = self._ticks[index]
        return Event(
            id=self.make_id(index),
            event_time=ticks / TICKS_PER_SECOND,
            available_at=self._effective_available(self._available[index]),
            seq=index,
            ticks=ticks,
        )

    def iter_visible_ticks(
        self, asof: float, ge_ticks: int | None, le_ticks: int | None
    ) -> Iterator[Event]:
        """Newest first, lazily: events with ge <= ticks <= le that are available at `asof`.

        Work is proportional to the events yielded plus the not-yet-available ones skipped,
        which lateness caps to the last `max_lateness` seconds (plus any incident).
        """
        self.advance(asof)
        cutoff = self._horizon(asof)
        ticks, available = self._ticks, self._available
        low = 0 if ge_ticks is None else bisect.bisect_left(ticks, ge_ticks)
        high = len(ticks) if le_ticks is None else bisect.bisect_right(ticks, le_ticks)
        incidents = bool(self._incidents)
        for index in range(high - 1, low - 1, -1):
            when = available[index]
            if incidents:
                when = self._effective_available(when)
            if when <= cutoff:
                yield self._event(index)

    def visible(self, asof: float, ge: float, le: float | None = None) -> list[Event]:
        """What the API returns at `asof` for ge <= event time (<= le), newest first."""
        le_ticks = None if le is None else to_ticks_floor(le)
        return list(self.iter_visible_ticks(asof, to_ticks_ceil(ge), le_ticks))

    def truth(self, now: float) -> list[Event]:
        """Every event generated up to `now`, oldest first, with its effective availability.

        Events with `available_at` after the freeze (or after `now`) exist but were never
        visible; callers comparing deliveries filter on `available_at`. Events generated
        for a later clock reading are left out, so the answer depends on `now` alone.
        """
        self.advance(now)
        end = bisect.bisect_right(self._ticks, to_ticks_floor(self._horizon(now)))
        return [self._event(index) for index in range(end)]

"""Records that change after they are created (risk detections, alerts), and when the API
shows each version of them.

A risk detection is dismissed or confirmed, an alert is taken in hand and resolved: each
change bumps the record's update time, and Graph serves the record's current state only,
so a query on the update time finds the record again with its new time and never the old
version. A collector owes every version once; this model says which versions exist, when
each became visible and when the next one replaced it.

Like :mod:`exporter.sim.timeline` it is pure and clock-driven: records are created by a
Poisson process as the clock advances, and each record's whole history (how many updates,
when, how late each becomes visible) is drawn at creation from the timeline's seeded rng.
Versions are indexed by update time in 100 ns ticks, unique across the timeline, so the
newest-first order is total and a page boundary never skips or repeats a version.
"""

from __future__ import annotations

import bisect
import heapq
import random
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from exporter.sim.timeline import (
    TICKS_PER_SECOND,
    Event,
    LatenessModel,
    to_ticks_ceil,
    to_ticks_floor,
)

_NEVER = 2**62


@dataclass(frozen=True)
class UpdateModel:
    """How often a record changes: up to `max_updates` times, `min_gap` + an exponential of
    mean `mean_gap` seconds apart.

    `min_gap` is also the least time each version stays visible before the next replaces
    it: real state changes are minutes apart, and a version shown for an instant would be
    one no poller could see, a flaw of the model rather than of the collector under test.
    """

    max_updates: int
    min_gap: float
    mean_gap: float

    def __post_init__(self) -> None:
        if self.max_updates < 0 or self.min_gap <= 0 or self.mean_gap <= 0:
            raise ValueError("updates need max_updates >= 0, min_gap > 0 and mean_gap > 0")


class Version(NamedTuple):
    """One version of a record: which record, which change (0 = as created), its times."""

    record: int
    number: int
    created_ticks: int
    ticks: int  # the update time, unique across the timeline


class RecordTimeline:
    """The records of one source and their versions, generated lazily as the clock advances.

    It answers the questions :class:`~exporter.sim.timeline.Timeline` answers (what a query
    at `asof` sees, newest first, and the ground truth), so the tenant pages both alike;
    what it yields are versions, each `Event` carrying the record's id and the version's
    update time, its `seq` an index for :meth:`version`.
    """

    def __init__(
        self,
        *,
        rate: float,
        lateness: LatenessModel,
        updates: UpdateModel,
        start: float,
        history: float,
        rng: random.Random,
        make_id: Callable[[int], str],
    ) -> None:
        if rate < 0:
            raise ValueError("rate must not be negative (records per second)")
        self.rate = rate
        self.lateness = lateness
        self.updates = updates
        self.make_id = make_id
        self._rng = rng
        # Per record: when it was created and, per version, when it becomes visible.
        self._created: array[int] = array("q")
        self._available: list[list[float]] = []
        # Versions whose update time has come, in update-time order.
        self._ticks: array[int] = array("q")
        self._versions: list[tuple[int, int]] = []  # (record, number)
        self._indexed: array[int] = array("q")  # per record: how many versions are indexed
        self._pending: list[tuple[int, int, int]] = []  # heap of (ticks, record, number)
        self._next_created = to_ticks_ceil(start - history) + self._gap_ticks()
        self._frozen_at: float | None = None
        self._incidents: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self._ticks)

    def _gap_ticks(self) -> int:
        if self.rate == 0:
            return _NEVER
        return max(1, round(self._rng.expovariate(self.rate) * TICKS_PER_SECOND))

    def _horizon(self, now: float) -> float:
        return now if self._frozen_at is None else min(now, self._frozen_at)

    def _create(self, created: int) -> None:
        """Draw a record's whole history: its update times and when each is visible."""
        record, rng, model = len(self._created), self._rng, self.updates
        self._created.append(created)
        self._indexed.append(0)
        ticks, available = created, created / TICKS_PER_SECOND + self.lateness.sample(rng)
        visible = [available]
        heapq.heappush(self._pending, (ticks, record, 0))
        for number in range(1, rng.randint(0, model.max_updates) + 1):
            gap = model.min_gap + rng.expovariate(1 / model.mean_gap)
            ticks += round(gap * TICKS_PER_SECOND)
            late = ticks / TICKS_PER_SECOND + self.lateness.sample(rng)
            available = max(late, available + model.min_gap)
            visible.append(available)
            heapq.heappush(self._pending, (ticks, record, number))
        self._available.append(visible)

    def advance(self, now: float) -> None:
        """Create every record and index every version whose time is at or before `now`."""
        limit = to_ticks_floor(self._horizon(now))
        while self._next_created <= limit:
            self._create(self._next_created)
            self._next_created += self._gap_ticks()
        while self._pending and self._pending[0][0] <= limit:
            ticks, record, number = heapq.heappop(self._pending)
            # Two records may change on one tick: the later one moves to the next tick.
            if self._ticks and ticks <= self._ticks[-1]:
                ticks = self._ticks[-1] + 1
            self._ticks.append(ticks)
            self._versions.append((record, number))
            self._indexed[record] += 1

    def freeze(self, at: float) -> None:
        """Stop the world at `at`: no later record or change, no later visibility."""
        self.advance(at)
        self._frozen_at = at if self._frozen_at is None else min(self._frozen_at, at)

    def add_incident(self, start: float, end: float) -> None:
        """Hold back every version that would appear in [start, end) until `end`."""
        if end <= start:
            raise ValueError("an incident must end after it starts")
        self._incidents.append((start, end))

    def clear_incidents(self) -> None:
        """Forget all incidents."""
        self._incidents.clear()

    def _effective(self, available: float) -> float:
        changed = True
        while changed:
            changed = False
            for start, end in self._incidents:
                if start <= available < end:
                    available, changed = end, True
        return available

    def _visible_between(self, record: int, number: int) -> tuple[float, float | None]:
        """When a version is first shown and when its successor replaces it (None: never)."""
        times = self._available[record]
        shown = self._effective(times[number])
        replaced = None if number + 1 == len(times) else self._effective(times[number + 1])
        return shown, replaced

    def version(self, index: int) -> Version:
        """The version an `Event.seq` of this timeline names."""
        record, number = self._versions[index]
        return Version(record, number, self._created[record], self._ticks[index])

    def _event(self, index: int) -> Event:
        record, number = self._versions[index]
        shown, _ = self._visible_between(record, number)
        ticks = self._ticks[index]
        return Event(self.make_id(record), ticks / TICKS_PER_SECOND, shown, index, ticks)

    def iter_visible_ticks(
        self, asof: float, ge_ticks: int | None, le_ticks: int | None
    ) -> Iterator[Event]:
        """Newest update first: the versions with ge <= update ticks <= le that are current
        at `asof` (visible, and not yet replaced by a visible successor)."""
        self.advance(asof)
        cutoff = self._horizon(asof)
        ticks = self._ticks
        low = 0 if ge_ticks is None else bisect.bisect_left(ticks, ge_ticks)
        high = len(ticks) if le_ticks is None else bisect.bisect_right(ticks, le_ticks)
        for index in range(high - 1, low - 1, -1):
            shown, replaced = self._visible_between(*self._versions[index])
            if shown <= cutoff and (replaced is None or replaced > cutoff):
                yield self._event(index)

    def truth(self, now: float) -> list[dict[str, Any]]:
        """Every version whose update time has come by `now`, in update-time order: the
        record's id, the version's number, creation and update time (also exactly, in
        ticks: a float blurs the 100 ns Graph serialises), when it was first shown and when
        its successor is shown, replacing it (None: the record has not changed since, and
        after a freeze never will).

        A version shown after the freeze, or replaced before anyone could look, was never
        served: callers decide what a collector owes from these times.
        """
        self.advance(now)
        end = bisect.bisect_right(self._ticks, to_ticks_floor(self._horizon(now)))
        rows: list[dict[str, Any]] = []
        for index in range(end):
            record, number = self._versions[index]
            shown, replaced = self._visible_between(record, number)
            if number + 1 == self._indexed[record]:
                replaced = None  # its successor's update time has not come
            rows.append(
                {
                    "id": self.make_id(record),
                    "version": number,
                    "event_time": self._created[record] / TICKS_PER_SECOND,
                    "update_time": self._ticks[index] / TICKS_PER_SECOND,
                    "update_ticks": self._ticks[index],
                    "available_at": shown,
                    "superseded_at": replaced,
                }
            )
        return rows

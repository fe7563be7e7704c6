"""An in-process model of the Graph audit-log API, fast enough for ten million events a day.

The completeness benchmark runs every strategy against the same events, the same paging and
the same throttling, in virtual time. The real simulator (:mod:`exporter.sim`) speaks HTTPS
and builds one object per event; here the events are two arrays (event time in integer
microseconds, availability in epoch seconds), a query result is a lazy cursor over them, and
a strategy sees indices, so a day of 10M events stays a few hundred megabytes and a page
costs a slice, not a thousand objects.

Semantics follow Graph: ``$filter`` on the event time with ``ge`` and an optional ``le``
(``lt`` too, for agents that use half-open windows), pages of at most ``page_size`` newest
first, the result set fixed when the first page is requested (an event that becomes visible
while a query is being paged does not join it), and a budget of ``requests`` per sliding
``per`` seconds per tenant: a request over it is answered 429 with an integer Retry-After and
does not consume the budget; several sources, each a model over its own events, may share one
:class:`Throttle` and one :class:`TurnClock`. The lateness of each event comes from
:class:`exporter.sim.timeline.LatenessModel`; a profile may add an incident, a stretch in
which nothing becomes visible and everything held back appears at its end.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import threading
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from exporter.clock import ManualClock
from exporter.sim.timeline import LatenessBand, LatenessModel

US = 1_000_000
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: the tenant's first event comes after this
_ID_BITS = 48
_ID_MASK = (1 << _ID_BITS) - 1
_ID_MULTIPLIER = 0x5DEECE66D  # odd, so seq -> suffix is a bijection modulo 2**48
_ID_INVERSE = pow(_ID_MULTIPLIER, -1, 1 << _ID_BITS)

_BASE_BANDS = (
    LatenessBand(0.95, 1.0, 120.0),
    LatenessBand(0.04, 120.0, 300.0),
    LatenessBand(0.01, 300.0, 1800.0),
)


@dataclass(frozen=True, slots=True)
class Profile:
    """How late events become visible: a lateness mixture and an optional visibility outage."""

    name: str
    description: str
    lateness: LatenessModel
    incident_hours: float = 0.0

    def incident(self, start: float, duration: float) -> tuple[float, float] | None:
        """The outage of a run, centred in it so that the collector is warm before and after."""
        if not self.incident_hours:
            return None
        begin = start + duration / 2 - self.incident_hours * 3600 / 2
        return begin, begin + self.incident_hours * 3600


def _heavy_tail() -> LatenessModel:
    """Profile (a) scaled to 99 %, plus 1 % log-uniform between one and 24 hours."""
    bands = tuple(LatenessBand(b.weight * 0.99, b.low, b.high) for b in _BASE_BANDS)
    return LatenessModel((*bands, LatenessBand(0.01, 3600.0, DAY)), DAY)


PROFILES: dict[str, Profile] = {
    "a": Profile(
        "a",
        "95 % within 2 min, 99 % within 5 min, none beyond 30 min",
        LatenessModel(_BASE_BANDS, 1800.0),
    ),
    "b": Profile("b", "(a) plus 1 % between 1 h and 24 h late", _heavy_tail()),
    "c": Profile(
        "c",
        "(a) plus a 6 h stretch in which nothing becomes visible, all of it released at its end",
        LatenessModel(_BASE_BANDS, 1800.0),
        incident_hours=6.0,
    ),
}


@lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Events:
    """One source's ground truth: event times (integer microseconds, strictly increasing) and
    the instant each becomes visible (epoch seconds, incidents applied).

    Scoring looks at the horizon ``[start, end)``; a ``drain`` after it lets a design that
    fetches late events on a slow schedule (deep sweeps) deliver them before it is judged.
    """

    def __init__(
        self,
        per_day: float,
        days: float,
        profile: Profile,
        seed: int,
        drain: float = 0.0,
        start: float = T0,
    ) -> None:
        self.per_day = per_day
        self.start = start
        self.end = start + days * DAY  # the measured horizon
        self.stop = self.end + drain  # strategies keep running (and events coming) until here
        self.profile = profile
        self.incident = profile.incident(start, days * DAY)
        rng = random.Random(seed)
        head = [rng.getrandbits(bits) for bits in (32, 16, 12, 12)]
        self._id_prefix = f"{head[0]:08x}-{head[1]:04x}-4{head[2]:03x}-8{head[3]:03x}-"
        self._id_offset = rng.getrandbits(_ID_BITS)
        self.times, self.available = _generate(
            per_day / DAY, start, self.stop, profile.lateness, self.incident, rng
        )

    def __len__(self) -> int:
        return len(self.times)

    def event_id(self, index: int) -> str:
        """A GUID, unique per event and stable for a seed; :meth:`index_of` inverts it."""
        suffix = (index * _ID_MULTIPLIER + self._id_offset) & _ID_MASK
        return f"{self._id_prefix}{suffix:012x}"

    def index_of(self, event_id: str) -> int:
        """The event a GUID from :meth:`event_id` names."""
        suffix = int(event_id[24:], 16)
        return ((suffix - self._id_offset) * _ID_INVERSE) & _ID_MASK

    def event_time_text(self, index: int) -> str:
        """The event time as Graph serialises it (here with microseconds)."""
        second, micro = divmod(self.times[index], US)
        return f"{_second_text(second)}.{micro:06d}Z"

    def event_time(self, index: int) -> float:
        """The event time in epoch seconds."""
        return self.times[index] / US


def _generate(
    rate: float,
    start: float,
    end: float,
    lateness: LatenessModel,
    incident: tuple[float, float] | None,
    rng: random.Random,
) -> tuple[array[int], array[float]]:
    """A Poisson stream of events in [start, end) with their availability; one pass, arrays."""
    times: array[int] = array("q")
    available: array[float] = array("d")
    hold_from, hold_to = incident or (math.inf, math.inf)
    now, limit = round(start * US), round(end * US)
    mean_gap = US / rate
    expovariate, sample = rng.expovariate, lateness.sample
    add_time, add_available = times.append, available.append
    while True:
        now += max(1, round(expovariate(1.0) * mean_gap))
        if now >= limit:
            return times, available
        visible = now / US + sample(rng)
        if hold_from <= visible < hold_to:
            visible = hold_to
        add_time(now)
        add_available(visible)


class Snapshot:
    """One query's result set as of its first page: a cursor walking down the event arrays."""

    def __init__(self, events: Events, asof: float, low: int, high: int, page_size: int) -> None:
        self.events = events
        self.asof = asof
        self.low = low
        self.cursor = high
        self.page_size = page_size

    def take(self) -> list[int]:
        """The next page: up to ``page_size`` visible indices, newest first."""
        available, asof, low = self.events.available, self.asof, self.low
        page: list[int] = []
        cursor = self.cursor
        while cursor > low and len(page) < self.page_size:
            need = self.page_size - len(page)
            floor = max(low, cursor - 2 * need)
            visible = [i for i in range(cursor - 1, floor - 1, -1) if available[i] <= asof]
            if len(visible) > need:
                visible = visible[:need]
                floor = visible[-1]
            page.extend(visible)
            cursor = floor
        self.cursor = cursor
        return page

    def exhausted(self) -> bool:
        """True when no visible event is left; moves the cursor past invisible ones it skipped."""
        available, asof, cursor = self.events.available, self.asof, self.cursor
        while cursor > self.low and available[cursor - 1] > asof:
            cursor -= 1
        self.cursor = cursor
        return cursor <= self.low


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: 200 with a page (and a next link when ``snapshot`` has more), or 429."""

    status: int
    page: list[int]
    snapshot: Snapshot | None = None
    retry_after: float = 0.0


class Throttle:
    """One tenant's budget: ``requests`` per sliding ``per`` seconds, whoever sends them.

    Apart from :class:`GraphModel` so that several sources (each its own model over its own
    events) can draw from one budget, as Graph's identity reports do.
    """

    def __init__(self, clock: Callable[[], float], requests: int = 5, per: float = 10.0) -> None:
        self.clock = clock
        self.limit = requests
        self.per = per
        self._accepted: deque[float] = deque()

    def admit(self) -> float:
        """0 when the request fits the sliding window, else Retry-After (whole seconds)."""
        now = self.clock()
        accepted = self._accepted
        while accepted and accepted[0] <= now - self.per:
            accepted.popleft()
        if len(accepted) >= self.limit:
            return float(max(1, math.ceil(accepted[0] + self.per - now)))
        accepted.append(now)
        return 0.0


class GraphModel:
    """The API of one tenant: filtered, paged, snapshot-consistent, throttled.

    ``throttle`` is the tenant's budget when several sources share it; by default the model
    has one of its own. ``ok`` and ``throttled`` count this source's requests only.
    """

    def __init__(
        self,
        events: Events,
        clock: Callable[[], float],
        requests: int = 5,
        per: float = 10.0,
        page_size: int = 1000,
        throttle: Throttle | None = None,
    ) -> None:
        self.events = events
        self.clock = clock
        self.page_size = page_size
        self.throttle = throttle or Throttle(clock, requests, per)
        self.ok = 0
        self.throttled = 0

    def _admit(self) -> float:
        """0 when the request fits the budget, else Retry-After; counted either way."""
        retry_after = self.throttle.admit()
        if retry_after:
            self.throttled += 1
        else:
            self.ok += 1
        return retry_after

    def query(
        self,
        ge_us: int,
        le_us: int | None = None,
        lt_us: int | None = None,
        page_size: int | None = None,
    ) -> Reply:
        """The first page of ``ge <= time (<= le) (< lt)``; the result set is fixed now."""
        retry_after = self._admit()
        if retry_after:
            return Reply(429, [], retry_after=retry_after)
        times = self.events.times
        low = bisect.bisect_left(times, ge_us)
        high = len(times)
        if le_us is not None:
            high = min(high, bisect.bisect_right(times, le_us))
        if lt_us is not None:
            high = min(high, bisect.bisect_left(times, lt_us))
        size = min(page_size or self.page_size, self.page_size)
        snapshot = Snapshot(self.events, self.clock(), low, max(low, high), size)
        return self._page(snapshot)

    def follow(self, snapshot: Snapshot) -> Reply:
        """The page behind a next link."""
        retry_after = self._admit()
        if retry_after:
            return Reply(429, [], snapshot, retry_after)
        return self._page(snapshot)

    @staticmethod
    def _page(snapshot: Snapshot) -> Reply:
        page = snapshot.take()
        return Reply(200, page, None if snapshot.exhausted() else snapshot)


class DeliveryLog:
    """What reached the SIEM: the first delivery time of each event, and every send counted."""

    def __init__(self, size: int) -> None:
        self.first = array("d", bytes(8 * size))  # 0.0 = never delivered
        self.sent = 0

    def deliver(self, indices: list[int], now: float) -> None:
        """Record one batch the SIEM accepted at ``now``."""
        first = self.first
        self.sent += len(indices)
        for index in indices:
            if not first[index]:
                first[index] = now


class BenchClock(ManualClock):
    """Virtual time that ends the run: a sleep reaching ``end`` stops there and sets ``stop``."""

    def __init__(self, start: float, end: float, stop: threading.Event) -> None:
        super().__init__(start)
        self.end = end
        self.stop = stop

    def sleep(self, seconds: float) -> bool:
        if self.stop.is_set():
            return True
        if self.now() + max(0.0, seconds) >= self.end:
            self.advance(self.end - self.now())
            self.stop.set()
            return True
        return super().sleep(seconds)


class TurnClock:
    """Virtual time for several threads that take turns: runs are deterministic for a seed.

    Each source runs its real :class:`exporter.collector.SourceLoop` in a thread of its own,
    as the service does, but only the thread holding the turn runs. A thread that sleeps
    queues its wake-up time and hands the turn to the earliest wake-up (ties in the order the
    sleeps were asked), which sets the clock to that time. So the interleaving of the loops,
    their draws on the shared budget and every figure depend on the seed alone, never on the
    host's thread scheduler, and virtual time moves only when every loop is asleep.

    The run ends when the earliest wake-up reaches ``end``: ``stop`` is set and every queued
    thread is woken, still one at a time, with ``sleep`` returning True from then on.
    Only the holder of the turn touches the queue, so it needs no lock; the hand-over
    through :class:`threading.Event` orders memory between the threads.
    """

    def __init__(self, start: float, end: float, stop: threading.Event) -> None:
        self._now = start
        self.end = end
        self.stop = stop
        self._queue: list[tuple[float, int, threading.Event]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> bool:
        if self.stop.is_set():
            return True
        turn = threading.Event()
        heapq.heappush(self._queue, (self._now + max(0.0, seconds), next(self._order), turn))
        self._hand_on()
        turn.wait()
        return self.stop.is_set()

    def run(self, bodies: Sequence[Callable[[], None]]) -> None:
        """Run each body in a thread of its own, taking turns, until every one has returned.

        The first exception a body raised is raised here once all have ended.
        """
        failures: list[BaseException] = []

        def take_turns(body: Callable[[], None], turn: threading.Event) -> None:
            turn.wait()
            try:
                body()
            except BaseException as exc:  # re-raised in the caller's thread
                failures.append(exc)
                self.stop.set()
            finally:
                self._hand_on()

        threads = []
        for body in bodies:
            turn = threading.Event()
            heapq.heappush(self._queue, (self._now, next(self._order), turn))
            threads.append(threading.Thread(target=take_turns, args=(body, turn)))
        for thread in threads:
            thread.start()
        self._hand_on()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def _hand_on(self) -> None:
        """Give the turn to the earliest wake-up; at ``end``, stop the run."""
        if not self._queue:
            return
        wake, _, turn = heapq.heappop(self._queue)
        if wake >= self.end:
            self.stop.set()
        self._now = max(self._now, min(wake, self.end))
        turn.set()

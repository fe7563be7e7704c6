"""The audit-log events of the simulated tenant: one timeline per source, the objects
injected into them, incidents and the freeze, and the ground truth they add up to."""

from __future__ import annotations

import functools
import heapq
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

from exporter.sim import objects
from exporter.sim.query import Cursor
from exporter.sim.scenario import Scenario
from exporter.sim.sources import SOURCES, JsonObject
from exporter.sim.timeline import Event, Timeline


class AuditLogs:
    """What each source holds and what a query may see of it, at the injected clock's now.

    Each timeline draws from its own seeded rng as the clock advances, so a run with the
    same scenario, clock and calls generates the same events.
    """

    def __init__(
        self, scenario: Scenario, lock: threading.RLock, clock: Callable[[], float]
    ) -> None:
        self._lock = lock
        self._clock = clock
        self._seed = scenario.seed
        start = clock()
        lateness = scenario.lateness_model()
        self._timelines = {
            source.name: Timeline(
                rate=source.rate(scenario),
                lateness=lateness,
                start=start,
                history=scenario.history,
                rng=random.Random(f"{scenario.seed}:{source.name}"),
                make_id=functools.partial(source.make_id, scenario.seed),
            )
            for source in SOURCES.values()
        }
        self._make_object = {source.name: source.make_object for source in SOURCES.values()}
        if scenario.tenant_scale_signins:
            self._make_object["signIns"] = objects.tenant_scale_signin
        self._injected: dict[str, dict[int, JsonObject]] = {name: {} for name in SOURCES}
        self._frozen_at: float | None = None

    @property
    def frozen_at(self) -> float | None:
        """When `freeze` stopped the world, or None."""
        return self._frozen_at

    def sizes(self) -> dict[str, int]:
        """How many events each source has generated so far."""
        return {name: len(t) for name, t in self._timelines.items()}

    def truth(self, name: str) -> list[JsonObject]:
        """Every generated event of a source: id, event_time and available_at (epoch floats)."""
        timeline = self._timelines[name]
        with self._lock:
            events = timeline.truth(self._clock())
        return [
            {
                "id": self._injected[name][e.seq].get("id")
                if e.seq in self._injected[name]
                else e.id,
                "event_time": e.event_time,
                "available_at": e.available_at,
            }
            for e in events
        ]

    def inject(self, name: str, objects: list[JsonObject]) -> None:
        """Give these objects the next event times of the source, visible from now on."""
        with self._lock:
            now = self._clock()
            for obj in objects:
                self._injected[name][self._timelines[name].append(now)] = obj

    def set_incident(self, incident: tuple[float, float] | None) -> None:
        """Replace the incident of every source (a stretch of extra lateness); None clears."""
        with self._lock:
            for timeline in self._timelines.values():
                timeline.clear_incidents()
                if incident is not None:
                    timeline.add_incident(incident[0], incident[1])

    def freeze(self) -> float:
        """Stop every timeline now, once; later calls return the first freeze's time."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self._clock()
                for timeline in self._timelines.values():
                    timeline.freeze(self._frozen_at)
            return self._frozen_at

    def page(self, names: Sequence[str], cursor: Cursor) -> list[tuple[int, Event]]:
        """The events a cursor's next page serves, plus one more if there is a next page,
        each with the rank (index in `names`) of its stream.

        Streams are merged newest first, equal ticks the higher rank first; each resumes
        below the cursor's (ticks, rank) position, so a page boundary between two events
        of one tick neither skips nor repeats either. One stream needs no merge.
        """
        with self._lock:
            streams = [self._stream(rank, name, cursor) for rank, name in enumerate(names)]
            merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, reverse=True)
            return [(rank, event) for _, rank, event in islice(merged, cursor.top + 1)]

    def _stream(self, rank: int, name: str, cursor: Cursor) -> Iterator[tuple[int, int, Event]]:
        """One stream's visible events under the cursor as (ticks, rank, event), newest first."""
        events = self._timelines[name].iter_visible_ticks(
            cursor.asof, cursor.ge, cursor.upper(rank)
        )
        return ((event.ticks, rank, event) for event in events)

    def render(self, name: str, event: Event) -> JsonObject:
        """The Graph object served for an event: the injected one, else a generated one."""
        return self._injected[name].get(event.seq) or self._make_object[name](
            self._seed, event.seq, event.ticks
        )

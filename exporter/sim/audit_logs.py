"""The audit-log events of the simulated tenant: one timeline per source, the objects
injected into them, incidents and the freeze, and the ground truth they add up to.

Sources of records that change (risk detections, alerts) have a
:class:`~exporter.sim.records.RecordTimeline` instead, which pages the same way and
whose ground truth lists every version."""

from __future__ import annotations

import functools
import heapq
import json
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import orjson

from exporter.sim import objects
from exporter.sim.query import Cursor
from exporter.sim.records import RecordTimeline
from exporter.sim.scenario import Scenario
from exporter.sim.sources import SOURCES, ChangingSource, JsonObject, Source
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
        self._timelines: dict[str, Timeline] = {}
        self._changing: dict[str, tuple[RecordTimeline, ChangingSource]] = {}
        self._make_object: dict[str, Callable[[int, int, int], JsonObject]] = {}
        for source in SOURCES.values():
            rng = random.Random(f"{scenario.seed}:{source.name}")
            make_id = functools.partial(source.make_id, scenario.seed)
            if isinstance(source, Source):
                self._timelines[source.name] = Timeline(
                    rate=source.rate(scenario),
                    lateness=lateness,
                    start=start,
                    history=scenario.history,
                    rng=rng,
                    make_id=make_id,
                )
                self._make_object[source.name] = source.make_object
                continue
            records = RecordTimeline(
                rate=source.rate(scenario),
                lateness=lateness,
                updates=source.updates(scenario),
                start=start,
                history=scenario.history,
                rng=rng,
                make_id=make_id,
            )
            self._changing[source.name] = (records, source)
        if scenario.tenant_scale_signins:
            self._make_object["signIns"] = objects.tenant_scale_signin
        self._injected: dict[str, dict[int, JsonObject]] = {name: {} for name in self._timelines}
        self._frozen_at: float | None = None
        self._encoded: dict[tuple[str, int], bytes] | None = (
            {} if scenario.keep_encoded_events else None
        )

    def _all(self) -> dict[str, Timeline | RecordTimeline]:
        return {**self._timelines, **{name: t for name, (t, _) in self._changing.items()}}

    @property
    def frozen_at(self) -> float | None:
        """When `freeze` stopped the world, or None."""
        return self._frozen_at

    def sizes(self) -> dict[str, int]:
        """How many events (versions, for changing records) each source has generated so far."""
        return {name: len(t) for name, t in self._all().items()}

    def truth(self, name: str) -> list[JsonObject]:
        """Every generated event of a source: id, event_time and available_at (epoch floats).

        Of a source of changing records: every version, with its number, update time and
        when it was replaced (:meth:`RecordTimeline.truth`).
        """
        if name in self._changing:
            with self._lock:
                return self._changing[name][0].truth(self._clock())
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
        """Give these objects the next event times of the source, visible from now on.

        Records that change are made by their model only: they take no injected objects.
        """
        if name in self._changing:
            raise ValueError(f"{name} holds records that change; it takes no injected objects")
        with self._lock:
            now = self._clock()
            for obj in objects:
                self._injected[name][self._timelines[name].append(now)] = obj

    def set_incident(self, incident: tuple[float, float] | None) -> None:
        """Replace the incident of every source (a stretch of extra lateness); None clears."""
        with self._lock:
            for timeline in self._all().values():
                timeline.clear_incidents()
                if incident is not None:
                    timeline.add_incident(incident[0], incident[1])

    def freeze(self) -> float:
        """Stop every timeline now, once; later calls return the first freeze's time."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self._clock()
                for timeline in self._all().values():
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
        timeline = self._changing[name][0] if name in self._changing else self._timelines[name]
        events = timeline.iter_visible_ticks(cursor.asof, cursor.ge, cursor.upper(rank))
        return ((event.ticks, rank, event) for event in events)

    def render(self, name: str, event: Event) -> JsonObject:
        """The Graph object served for an event: the injected one, else a generated one."""
        if name in self._changing:
            records, source = self._changing[name]
            return source.make_version(self._seed, records.version(event.seq))
        return self._injected[name].get(event.seq) or self._make_object[name](
            self._seed, event.seq, event.ticks
        )

    def render_json(self, name: str, event: Event) -> bytes:
        """The compact JSON an event is served as.

        Generated objects go through orjson (ten times faster) and, when the scenario says
        so, are kept: only an injected object or a record that changes can differ later.
        Injected ones hold whatever a test chose (lone surrogates, huge integers, NaN) and
        are written as the standard library writes them, a lone surrogate as its escape,
        as Graph would send it.
        """
        if name not in self._changing and event.seq in self._injected[name]:
            obj = self.render(name, event)
            try:
                return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
            except UnicodeEncodeError:
                return json.dumps(obj, separators=(",", ":")).encode()
        cache = self._encoded
        if cache is None or name in self._changing:
            return orjson.dumps(self.render(name, event))
        key = (name, event.seq)
        encoded = cache.get(key)
        if encoded is None:
            encoded = cache[key] = orjson.dumps(self.render(name, event))
        return encoded

"""The collectors under test: ours (the real :class:`SourceLoop`) and four common designs.

Each runs against the same :class:`bench.model.GraphModel` on the same virtual clock until the
run's end, and reports what it delivered to a :class:`bench.model.DeliveryLog`. Every request
takes ``REQUEST_SECONDS`` of virtual time, so paging is never free even when the budget is
idle. The baselines are plain HTTP clients: no client-side pacing, they follow next links and
sleep what a 429's Retry-After says (the seed script: five seconds on any error).

- ``ours``: the real collector loop and ledger with the settings in ``OURS`` (a lookback
  of 2 minutes, as README advises); ``ours-lb30m`` the same with a 30 minute lookback, to
  show what an over-wide fresh window costs (not run by default).
- ``nonoverlap``: ``[last, now)`` every 10 minutes, no overlap: "the last ten minutes".
- ``seed``: the seed script: ``ge now - 6h`` every 3 minutes (runs back to back when one
  takes longer), an id sent unless it was in the previous run's result. ``seed-widen`` adds
  the auto-widening it left disabled: the window doubles after an empty result (up to 48 h).
- ``checkpoint``: the usual commercial add-on: every 5 minutes ``gt <newest event time seen>
  and le now - 7m``; the checkpoint moves to the newest event time returned.
- ``halfopen``: a popular open-source agent: every minute ``[last_end, now - 30s)``.

:func:`run_sources` runs ours on several sources of one budget family at once, wired as the
service wires them (:mod:`bench.combined`).
"""

from __future__ import annotations

import math
import tempfile
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.model import US, BenchClock, DeliveryLog, Events, GraphModel, Reply, Throttle
from bench.plan_spend import PlanSpendMetrics
from exporter.budget import BudgetShares, RequestBudget
from exporter.clock import Clock
from exporter.collector import SourceLoop
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import Interrupted
from exporter.graph import key_events
from exporter.graph_query import GraphSettings
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Page
from exporter.schedule import Launch

REQUEST_SECONDS = 0.5
BUDGET = BudgetConfig(requests=5, per=10.0)
GUARANTEE_GAUGE = "siem_exporter_guaranteed_lateness_seconds"
TIER_REQUESTS_COUNTER = "siem_exporter_tier_requests_total"
OBJECT_CACHE = 400_000

OURS = SourceConfig(
    name="signins",
    api="graph",
    settings=GraphSettings(endpoint="/v1.0/auditLogs/signIns", time_field="createdDateTime"),
    page_size=1000,
    poll_interval=60.0,
    lookback=120.0,  # README's advice: about the 95th percentile of lateness; sweeps do the rest
    max_lookback=25 * 3600.0,  # profile (b) is up to 24 h late
)


class RunOver(Exception):
    """The virtual clock reached the end of the run."""


class World:
    """One source's run: its events, the API over them, what reached the SIEM; and the clock.

    A single-source run builds its own clock and budget; a combined run hands every source's
    world the one :class:`TurnClock`, ``stop`` and :class:`Throttle` they share.
    """

    def __init__(
        self,
        events: Events,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.events = events
        self.stop = stop or threading.Event()
        self.clock: Clock = clock or BenchClock(events.start, events.stop, self.stop)
        self.api = GraphModel(
            events, self.clock.now, BUDGET.requests, BUDGET.per, throttle=throttle
        )
        self.log = DeliveryLog(len(events))
        self.blocked = 0.0

    def wait_until(self, when: float) -> None:
        """Sleep until ``when``; RunOver when the run ends first."""
        if self.clock.sleep(when - self.clock.now()):
            raise RunOver

    def deliver(self, indices: list[int]) -> None:
        """The SIEM accepts a batch now."""
        if indices:
            self.log.deliver(indices, self.clock.now())


@dataclass(frozen=True, slots=True)
class RunStats:
    """What a strategy's run cost, beside what it delivered (which is in ``World.log``)."""

    requests: int
    throttled: int
    blocked: float
    guaranteed_lateness: float | None = None
    requests_by_tier: tuple[tuple[str, int], ...] = ()
    fetched_by_tier: tuple[tuple[str, int], ...] = ()  # events the tier's pages returned
    planned_by_tier: tuple[tuple[str, float], ...] = ()  # requests the tier's plans priced


def _stats(
    world: World,
    guaranteed: float | None = None,
    by_tier: tuple[tuple[str, int], ...] = (),
    fetched: tuple[tuple[str, int], ...] = (),
    planned: tuple[tuple[str, float], ...] = (),
) -> RunStats:
    api = world.api
    return RunStats(
        api.ok + api.throttled, api.throttled, world.blocked, guaranteed, by_tier, fetched, planned
    )


class Pager:
    """A baseline's HTTP client: one query, every page, waiting out 429s."""

    def __init__(self, world: World, fixed_pause: float | None = None) -> None:
        self.world = world
        self.fixed_pause = fixed_pause

    def pages(
        self, ge_us: int, le_us: int | None = None, lt_us: int | None = None
    ) -> Iterator[list[int]]:
        """Pages of indices, newest first."""
        api = self.world.api
        reply = self._call(lambda: api.query(ge_us, le_us, lt_us))
        yield reply.page
        while reply.snapshot is not None:
            reply = self._call(partial(api.follow, reply.snapshot))
            yield reply.page

    def _call(self, send: Callable[[], Reply]) -> Reply:
        world = self.world
        while True:
            reply = send()
            world.wait_until(world.clock.now() + REQUEST_SECONDS)
            if reply.status == 200:
                return reply
            pause = reply.retry_after if self.fixed_pause is None else self.fixed_pause
            world.blocked += pause
            world.wait_until(world.clock.now() + pause)


def _at(seconds: float) -> int:
    return round(seconds * US)


def run_nonoverlap(world: World, every: float = 600.0) -> RunStats:
    """``[last, now)`` every ``every`` seconds: contiguous windows, never asked twice."""
    pager, last = Pager(world), world.events.start
    try:
        while True:
            world.wait_until(last + every)
            now = world.clock.now()
            for page in pager.pages(_at(last), lt_us=_at(now)):
                world.deliver(page)
            last = now
    except RunOver:
        return _stats(world)


def run_seed(
    world: World,
    every: float = 180.0,
    window: float = 6 * 3600.0,
    widen: bool = False,
    widest: float = 48 * 3600.0,
) -> RunStats:
    """The seed script: a ``window`` every ``every`` s, deduped against the previous run only."""
    pager = Pager(world, fixed_pause=5.0)
    seen_in_run = array("i", [-1]) * len(world.events)
    run, current = 0, window
    try:
        while True:
            started = world.clock.now()
            returned = 0
            for page in pager.pages(_at(started - current)):
                fresh = [index for index in page if seen_in_run[index] != run - 1]
                for index in page:
                    seen_in_run[index] = run
                world.deliver(fresh)
                returned += len(page)
            if widen:
                current = min(current * 2, widest) if returned == 0 else window
            run += 1
            world.wait_until(started + every)
    except RunOver:
        return _stats(world)


def run_checkpoint(world: World, every: float = 300.0, delay: float = 420.0) -> RunStats:
    """``gt checkpoint and le now - delay`` every ``every`` s; checkpoint = newest time seen."""
    pager, times = Pager(world), world.events.times
    checkpoint, next_poll = _at(world.events.start) - 1, world.events.start
    try:
        while True:
            world.wait_until(next_poll)
            next_poll = world.clock.now() + every
            newest = checkpoint
            for page in pager.pages(checkpoint + 1, le_us=_at(world.clock.now() - delay)):
                world.deliver(page)
                if page:
                    newest = max(newest, times[page[0]])
            checkpoint = newest
    except RunOver:
        return _stats(world)


def run_halfopen(world: World, every: float = 60.0, delay: float = 30.0) -> RunStats:
    """``[last_end, now - delay)`` every ``every`` s."""
    pager, last_end, next_poll = Pager(world), world.events.start, world.events.start
    try:
        while True:
            world.wait_until(next_poll)
            next_poll = world.clock.now() + every
            end = world.clock.now() - delay
            if end <= last_end:
                continue
            for page in pager.pages(_at(last_end), lt_us=_at(end)):
                world.deliver(page)
            last_end = end
    except RunOver:
        return _stats(world)


class ModelPages:
    """:class:`exporter.pipeline.Source` over the model, paced and throttled as GraphClient is."""

    def __init__(
        self, world: World, source: SourceConfig, budget: RequestBudget, metrics: ExporterMetrics
    ) -> None:
        self.world = world
        self.source = source
        self.budget = budget
        self.metrics = metrics
        # Overlapping windows return each event dozens of times; keying it once keeps the
        # adapter's share of the run small (the collector never mutates events).
        self._keyed = lru_cache(maxsize=OBJECT_CACHE)(self._key)

    def pages(self, start: float, end: float | None = None) -> Iterator[Page]:
        """The filter literal is in whole seconds, widened outwards, as GraphClient sends it."""
        api, page_size = self.world.api, self.source.page_size
        ge_us = math.floor(start) * US
        le_us = None if end is None else math.ceil(end) * US
        reply, cost = self._call(lambda: api.query(ge_us, le_us, None, page_size))
        yield Page(self._events(reply.page), *cost)
        while reply.snapshot is not None:
            reply, cost = self._call(partial(api.follow, reply.snapshot))
            yield Page(self._events(reply.page), *cost)

    def _events(self, page: list[int]) -> list[KeyedEvent]:
        return [self._keyed(index) for index in page]

    def _key(self, index: int) -> KeyedEvent:
        events = self.world.events
        time_field = self.source.settings.time_field
        event = {"id": events.event_id(index), time_field: events.event_time_text(index)}
        return key_events([event], time_field)[0]

    def _call(self, send: Callable[[], Reply]) -> tuple[Reply, tuple[int, int, float]]:
        """A 200 reply and what it cost: requests, throttle retries, budget wait."""
        world, metrics, name = self.world, self.metrics, self.source.name
        requests = throttles = 0
        budget_wait = 0.0
        while True:
            waited = self.budget.acquire()
            world.blocked += waited
            budget_wait += waited
            metrics.budget_wait.labels(name).inc(waited)
            reply = send()
            requests += 1
            metrics.api_requests.labels(name, str(reply.status)).inc()
            if world.clock.sleep(REQUEST_SECONDS):
                raise Interrupted
            if reply.status == 200:
                return reply, (requests, throttles, budget_wait)
            throttles += 1
            metrics.throttle_retries.labels(name, "429").inc()
            self.budget.block_until(world.clock.now() + reply.retry_after)


class RecordingDelivery:
    """The SIEM stand-in: accepts every batch and records, in its source's world, which events
    arrived when."""

    def __init__(self, worlds: Mapping[str, World]) -> None:
        self.worlds = worlds

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        world = self.worlds[source]
        index_of = world.events.index_of
        world.deliver([index_of(item.event["id"]) for item in batch])

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """In-band warnings are off in the benchmark; the loop's logs still say them."""


class CountingLoop(SourceLoop):
    """The real loop, counting the events each tier's pages return, new or not.

    Fetches per event by tier are what a plan costs at a volume, and so where the budget's
    ceiling lies; the exporter exports requests per tier but not events, hence this hook on
    the one place a tier's pages are opened.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: Counter[str] = Counter()

    def _launch(self, launch: Launch) -> None:
        super()._launch(launch)
        run = self.active[launch.tier.name]
        run.pages = self._counted(run.pages, launch.tier.name)

    def _counted(self, pages: Iterator[Page], tier: str) -> Iterator[Page]:
        for page in pages:
            self.fetched[tier] += len(page.events)
            yield page


def run_ours(world: World, source: SourceConfig = OURS) -> RunStats:
    """The real collector loop with a real ledger (in a temporary directory) on the model."""
    return run_sources([(source, world)], world.clock, world.stop)[0]


def run_sources(
    sources: Sequence[tuple[SourceConfig, World]],
    clock: Clock,
    stop: threading.Event,
    take_turns: Callable[[Sequence[Callable[[], None]]], None] | None = None,
) -> list[RunStats]:
    """Ours on one or more sources, wired as ``exporter.service`` wires one budget family.

    One registry, ledger, :class:`RequestBudget` and :class:`BudgetShares` for all, a loop
    per source; ``take_turns`` (:meth:`bench.model.TurnClock.run`) runs several loops, each
    in its thread; a single loop runs in the caller's thread.
    """
    registry = CollectorRegistry()
    metrics = PlanSpendMetrics(registry, clock.now)
    budget = RequestBudget(BUDGET.requests, BUDGET.per, clock)
    shares = BudgetShares(BUDGET.usable, len(sources))
    health = Health({source.name: source.poll_interval for source, _ in sources}, clock=clock.now)
    delivery = RecordingDelivery({source.name: world for source, world in sources})
    warnings = InbandWarnings(False, delivery, clock)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        ledger = Ledger(Path(tmp) / "state.db")
        try:
            loops = [
                CountingLoop(
                    source,
                    ModelPages(world, source, budget, metrics),
                    ledger,
                    delivery,
                    metrics,
                    health,
                    clock,
                    stop,
                    warnings,
                    BUDGET,
                    shares,
                )
                for source, world in sources
            ]
            if take_turns is None:
                (loop,) = loops
                loop.run()
            else:
                take_turns([loop.run for loop in loops])
        finally:
            ledger.close()
    return [
        _stats(
            world,
            registry.get_sample_value(GUARANTEE_GAUGE, {"source": source.name}),
            requests_by_tier(registry, source.name),
            tuple(sorted(loop.fetched.items())),
            metrics.planned(source.name),
        )
        for (source, world), loop in zip(sources, loops, strict=True)
    ]


def requests_by_tier(registry: CollectorRegistry, source: str) -> tuple[tuple[str, int], ...]:
    """``tier_requests_total`` per tier of ``source``: where ours spent its budget."""
    return tuple(
        (sample.labels["tier"], int(sample.value))
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == TIER_REQUESTS_COUNTER and sample.labels["source"] == source
    )


STRATEGIES: dict[str, Callable[[World], RunStats]] = {
    "ours": run_ours,
    "ours-lb30m": lambda world: run_ours(world, replace(OURS, lookback=1800.0)),
    "nonoverlap": run_nonoverlap,
    "seed": run_seed,
    "seed-widen": lambda world: run_seed(world, widen=True),
    "checkpoint": run_checkpoint,
    "halfopen": run_halfopen,
}
DEFAULT_STRATEGIES = ("ours", "nonoverlap", "seed", "checkpoint", "halfopen")

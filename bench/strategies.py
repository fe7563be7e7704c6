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
"""

from __future__ import annotations

import math
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache, partial
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.model import US, BenchClock, DeliveryLog, Events, GraphModel, Reply
from exporter.budget import RequestBudget
from exporter.collector import SourceLoop
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import Interrupted
from exporter.graph import key_events
from exporter.graph_query import GraphSettings
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Page

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
    """One run's shared pieces: the clock, the API, and what reached the SIEM."""

    def __init__(self, events: Events) -> None:
        self.events = events
        self.stop = threading.Event()
        self.clock = BenchClock(events.start, events.stop, self.stop)
        self.api = GraphModel(events, self.clock.now, BUDGET.requests, BUDGET.per)
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


def _stats(
    world: World,
    guaranteed: float | None = None,
    by_tier: tuple[tuple[str, int], ...] = (),
) -> RunStats:
    api = world.api
    return RunStats(api.ok + api.throttled, api.throttled, world.blocked, guaranteed, by_tier)


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
        event = {"id": events.event_id(index), "createdDateTime": events.event_time_text(index)}
        return key_events([event], self.source.settings.time_field)[0]

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
    """The SIEM stand-in: accepts every batch and records which events arrived when."""

    def __init__(self, world: World) -> None:
        self.world = world

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        index_of = self.world.events.index_of
        self.world.deliver([index_of(item.event["id"]) for item in batch])

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """In-band warnings are off in the benchmark; the loop's logs still say them."""


def run_ours(world: World, source: SourceConfig = OURS) -> RunStats:
    """The real collector loop with a real ledger (in a temporary directory) on the model."""
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    budget = RequestBudget(BUDGET.requests, BUDGET.per, world.clock)
    api = ModelPages(world, source, budget, metrics)
    delivery = RecordingDelivery(world)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        ledger = Ledger(Path(tmp) / "state.db")
        try:
            loop = SourceLoop(
                source,
                api,
                ledger,
                delivery,
                metrics,
                Health({source.name: source.poll_interval}, clock=world.clock.now),
                world.clock,
                world.stop,
                InbandWarnings(False, delivery, world.clock),
                BUDGET,
            )
            loop.run()
        finally:
            ledger.close()
    guaranteed = registry.get_sample_value(GUARANTEE_GAUGE, {"source": source.name})
    return _stats(world, guaranteed, _requests_by_tier(registry))


def _requests_by_tier(registry: CollectorRegistry) -> tuple[tuple[str, int], ...]:
    """``tier_requests_total`` per tier: where ours spent its budget."""
    return tuple(
        (sample.labels["tier"], int(sample.value))
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == TIER_REQUESTS_COUNTER
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

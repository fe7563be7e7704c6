"""The real collector loop in simulated time: late events caught by sweeps, none twice.

The loop, the tier planner, the budget and the SQLite ledger are the production code; only
the API is an in-process model (newest first, result set fixed at the first page) and time
is a manual clock, so six hours run in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.budget import RequestBudget
from exporter.clock import ManualClock
from exporter.collector import SourceLoop
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import GraphHTTPError
from exporter.graph import key_events
from exporter.graph_query import GraphSettings
from exporter.inband import InbandWarnings
from exporter.intake import RunTally, TierRun
from exporter.ledger import Ledger
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Page
from exporter.planner import CHECKPOINT_EVENT_RATE
from exporter.tiers import DEEPEST, late_event_waits

HOUR = 3600.0
START = 1_800_000_000.0


@dataclass(frozen=True)
class ModelEvent:
    id: str
    event_time: float
    available_at: float


class StoppingClock(ManualClock):
    """A manual clock that ends the run once time passes ``end``."""

    def __init__(self, start: float, end: float, stop: threading.Event) -> None:
        super().__init__(start)
        self.end = end
        self.stop = stop

    def sleep(self, seconds: float) -> bool:
        super().sleep(seconds)
        if self.now() >= self.end:
            self.stop.set()
        return self.stop.is_set()


class ModelApi:
    """Graph's paging semantics over a fixed list of events, spending the shared budget."""

    def __init__(
        self,
        events: Sequence[ModelEvent],
        budget: RequestBudget,
        clock: ManualClock,
        page_size: int = 1000,
    ):
        self.events = sorted(events, key=lambda e: e.event_time, reverse=True)
        self.budget = budget
        self.clock = clock
        self.page_size = page_size
        self.budget_waited = 0.0
        self.requests = 0
        self.down: tuple[float, float] | None = None
        self.down_error: Exception = GraphHTTPError(503, "serviceNotAvailable", "the model is down")
        self.down_requests = 0  # requests answered with ``down_error``
        self.serving_fresh = False  # the page just served answers an open-ended (fresh) query
        # Throttle retries each page reports, for open-ended (fresh) and bounded queries.
        self.fresh_throttles = self.bounded_throttles = 0
        self.bounded_pages = 0

    def pages(self, start: float, end: float | None = None) -> Iterator[Page]:
        waited = self.budget.acquire()
        asof = self.clock.now()
        if self.down and self.down[0] <= asof < self.down[1]:
            self.down_requests += 1
            raise self.down_error
        visible = [
            e
            for e in self.events
            if e.available_at <= asof
            and e.event_time >= start
            and (end is None or e.event_time <= end)
        ]
        self.budget_waited += waited
        for number, offset in enumerate(range(0, max(1, len(visible)), self.page_size)):
            if number:
                waited = self.budget.acquire()
                self.budget_waited += waited
            self.requests += 1
            chunk = visible[offset : offset + self.page_size]
            self.serving_fresh = end is None
            self.bounded_pages += end is not None
            throttles = self.fresh_throttles if end is None else self.bounded_throttles
            events = [{"id": e.id, "createdDateTime": iso(e.event_time)} for e in chunk]
            keyed = key_events(events, "createdDateTime")
            yield Page(keyed, throttle_retries=throttles, budget_wait=waited)


class RecordingDelivery:
    def __init__(self, clock: ManualClock, api: ModelApi) -> None:
        self.clock = clock
        self.api = api
        self.delivered: Counter[str] = Counter()
        self.first_sent: dict[str, float] = {}
        self.found_by_fresh: dict[str, bool] = {}
        self.warnings: list[str] = []

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        for item in batch:
            self.delivered[item.event["id"]] += 1
            self.first_sent.setdefault(item.event["id"], self.clock.now())
            self.found_by_fresh.setdefault(item.event["id"], self.api.serving_fresh)

    def send_warning(self, text: str, timestamp: datetime) -> None:
        self.warnings.append(text)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lateness(rng: random.Random) -> float:
    draw = rng.random()
    if draw < 0.90:
        return rng.uniform(1, 60)
    if draw < 0.99:
        return rng.uniform(60, 20 * 60)
    return rng.uniform(HOUR, 3 * HOUR)


def make_events(
    rng: random.Random, duration: float, incident: tuple[float, float] | None = None
) -> list[ModelEvent]:
    """Half an event a second from an hour before the start; an incident holds arrivals back."""
    events = []
    t = START - HOUR
    while t < START + duration:
        t += rng.expovariate(0.5)
        available = t + lateness(rng)
        if incident and incident[0] <= available < incident[1]:
            available = incident[1]
        events.append(ModelEvent(f"{len(events):08x}-0000-4000-8000-000000000000", t, available))
    return events


SOURCE = SourceConfig(
    "signins",
    "graph",
    GraphSettings("/v1.0/auditLogs/signIns", "createdDateTime"),
    page_size=1000,
    poll_interval=60.0,
    lookback=120.0,
    max_lookback=4 * HOUR,
)


def build_loop(
    api: ModelApi,
    ledger: Ledger,
    clock: ManualClock,
    stop: threading.Event,
    inband: bool = False,
) -> tuple[SourceLoop, RecordingDelivery, CollectorRegistry]:
    """The production loop for one source over ``api``, recording what it delivers."""
    delivery = RecordingDelivery(clock, api)
    source = dataclasses.replace(SOURCE, page_size=api.page_size)
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    metrics.initialise([source], [], {"identity_reports": 0.5})
    loop = SourceLoop(
        source,
        api,
        ledger,
        delivery,
        metrics,
        Health({"signins": 60.0}, clock=clock.now),
        clock,
        stop,
        InbandWarnings(inband, delivery, clock),
        BudgetConfig(5, 10.0),
    )
    return loop, delivery, registry


def run_loop(
    events: list[ModelEvent],
    duration: float,
    tmp_path: Path,
    down: tuple[float, float] | None = None,
    page_size: int = 1000,
    throttles: tuple[int, int] = (0, 0),
    down_error: Exception | None = None,
) -> tuple[SourceLoop, ModelApi, RecordingDelivery, CollectorRegistry]:
    """The production loop over ``events`` for ``duration`` simulated seconds; while ``down``
    every request fails with ``down_error`` (a 503 unless given)."""
    stop = threading.Event()
    clock = StoppingClock(START, START + duration, stop)
    budget = RequestBudget(5, 10.0, clock)
    api = ModelApi(events, budget, clock, page_size)
    api.down = down
    if down_error is not None:
        api.down_error = down_error
    api.fresh_throttles, api.bounded_throttles = throttles
    ledger = Ledger(tmp_path / "state.db")
    loop, delivery, registry = build_loop(api, ledger, clock, stop, inband=any(throttles))
    loop.run()
    ledger.close()
    return loop, api, delivery, registry


def test_a_restart_resumes_every_sweep_where_it_stopped(tmp_path: Path) -> None:
    """Sweeps pass each stretch of event time once; a restart after hours of downtime must
    take up the stored frontiers, or the stretch swept during the downtime is never swept."""
    duration = 2 * HOUR
    before, _, _, _ = run_loop(make_events(random.Random(3), duration), duration, tmp_path)
    stopped = dict(before.schedule.frontiers)
    assert stopped, "the first run had sweeps"

    downtime = 3 * HOUR
    stop = threading.Event()
    clock = ManualClock(START + duration + downtime)
    ledger = Ledger(tmp_path / "state.db")
    try:
        api = ModelApi([], RequestBudget(5, 10.0, clock), clock)
        after, _, _ = build_loop(api, ledger, clock, stop)
    finally:
        ledger.close()
    frontiers = after.schedule.frontiers
    resumed = {name: frontiers[name] for name in stopped if name in frontiers}
    assert resumed, "the restart plans some of the same sweeps"
    assert resumed == {name: stopped[name] for name in resumed}


def test_sweeps_catch_what_the_fresh_window_misses_without_duplicates(tmp_path: Path) -> None:
    duration = 8 * HOUR
    events = make_events(random.Random(7), duration)
    loop, api, delivery, registry = run_loop(events, duration, tmp_path)
    source = loop.source

    assert not [i for i, n in delivery.delivered.items() if n > 1], "an event was sent twice"
    deepest = loop.schedule.tiers[-1]
    settled = START + duration - deepest.age - 2 * deepest.interval
    expected = {e.id for e in events if START - HOUR / 2 <= e.event_time <= settled}
    late = {e.id for e in events if e.available_at - e.event_time > source.lookback + 60}
    assert expected & late, "the run has events later than the fresh window covers"
    missing = expected - set(delivery.delivered)
    assert not missing, f"{len(missing)} of {len(expected)} events never delivered"
    assert api.requests <= duration * 0.5 * 0.9 * 1.02, "the reserve was spent"
    tiers = {t.name for t in loop.schedule.tiers}
    assert {"fresh", "deepest"} <= tiers
    # The ledger forgets what no query can return again: below the deepest sweep's band.
    horizon = loop.schedule.eviction_horizon()
    assert horizon >= START + duration - deepest.age - 2 * deepest.interval - 600.0
    for tier in tiers:
        assert registry.get_sample_value(
            "siem_exporter_tier_requests_total", {"source": "signins", "tier": tier}
        ), f"tier {tier} never ran"
    guaranteed = registry.get_sample_value(
        "siem_exporter_guaranteed_lateness_seconds", {"source": "signins"}
    )
    assert guaranteed == 4 * HOUR
    # A Graph window runs on event time: the drift the alerts hold against it is API drift.
    drift = registry.get_sample_value("siem_exporter_api_drift_seconds", {"source": "signins"})
    assert drift
    assert (
        registry.get_sample_value("siem_exporter_window_drift_seconds", {"source": "signins"})
        == drift
    )

    def found(tier: str) -> float | None:
        return registry.get_sample_value(
            "siem_exporter_late_events_found_total", {"source": "signins", "tier": tier}
        )

    available = {e.id: e.available_at for e in events}
    hours_late = {
        e for e in events if e.event_time >= START and e.available_at - e.event_time >= HOUR
    }
    hours_late = {e for e in hours_late if e.id in delivery.delivered}
    assert hours_late, "the run has events only a sweep can find"
    assert found("fresh") is None, "the fresh query's finds are not late finds"
    assert registry.get_sample_value(
        "siem_exporter_late_event_max_wait_seconds", {"source": "signins"}
    ) == max(wait for _, wait in late_event_waits(loop.schedule.all))
    late_finds = sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "siem_exporter_late_events_found_total"
    )
    # Counted from a tier's first run on, once every tier has read its stretch once (the
    # first hour here): rescan bands a replan creates count from their first run.
    found_late = [i for i, fresh in delivery.found_by_fresh.items() if not fresh]
    after_first_hour = [i for i in found_late if delivery.first_sent[i] >= START + HOUR]
    assert len(after_first_hour) <= late_finds <= len(found_late)
    assert late_finds >= len(hours_late)
    stated = max(wait for _, wait in late_event_waits(loop.schedule.all))
    waits = sorted(delivery.first_sent[e.id] - available[e.id] for e in hours_late)
    assert waits[-1] <= stated + SOURCE.poll_interval, (
        f"events hours late waited up to {waits[-1] / 60:.0f} min after becoming visible; "
        f"the plan says {stated / 60:.0f} min"
    )
    assert stated <= 5 * SOURCE.poll_interval, "the spare budget rescans every band of age"


def test_what_an_incident_held_back_is_caught_up_at_once(tmp_path: Path) -> None:
    duration = 6 * HOUR
    incident = (START + HOUR, START + 3 * HOUR)
    events = make_events(random.Random(11), duration, incident)
    # Small pages keep the fresh window short (it stretches to fill its last page), as at
    # high volume, so what the incident held back lies well beyond it.
    loop, api, delivery, registry = run_loop(events, duration, tmp_path, page_size=100)

    assert not [i for i, n in delivery.delivered.items() if n > 1], "an event was sent twice"
    fresh_age = loop.schedule.tiers[0].age
    held_back = [
        e
        for e in events
        if e.available_at == incident[1]
        and e.event_time >= incident[0] - 20 * 60
        and incident[1] - e.event_time > fresh_age
    ]
    assert held_back, "the incident held back events that happened during it, beyond the window"
    assert [e for e in held_back if e.event_time < incident[0]], (
        "and events from before it, which the shallow sweeps passed while they were hidden"
    )
    waits = [
        delivery.first_sent[e.id] - incident[1] for e in held_back if e.id in delivery.first_sent
    ]
    assert len(waits) == len(held_back), "held-back events were lost"
    catch_up_pages = registry.get_sample_value(
        "siem_exporter_tier_requests_total", {"source": "signins", "tier": "catch-up"}
    )
    assert catch_up_pages
    # The release is read once, on what the tiers leave of the usable budget: rescans wait
    # meanwhile, or they would read the same stretch again and the last of it waits longer.
    spare = BudgetConfig(5, 10.0).usable - sum(t.requests_per_second for t in loop.schedule.tiers)
    bound = 1.15 * catch_up_pages / spare
    assert max(waits) <= bound, f"held-back events waited up to {max(waits):.0f} s, not {bound:.0f}"
    tier_waits = [
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "siem_exporter_tier_budget_wait_seconds_total"
    ]
    assert api.budget_waited > 0, "catching up was paced by the budget"
    assert abs(sum(tier_waits) - api.budget_waited) < 1e-6, "every budget wait belongs to a tier"


def test_a_stretch_the_fresh_tier_missed_while_graph_was_down_is_caught_up(
    tmp_path: Path,
) -> None:
    duration = 4 * HOUR
    down = (START + HOUR, START + 2.5 * HOUR)
    events = make_events(random.Random(5), duration)
    loop, _, delivery, _ = run_loop(events, duration, tmp_path, down=down)

    assert not [i for i, n in delivery.delivered.items() if n > 1], "an event was sent twice"
    waits = waits_after_outage(loop, events, delivery, down)
    assert max(waits) < 10 * 60, f"events Graph showed while down waited {max(waits) / 60:.0f} min"


def waits_after_outage(
    loop: SourceLoop,
    events: Sequence[ModelEvent],
    delivery: RecordingDelivery,
    outage: tuple[float, float],
) -> list[float]:
    """How long after ``outage`` ended each event that became visible during it, within the
    fresh tier's reach, waited to be sent (infinite if never): none may be left behind."""
    fresh_age = loop.schedule.tiers[0].age
    visible = [
        e
        for e in events
        if outage[0] <= e.available_at < outage[1] and e.available_at - e.event_time <= fresh_age
    ]
    assert visible, "nothing became visible during the outage: the test proves nothing"
    return [delivery.first_sent.get(e.id, float("inf")) - outage[1] for e in visible]


def test_a_query_under_way_keeps_the_ledger_from_forgetting_what_it_may_still_return(
    tmp_path: Path,
) -> None:
    """A rescan reaches back to the oldest frontier, newest page first; when a sweep moves
    that frontier on meanwhile, the ledger must keep what the rescan's remaining pages may
    still hold, or those events go out a second time (the 100k benchmark's profile (b) sent
    1.7 % twice so)."""
    stop = threading.Event()
    clock = ManualClock(START)
    ledger = Ledger(tmp_path / "state.db")
    try:
        api = ModelApi([], RequestBudget(5, 10.0, clock), clock)
        loop, _, _ = build_loop(api, ledger, clock, stop)
        schedule = loop.schedule
        deepest = next(t for t in schedule.tiers if t.name == DEEPEST)
        rescan = schedule.rescans[-1]
        frontier = schedule.frontiers[DEEPEST]
        old = frontier + 60.0
        key = b"k" * 16
        ledger.record("signins", [(key, old)], START)
        schedule._launch(rescan, frontier, START - rescan.age, START, {})
        sweep = schedule._launch(deepest, frontier, old + 2 * HOUR, START, {})
        run = TierRun(sweep, RunTally(), iter(()))
        loop.active[DEEPEST] = run
        loop._complete(run)
        assert schedule.frontiers[DEEPEST] == old + 2 * HOUR, "the deepest sweep moved on"
        assert ledger.delivered("signins", [(key, old)]) == {key}, "the ledger forgot it"
    finally:
        ledger.close()


@pytest.mark.parametrize(("fresh", "bounded", "warned"), [(3, 0, True), (0, 5, False)])
def test_the_throttling_warning_counts_only_the_fresh_query_s_own_pages(
    fresh: int, bounded: int, warned: bool, tmp_path: Path
) -> None:
    """Sweeps and rescans run page by page between the fresh query's pages: the throttles
    their pages met must not be blamed on the poll, nor may the poll's own go unnoticed."""
    duration = 20 * 60.0
    events = make_events(random.Random(5), duration)
    _, api, delivery, _ = run_loop(events, duration, tmp_path, throttles=(fresh, bounded))
    assert api.bounded_pages, "sweeps or rescans ran beside the fresh query"
    throttling = [text for text in delivery.warnings if "throttled source signins" in text]
    assert bool(throttling) == warned, delivery.warnings


def restarted(
    events: Sequence[ModelEvent], at: float, until: float
) -> tuple[threading.Event, StoppingClock, ModelApi]:
    """A second process's clock and API, from ``at`` until ``until``, pages of 100."""
    stop = threading.Event()
    clock = StoppingClock(at, until, stop)
    return stop, clock, ModelApi(events, RequestBudget(5, 10.0, clock), clock, 100)


def test_a_restart_plans_on_the_rate_the_last_process_measured(tmp_path: Path) -> None:
    """The first plan after a restart is the plan the last process ended with: no sweep is
    planned on no rate only to be dropped at the first fresh query."""
    duration, downtime = 2 * HOUR, 3 * HOUR
    events = make_events(random.Random(5), duration + downtime + HOUR)
    first, _, _, _ = run_loop(events, duration, tmp_path, page_size=100)
    restart = START + duration + downtime
    stop, clock, api = restarted(events, restart, restart + HOUR)
    ledger = Ledger(tmp_path / "state.db")
    try:
        loop, _, _ = build_loop(api, ledger, clock, stop)
    finally:
        ledger.close()
    assert [t.name for t in loop.schedule.tiers] == [t.name for t in first.schedule.tiers]
    assert loop.planner.rate == first.planner.rate


def test_after_a_restart_a_sweep_the_measured_rate_drops_stops_reading(tmp_path: Path) -> None:
    """A ledger written before the rate was kept: the first plan of the process has no rate
    to go on and affords every sweep; the sweeps it adds resume from frontiers an earlier
    process stored, hours back. Once the measured rate drops them, their queries stop: the
    deepest sweep reads what they would have."""
    duration, downtime, after = 2 * HOUR, 3 * HOUR, HOUR
    events = make_events(random.Random(5), duration + downtime + after)
    first, _, _, _ = run_loop(events, duration, tmp_path, page_size=100)
    kept = {t.name for t in first.schedule.tiers}
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute("DELETE FROM checkpoints WHERE name = ?", (CHECKPOINT_EVENT_RATE,))
    restart = START + duration + downtime
    stop, clock, api = restarted(events, restart, restart + after)
    ledger = Ledger(tmp_path / "state.db")
    try:
        loop, _, registry = build_loop(api, ledger, clock, stop)
        dropped = {t.name for t in loop.schedule.tiers} - kept
        assert dropped, "the first plan of the restart has sweeps the measured rate drops"
        loop.run()
    finally:
        ledger.close()
    assert {t.name for t in loop.schedule.tiers} == kept
    for name in dropped:
        pages = registry.get_sample_value(
            "siem_exporter_tier_requests_total", {"source": "signins", "tier": name}
        )
        assert (pages or 0) <= 3, f"{name} read {pages} pages after the plan dropped it"


def test_plans_are_priced_on_the_rate_of_settled_bands(tmp_path: Path) -> None:
    """A fifth of the events are one to ten minutes late, so the fresh query sees its
    window's young end thinly and measures the rate low; a shallow sweep's band has aged past
    that and counts what there is. The plan's rate is within a tenth of the true one (half an
    event a second; bands of a hundred events vary by a tenth), where the fresh query's alone
    is a fifth low."""
    rng = random.Random(11)
    events, t = [], START - HOUR
    while t < START + 3 * HOUR:
        t += rng.expovariate(0.5)
        late = rng.uniform(1, 30) if rng.random() < 0.8 else rng.uniform(60, 600)
        events.append(ModelEvent(f"{len(events):08x}-0000-4000-8000-000000000000", t, t + late))
    loop, _, _, _ = run_loop(events, 3 * HOUR, tmp_path, page_size=100)
    assert loop.planner.fresh_rate < 0.43
    assert 0.45 <= loop.planner.rate <= 0.55

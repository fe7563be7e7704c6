"""Every metric the exporter exposes, on one injected registry, and the HTTP endpoints.

Names and labels of the contract metrics are fixed (see CONTRACT.md). Labels are bounded:
source and sink names from the config, HTTP status codes, and the reason values listed in
:mod:`exporter.errors`; never an event id, a user, an address or a secret. Label children
are created at start-up so every series exists, at zero, before the first event.

``/metrics`` serves the registry, ``/healthz`` says the loops are alive, ``/readyz`` says
every source polled successfully of late and every sink accepts events. Nothing served here
is sensitive: counts, timestamps and config names only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from exporter import __version__
from exporter.config import SourceConfig
from exporter.errors import API_ERROR_REASONS, TOKEN_FAILURE_REASONS
from exporter.pipeline import REJECTION_REASONS
from exporter.tiers import Tier

PREFIX = "siem_exporter"
ARRIVAL_LAG_BUCKETS = (
    1,
    5,
    15,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    21600,
    43200,
    86400,
    172800,
    345600,
    604800,
)
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
THROTTLE_CODES = ("429", "503", "504")


class ExporterMetrics:
    """The metric objects, built on ``registry`` (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, list(labels), registry=registry)

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, list(labels), registry=registry)

        self.api_drift = gauge(
            "api_drift_seconds",
            "Now minus the newest event time seen by the last completed query.",
            ["source"],
        )
        # What the drift alerts compare with query_window_seconds: drift on the axis the
        # window runs on. For Graph that is the event time (the same value as api_drift);
        # the Management Activity API lists by contentCreated while its events are dated by
        # CreationTime, usually 60-90 minutes earlier, so api_drift against its window would
        # alarm on every healthy source with a one-hour lookback.
        self.window_drift = gauge(
            "window_drift_seconds",
            "Now minus the newest time, on the axis the query window runs on (event time; "
            "contentCreated for the Management Activity API), seen by the last completed query.",
            ["source"],
        )
        self.arrival_lag = Histogram(
            f"{PREFIX}_event_arrival_lag_seconds",
            "For each new event: when it was first seen minus its own event time.",
            ["source"],
            buckets=ARRIVAL_LAG_BUCKETS,
            registry=registry,
        )
        self.query_window = gauge(
            "query_window_seconds", "The lookback of the last query.", ["source"]
        )
        self.events_sent = counter("events_sent", "Events the sink accepted.", ["source", "sink"])
        self.duplicates = counter(
            "duplicates_suppressed", "Events fetched again and not re-sent.", ["source"]
        )
        self.empty_pages = counter("empty_pages", "Pages that held no events.", ["source"])
        self.throttle_retries = counter(
            "throttle_retries", "Retries after 429/503/504.", ["source", "code"]
        )
        self.token_failures = counter("token_failures", "Failed token acquisitions.", ["reason"])
        self.api_requests = counter(
            "api_requests",
            "Every API request by HTTP status ('network' when none came).",
            ["source", "code"],
        )
        self.sink_errors = counter(
            "sink_errors", "Failed sends (each retried, nothing dropped).", ["sink"]
        )
        self.events_rejected = counter(
            "events_rejected",
            "Events a sink refused for good (kept in the dead-letter file, never silently "
            "dropped).",
            ["sink", "reason"],
        )
        self.dead_letter_events = gauge(
            "dead_letter_events",
            "Refused events the dead-letter file holds, those of earlier runs included.",
        )
        self.last_success = gauge(
            "last_success_timestamp_seconds", "End of the last fully successful poll.", ["source"]
        )
        self.cycle_duration = Histogram(
            f"{PREFIX}_cycle_duration_seconds",
            "One poll, all pages.",
            ["source"],
            buckets=CYCLE_BUCKETS,
            registry=registry,
        )
        self.build_info = gauge("build_info", "Always 1; the version as a label.", ["version"])

        self.api_errors = counter(
            "api_errors", "Polls abandoned after retries, by reason.", ["source", "reason"]
        )
        self.events_without_id = counter(
            "events_without_id", "Events keyed by a hash of their content.", ["source"]
        )
        self.budget_rate = gauge(
            "budget_requests_per_second",
            "The API request budget of each family of endpoints (sources of one share it).",
            ["family"],
        )
        self.budget_wait = counter(
            "budget_wait_seconds", "Time spent waiting for the request budget.", ["source"]
        )
        self.sink_up = gauge("sink_up", "1 when the last delivery attempt succeeded.", ["sink"])
        self.token_expiry = gauge(
            "token_expiry_timestamp_seconds", "When the current access token expires."
        )
        self.last_token_success = gauge(
            "last_token_success_timestamp_seconds", "When a token was last obtained."
        )
        self.poll_interval = gauge(
            "poll_interval_seconds", "The configured poll interval.", ["source"]
        )
        self.guaranteed_lateness = gauge(
            "guaranteed_lateness_seconds",
            "The lateness certain to be caught now: the oldest age among tiers keeping up.",
            ["source"],
        )
        self.late_event_max_wait = gauge(
            "late_event_max_wait_seconds",
            "The longest a late event (up to max_lookback) can wait after it becomes visible, "
            "as the current plan stands.",
            ["source"],
        )
        self.max_lookback = gauge(
            "max_lookback_seconds", "The configured lateness to cover (max_lookback).", ["source"]
        )
        self.tier_interval = gauge(
            "tier_interval_seconds", "How often each tier runs.", ["source", "tier"]
        )
        self.tier_age = gauge(
            "tier_age_seconds", "The lateness each tier guarantees to catch.", ["source", "tier"]
        )
        self.tier_window = gauge(
            "tier_window_seconds",
            "The event-time span of each tier's last query.",
            ["source", "tier"],
        )
        self.tier_planned_rate = gauge(
            "tier_planned_requests_per_second",
            "The budget share reserved for each tier.",
            ["source", "tier"],
        )
        self.tier_behind = gauge(
            "tier_behind_seconds",
            "How far behind its schedule each tier is (0: on time).",
            ["source", "tier"],
        )
        self.tier_requests = counter(
            "tier_requests", "Pages fetched by each tier.", ["source", "tier"]
        )
        self.late_events_found = counter(
            "late_events_found",
            "New events found by a tier other than the fresh query: what a collector "
            "without overlapping sweeps would have lost.",
            ["source", "tier"],
        )
        self.rescan_oldest_age = gauge(
            "rescan_oldest_age_seconds",
            "The old edge of each rescan's band of age (its young edge is tier_age_seconds).",
            ["source", "tier"],
        )
        self.rescan_spare = gauge(
            "rescan_spare_requests_per_second",
            "What the fresh tier and the sweeps leave of the source's budget share, for rescans.",
            ["source"],
        )
        self.rescan_floor_met = gauge(
            "rescan_floor_met",
            "1 when the spare budget rescans every band of age at least every rescan_floor.",
            ["source"],
        )
        self.tier_budget_wait = counter(
            "tier_budget_wait_seconds",
            "Time each tier's pages waited for the request budget.",
            ["source", "tier"],
        )
        self.build_info.labels(__version__).set(1)
        for reason in TOKEN_FAILURE_REASONS:
            self.token_failures.labels(reason)

    def publish_plan(
        self,
        source: str,
        tiers: Iterable[Tier],
        gone: Collection[str],
        spare: float,
        floor_met: bool,
    ) -> None:
        """The plan's tiers as gauges; the gauges of rescans no longer planned go away."""
        for tier in tiers:
            self.tier_interval.labels(source, tier.name).set(tier.interval)
            self.tier_age.labels(source, tier.name).set(tier.age)
            self.tier_planned_rate.labels(source, tier.name).set(tier.requests_per_second)
            if tier.is_rescan:
                self.rescan_oldest_age.labels(source, tier.name).set(tier.age + tier.window)
            if not tier.is_fresh:
                self.late_events_found.labels(source, tier.name)
        for name in gone:
            for gauge in (
                self.tier_interval,
                self.tier_age,
                self.tier_planned_rate,
                self.tier_behind,
                self.tier_window,
                self.rescan_oldest_age,
            ):
                with contextlib.suppress(KeyError):  # never set: dropped before it ran
                    gauge.remove(source, name)
        self.rescan_spare.labels(source).set(max(0.0, spare))
        self.rescan_floor_met.labels(source).set(1 if floor_met else 0)

    def initialise(
        self,
        sources: Iterable[SourceConfig],
        sinks: Iterable[str],
        budget_rates: Mapping[str, float],
    ) -> None:
        """Create every label child at zero, so series exist before anything happens."""
        sink_names = list(sinks)
        for source in sources:
            name = source.name
            for child in (
                self.api_drift,
                self.window_drift,
                self.arrival_lag,
                self.query_window,
                self.duplicates,
                self.empty_pages,
                self.last_success,
                self.cycle_duration,
                self.events_without_id,
                self.budget_wait,
                self.guaranteed_lateness,
            ):
                child.labels(name)
            self.poll_interval.labels(name).set(source.poll_interval)
            self.max_lookback.labels(name).set(source.max_lookback)
            for sink in sink_names:
                self.events_sent.labels(name, sink)
            for code in THROTTLE_CODES:
                self.throttle_retries.labels(name, code)
            self.api_requests.labels(name, "200")
            for reason in API_ERROR_REASONS:
                self.api_errors.labels(name, reason)
        for sink in sink_names:
            self.sink_errors.labels(sink)
            for reason in REJECTION_REASONS:
                self.events_rejected.labels(sink, reason)
            self.sink_up.labels(sink).set(1)
        for family, rate in budget_rates.items():
            self.budget_rate.labels(family).set(rate)


@dataclass
class Health:
    """What the probes report; every loop updates it, the HTTP threads read it."""

    sources: dict[str, float] = field(default_factory=dict)  # name -> poll interval
    clock: Callable[[], float] = time.time
    _heartbeat: dict[str, float] = field(default_factory=dict)
    _progress: dict[str, float] = field(default_factory=dict)
    _sinks_down: set[str] = field(default_factory=set)
    _blocked: dict[str, str] = field(default_factory=dict)  # source -> why (a bounded reason)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def beat(self, source: str) -> None:
        """The source's loop is running."""
        with self._lock:
            self._heartbeat[source] = self.clock()

    def progressed(self, source: str) -> None:
        """The source fetched a page or completed a poll."""
        with self._lock:
            now = self.clock()
            self._heartbeat[source] = now
            self._progress[source] = now
            self._blocked.pop(source, None)

    def blocked(self, source: str, reason: str) -> None:
        """Graph refused the source in a way only an administrator fixes (a 403): not ready
        until a page arrives again, however recently it last progressed."""
        with self._lock:
            self._blocked[source] = reason

    def sink_state(self, sink: str, up: bool) -> None:
        with self._lock:
            (self._sinks_down.discard if up else self._sinks_down.add)(sink)

    def alive(self) -> tuple[bool, str]:
        """Liveness: every loop beat within ten intervals (at least ten minutes)."""
        return self._check(self._heartbeat, lambda interval: max(10 * interval, 600.0), "stalled")

    def ready(self) -> tuple[bool, str]:
        """Readiness: every source progressed within three intervals (at least 30 s), sinks up."""
        with self._lock:
            down = sorted(self._sinks_down)
            blocked = sorted(self._blocked.items())
        if down:
            return False, f"sink down: {', '.join(down)}"
        if blocked:
            return False, "refused: " + ", ".join(f"{s} ({why})" for s, why in blocked)
        return self._check(self._progress, lambda interval: max(3 * interval, 30.0), "no progress")

    def _check(
        self, marks: dict[str, float], limit: Callable[[float], float], what: str
    ) -> tuple[bool, str]:
        now = self.clock()
        with self._lock:
            late = [
                name
                for name, interval in self.sources.items()
                if now - marks.get(name, float("-inf")) > limit(interval)
            ]
        return (False, f"{what}: {', '.join(late)}") if late else (True, "ok")


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds are not worth a log line each."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_app(registry: CollectorRegistry, health: Health) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: ``/metrics`` from the registry, ``/healthz`` and ``/readyz`` from ``health``."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/readyz"):
            ok, detail = health.alive() if path == "/healthz" else health.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{detail}\n".encode()]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"see /metrics, /healthz, /readyz\n"]

    return app


def start_http_server(
    listen: tuple[str, int], registry: CollectorRegistry, health: Health
) -> tuple[WSGIServer, threading.Thread]:
    """Serve the metrics app on ``listen`` in a daemon thread; ``server.shutdown()`` stops it."""
    host, port = listen
    server = make_server(
        host, port, make_app(registry, health), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread

"""``siem-exporter demo``: the whole pipeline on a laptop, checked against the ground truth.

It starts the simulated tenant (HTTPS with a throwaway CA, token endpoint, Graph with late
and out-of-order events and a request budget of ``BUDGET_REQUESTS`` per 10 s), the real
collector against it, and an embedded syslog receiver standing in for the SIEM. The
collector reads interactive sign-ins from v1.0, the non-interactive and service principal
ones from beta (five and one times the interactive volume, as in a real tenant), the
directory audits, and Exchange's audit records from the Office 365 Management Activity API
(content blobs listed late, records in no order and some in two blobs). At the end it
freezes the tenant, lets every source finish one more complete poll, and compares what the
SIEM received with what the tenant made visible, per source: missing and duplicated events
(Office 365 records by their ``Id``, visible once the first blob holding them was
listable), and the late arrivals that a plain non-overlapping window would have lost.
"""

from __future__ import annotations

import json
import math
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from prometheus_client import CollectorRegistry

from exporter.components import COMPONENTS
from exporter.config import Config, parse_config
from exporter.logs import configure_logging
from exporter.management_query import MANAGEMENT_API
from exporter.service import Exporter
from exporter.sim import SCENARIOS, SimulatedTenant
from exporter.yamlconf import format_duration, parse_listen

SCENARIO = "demo"
POLL_INTERVAL = 5.0
LOOKBACK = "15m"
PROGRESS_EVERY = 5.0
# Three times Graph's 5 per 10 s, said so in the output. The demo squeezes a tenant into a
# minute: 20 minutes of history (every stream, non-interactive at five times the interactive
# rate) to read at start and polls every 5 s. Under the real budget a 30 s run delivered
# about a third of what it owed before the end (measured: 6,471 of 19,198); in steady state
# the same volumes (about 2 million sign-ins a day) fit Graph's budget many times over.
BUDGET_REQUESTS = 15


class DemoSource(NamedTuple):
    """A source of the demo's collector: the tenant stream it owes in full (a Graph stream,
    or a Management Activity content type), its keys, and the field holding an event's id."""

    stream: str
    keys: dict[str, Any]
    id_field: str = "id"

    @property
    def management(self) -> bool:
        return self.keys.get("api") == MANAGEMENT_API


SOURCES = {
    "signins": DemoSource("signIns", {"endpoint": "/v1.0/auditLogs/signIns"}),
    "noninteractive": DemoSource(
        "nonInteractiveUser", {"sign_in_event_types": ["nonInteractiveUser"]}
    ),
    "servicePrincipal": DemoSource(
        "servicePrincipal", {"sign_in_event_types": ["servicePrincipal"]}
    ),
    "directoryAudits": DemoSource(
        "directoryAudits", {"endpoint": "/v1.0/auditLogs/directoryAudits"}
    ),
    "o365-exchange": DemoSource(
        "Audit.Exchange", {"api": MANAGEMENT_API, "content_type": "Audit.Exchange"}, "Id"
    ),
}


class SiemReceiver:
    """A tiny SIEM: accepts TCP syslog with octet-counting framing and counts event ids."""

    def __init__(self) -> None:
        self.received: dict[str, Counter[str]] = {name: Counter() for name in SOURCES}
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, name="demo-siem", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while chunk := conn.recv(1 << 16):
                buffer += chunk
                while b" " in buffer:
                    length_text, _, rest = buffer.partition(b" ")
                    length = int(length_text)
                    if len(rest) < length:
                        break
                    self._record(rest[:length].decode("utf-8"))
                    buffer = rest[length:]

    def _record(self, message: str) -> None:
        header = message.split(" ", 7)
        msgid, msg = header[5], header[7]
        with self._lock:
            if msgid in self.received:
                self.received[msgid][json.loads(msg)[SOURCES[msgid].id_field]] += 1
            else:
                self.warnings.append(msg)

    def delivered(self) -> dict[str, Counter[str]]:
        with self._lock:
            return {name: Counter(ids) for name, ids in self.received.items()}

    def close(self) -> None:
        self._server.close()


@dataclass
class Summary:
    """The demo's verdict, computed from the tenant's ground truth."""

    generated: int = 0
    delivered: int = 0
    missing: int = 0
    duplicates: int = 0
    late_caught: int = 0
    deepest_late: float = 0.0
    naive_missed: int = 0
    max_drift: float = 0.0
    per_source: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicates == 0


def naive_window_misses(event_time: float, available_at: float, start: float, step: float) -> bool:
    """Would non-overlapping windows [t - step, t), queried at each t = start + k*step, miss it?"""
    window_end = start + (int((event_time - start) // step) + 1) * step
    return available_at > window_end


def management_truth(records: list[dict[str, Any]], frozen_at: float) -> list[dict[str, Any]]:
    """The simulated Management Activity feed's records in the shape of Graph's truth.

    A record is owed once the first blob holding it was listable (a copy in a later blob
    does not make it owed later); one whose blobs never were, by the feed's freeze at
    ``frozen_at`` or at all, was never visible.
    """
    return [
        {
            "id": record["Id"],
            "event_time": record["creation_time"],
            "available_at": min(
                (
                    b["listable_at"]
                    for b in record["blobs"]
                    if b["exists"] and b["listable_at"] <= frozen_at
                ),
                default=math.inf,
            ),
        }
        for record in records
    ]


def summarise(
    truth: dict[str, list[dict[str, Any]]],
    delivered: dict[str, Counter[str]],
    started: float,
    frozen_at: float,
    lookback: float,
) -> Summary:
    """Compare deliveries with every event the collector could and should have seen."""
    summary = Summary()
    for source, events in truth.items():
        received = delivered[source]
        expected = [
            e
            for e in events
            if e["available_at"] <= frozen_at
            and (e["event_time"] >= started - lookback or e["available_at"] > started)
        ]
        expected_ids = {e["id"] for e in expected}
        missing = len(expected_ids - set(received))
        duplicates = sum(count - 1 for count in received.values() if count > 1)
        for e in expected:
            if e["id"] not in received or e["available_at"] <= started:
                continue
            late = e["available_at"] - e["event_time"]
            if late > POLL_INTERVAL:
                summary.late_caught += 1
                summary.deepest_late = max(summary.deepest_late, late)
            # A window on event time is no design for a feed listed by contentCreated.
            if source in SOURCES and SOURCES[source].management:
                continue
            if naive_window_misses(e["event_time"], e["available_at"], started, POLL_INTERVAL):
                summary.naive_missed += 1
        delivered_ids = expected_ids & set(received)
        summary.generated += len(expected_ids)
        summary.delivered += len(delivered_ids)
        summary.missing += missing
        summary.duplicates += duplicates
        summary.per_source[source] = (len(expected_ids), len(delivered_ids), missing, duplicates)
    return summary


def demo_config(tenant: SimulatedTenant, siem_port: int, state_dir: Path, listen: str) -> Config:
    """The config a user would write for this tenant, with the demo's budget (BUDGET_REQUESTS)."""
    document = {
        "tenant_id": tenant.tenant_guid,  # the Management Activity API needs the GUID
        "client_id": tenant.client_id,
        "client_secret": tenant.client_secret,
        "authority_host": tenant.base_url,
        "graph_url": tenant.base_url,
        "management_url": tenant.base_url,
        "ca_bundle": str(tenant.ca_file),
        "sources": [
            {
                "name": name,
                **source.keys,
                "poll_interval": format_duration(POLL_INTERVAL),
                "lookback": LOOKBACK,
                "max_lookback": "1d",
            }
            for name, source in SOURCES.items()
        ],
        "state": {"path": str(state_dir / "state.db")},
        "sinks": [{"type": "syslog", "host": "127.0.0.1", "port": siem_port, "protocol": "tcp"}],
        "metrics": {"listen": listen},
        "budget": {"requests": BUDGET_REQUESTS, "per": "10s"},
        "log_level": "warning",
    }
    return parse_config(document, {}, COMPONENTS)


def _sum_samples(registry: CollectorRegistry, name: str, labels: Sequence[dict[str, str]]) -> float:
    return sum(registry.get_sample_value(name, label) or 0.0 for label in labels)


def run_demo(duration: float, metrics_listen: str, out: TextIO | None = None) -> int:
    """Run the demo for ``duration`` seconds (or until Ctrl-C).

    0 when nothing was lost or duplicated.
    """
    import sys

    out = out or sys.stdout
    parse_listen(metrics_listen)
    configure_logging("warning", sys.stderr)
    with tempfile.TemporaryDirectory(prefix="siem-exporter-demo-") as workdir:
        tenant = SimulatedTenant(SCENARIOS[SCENARIO], Path(workdir))
        tenant.start()
        tenant.set_faults(budget=[BUDGET_REQUESTS, 10.0])
        siem = SiemReceiver()
        config = demo_config(tenant, siem.port, Path(workdir), metrics_listen)
        registry = CollectorRegistry()
        exporter = Exporter(config, registry)
        started = time.time()
        exporter.start()
        print(
            f"simulated tenant  {tenant.base_url} (scenario {SCENARIO}: late and out-of-order "
            f"events up to {format_duration(SCENARIOS[SCENARIO].max_lateness)} late)",
            file=out,
        )
        print(
            f"metrics           http://{config.metrics_listen[0]}:{exporter.metrics_port}/metrics",
            file=out,
        )
        print(
            f"Office 365        {tenant.base_url}/api/v1.0/{tenant.tenant_guid}/activity/feed "
            "(Management Activity API: blobs listed late, records in several blobs)",
            file=out,
        )
        print(f"SIEM (syslog)     tcp://127.0.0.1:{siem.port}", file=out)
        print(
            f"request budget    {BUDGET_REQUESTS} per 10 s (Graph allows 5: the demo compresses "
            "time, see exporter/demo.py)",
            file=out,
        )
        max_drift = 0.0
        try:
            max_drift = _progress(exporter, registry, started, duration, out)
        except KeyboardInterrupt:
            print("interrupted: finishing up", file=out)
        feed_frozen_at = tenant.management.freeze()
        frozen_at = tenant.freeze()  # after the feed's: the final polls start after both
        _wait_for_final_poll(exporter, frozen_at)
        exporter.shutdown()
        truth = {
            name: management_truth(tenant.management.truth(source.stream), feed_frozen_at)
            if source.management
            else tenant.truth(source.stream)
            for name, source in SOURCES.items()
        }
        summary = summarise(truth, siem.delivered(), started, frozen_at, 15 * 60.0)
        summary.max_drift = max_drift
        stats = tenant.stats()
        stats["management_requests"] = sum(tenant.management.stats()["requests"].values())
        siem.close()
        tenant.stop()
    _print_summary(summary, stats, registry, out)
    return 0 if summary.ok else 1


def _progress(
    exporter: Exporter, registry: CollectorRegistry, started: float, duration: float, out: TextIO
) -> float:
    """Print a progress line every few seconds until ``duration``; returns the largest drift."""
    sources = [{"source": name} for name in SOURCES]
    max_drift = 0.0
    while time.time() - started < duration:
        time.sleep(min(PROGRESS_EVERY, max(0.0, duration - (time.time() - started))))
        sent = _sum_samples(
            registry,
            "siem_exporter_events_sent_total",
            [{"source": s, "sink": "syslog"} for s in SOURCES],
        )
        duplicates = _sum_samples(registry, "siem_exporter_duplicates_suppressed_total", sources)
        drift = max(
            registry.get_sample_value("siem_exporter_api_drift_seconds", s) or 0.0 for s in sources
        )
        lookback = max(
            registry.get_sample_value("siem_exporter_query_window_seconds", s) or 0.0
            for s in sources
        )
        throttled = _sum_samples(
            registry,
            "siem_exporter_throttle_retries_total",
            [{"source": s, "code": c} for s in SOURCES for c in ("429", "503", "504", "AF429")],
        )
        waited = _sum_samples(registry, "siem_exporter_budget_wait_seconds_total", sources)
        max_drift = max(max_drift, drift)
        print(
            f"[{time.time() - started:5.0f}s] delivered {sent:7.0f}  duplicates suppressed "
            f"{duplicates:8.0f}  drift {drift:6.1f}s  window {lookback / 60:5.1f}m  "
            f"throttle retries {throttled:3.0f}  budget waits {waited:6.1f}s",
            file=out,
            flush=True,
        )
    return max_drift


def _wait_for_final_poll(exporter: Exporter, frozen_at: float, timeout: float = 120.0) -> None:
    """Every source completes one query that started after the freeze."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all((loop.schedule.last_complete or 0.0) > frozen_at for loop in exporter.loops):
            return
        time.sleep(0.2)


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _print_summary(
    summary: Summary, stats: dict[str, Any], registry: CollectorRegistry, out: TextIO
) -> None:
    requests = sum(sum(codes.values()) for codes in stats["requests"].values())
    lines = [
        "",
        "summary (checked against the simulated tenant's ground truth)",
        f"  generated and visible      {summary.generated}",
        f"  delivered to the SIEM      {summary.delivered}",
        f"  missing                    {summary.missing}",
        f"  duplicates                 {summary.duplicates}",
        f"  late arrivals caught       {summary.late_caught} more than one poll interval late, "
        f"the deepest {_minutes(summary.deepest_late)} late",
        f"  non-overlapping {format_duration(POLL_INTERVAL)} windows would have lost "
        f"{summary.naive_missed} events",
        f"  max API drift              {summary.max_drift:.1f}s",
        f"  API requests               {requests} (throttled by the tenant: {stats['throttled']}), "
        f"Management Activity API {stats['management_requests']}",
    ]
    for source, (generated, delivered, missing, duplicates) in summary.per_source.items():
        lines.append(
            f"  {source:26} generated {generated}, delivered {delivered}, "
            f"missing {missing}, duplicates {duplicates}"
        )
    lines.append("OK: nothing lost, nothing duplicated" if summary.ok else "FAILED")
    print("\n".join(lines), file=out, flush=True)

"""End to end, every sign-in stream: ``siem-exporter run`` reads interactive sign-ins from
v1.0 and the non-interactive, service principal and managed identity ones from beta (one
source selecting two types at once) against ``siem-exporter simulate`` over HTTPS, into a
real rsyslogd.

Beta serves the selected streams merged into one result set; each source must get every
event of exactly its streams, once. The "test" scenario makes non-interactive sign-ins five
times as frequent as interactive ones, as Microsoft reports for real tenants.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    owed_ids,
    received_ids,
    start_collector,
    wait_for_polls_after,
)

LOOKBACK = 180.0  # the "test" scenario's events are at most 90 s late
# Each source: its own keys, and the simulator's streams it owes.
SOURCES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "signins": ({"endpoint": "/v1.0/auditLogs/signIns"}, ("interactiveUser",)),
    "noninteractive": (
        {"sign_in_event_types": ["nonInteractiveUser"]},
        ("nonInteractiveUser",),
    ),
    "serviceprincipal": ({"sign_in_event_types": ["servicePrincipal"]}, ("servicePrincipal",)),
    "workloads": (
        {"sign_in_event_types": ["servicePrincipal", "managedIdentity"]},
        ("servicePrincipal", "managedIdentity"),
    ),
}


def test_every_sign_in_stream_arrives_exactly_once_per_source(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            sources=("signins",),
            page_size=500,
        )
        template = {k: v for k, v in config["sources"][0].items() if k != "endpoint"}
        config["sources"] = [
            {**template, "name": name, **keys} for name, (keys, _) in SOURCES.items()
        ]
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            started = time.time()
            time.sleep(20)  # events turn up to 90 s late: some become visible meanwhile
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, SOURCES, frozen_at, timeout=90)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        delivered = received_ids(receiver, SOURCES)

    truth = {
        stream: sim.truth(stream)
        for stream in {s for _, streams in SOURCES.values() for s in streams}
    }
    for source, (_, streams) in SOURCES.items():
        events = [e for stream in streams for e in truth[stream]]
        expected = owed_ids(events, started, frozen_at, LOOKBACK)
        assert len(expected) > 100, f"the simulator made few {source} events visible"
        got = delivered[source]
        missing = expected - set(got)
        assert not missing, f"{len(missing)} of {len(expected)} {source} events never arrived"
        duplicated = {i: n for i, n in got.items() if n > 1}
        assert not duplicated, f"{source} events delivered twice: {list(duplicated)[:5]}"
        foreign = set(got) - {e["id"] for e in events}
        assert not foreign, f"{source} got {len(foreign)} events of streams it did not select"
        for stream in streams:
            ids = {e["id"] for e in truth[stream]}
            assert ids & set(got), f"{source} got nothing of {stream}"
        sent = metric_value(
            metrics, "siem_exporter_events_sent_total", source=source, sink="syslog"
        )
        assert sent == sum(got.values())
    assert len(delivered["noninteractive"]) > 3 * len(delivered["signins"])

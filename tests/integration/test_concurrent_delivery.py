"""Several sources sharing one sink connection, at production batch sizes, into a real rsyslogd.

Every source runs in its own thread and hands its pages to the one :class:`Delivery`; a sink
has one connection. A page of 1000 sign-ins of about 11.5 KB is a 12 MB write that the kernel
takes in many pieces, so two sources writing at once interleave their bytes unless the
connection has one writer at a time. The receiver then parses garbage that no sender ever
hears about, and the ledger would record those events as delivered.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.clock import RealClock
from exporter.deadletter import DeadLetters
from exporter.delivery import Delivery
from exporter.graph import key_events
from exporter.metrics import ExporterMetrics, Health
from exporter.sim.objects import tenant_scale_signin
from exporter.sim.timeline import TICKS_PER_SECOND
from exporter.syslog import FACILITIES
from exporter.syslog_sink import SyslogSettings, SyslogSink
from tests.rsyslog import RsyslogReceiver

SOURCES = ("signins", "noninteractive", "serviceprincipal")
PAGE_SIZE = 1000
PAGES_PER_SOURCE = 2
FIRST_TICKS = 1_700_000_000 * TICKS_PER_SECOND


def source_pages(number: int) -> list[list[dict[str, Any]]]:
    """A source's pages of tenant-scale sign-ins, ids distinct across sources."""
    seed = 100 + number
    return [
        [
            tenant_scale_signin(seed, page * PAGE_SIZE + i, FIRST_TICKS + i * 10_000)
            for i in range(PAGE_SIZE)
        ]
        for page in range(PAGES_PER_SOURCE)
    ]


def settled_messages(receiver: RsyslogReceiver, expected: int) -> list[tuple[str, str]]:
    """What the receiver holds once it reached ``expected`` or stopped growing for 3 s."""
    deadline = time.monotonic() + 120
    last, quiet_since = -1, time.monotonic()
    while True:
        received = receiver.messages()
        if len(received) >= expected:
            time.sleep(0.5)
            return receiver.messages()
        if len(received) != last:
            last, quiet_since = len(received), time.monotonic()
        elif time.monotonic() - quiet_since > 3 or time.monotonic() > deadline:
            return received
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_concurrent_sources_never_interleave_on_a_shared_connection(
    protocol: str, tmp_path: Path
) -> None:
    pages = {source: source_pages(n) for n, source in enumerate(SOURCES)}
    originals = {
        (source, event["id"]): event
        for source, source_pages_ in pages.items()
        for page in source_pages_
        for event in page
    }
    event_bytes = sum(len(json.dumps(e)) for e in originals.values()) / len(originals)
    assert event_bytes > 10_000, "the point is production-sized events"

    with RsyslogReceiver(protocol="tcp", tls=protocol == "tls") as receiver:
        sink = SyslogSink(
            "siem",
            SyslogSettings(
                host=receiver.host,
                port=receiver.port,
                protocol=protocol,
                framing="octet-counting",
                ca_file=str(receiver.ca_file) if receiver.ca_file else None,
                facility=FACILITIES["local0"],
                hostname="collector-1",
            ),
        )
        stop = threading.Event()
        registry = CollectorRegistry()
        metrics = ExporterMetrics(registry)
        delivery = Delivery(
            [sink],
            metrics,
            Health(),
            RealClock(stop),
            DeadLetters(tmp_path / "dead.jsonl", 1 << 20),
        )
        start = threading.Barrier(len(SOURCES))
        outcomes: dict[str, list[bool]] = {source: [] for source in SOURCES}

        def run_source(source: str) -> None:
            start.wait()
            for page in pages[source]:
                batch = key_events(page, "createdDateTime")
                delivery.send(source, batch)
                outcomes[source].append(True)

        threads = [threading.Thread(target=run_source, args=(s,)) for s in SOURCES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        stop.set()
        delivery.close()
        assert all(outcomes[s] == [True] * PAGES_PER_SOURCE for s in SOURCES), outcomes

        received = settled_messages(receiver, len(originals))

    arrivals: Counter[tuple[str, str]] = Counter()
    garbage = []
    for msgid, msg in received:
        try:
            event = json.loads(msg)
        except ValueError:
            garbage.append(msg[:80])
            continue
        key = (msgid, event.get("id"))
        if originals.get(key) != event:
            garbage.append(msg[:80])
            continue
        arrivals[key] += 1
    assert garbage == [], f"{len(garbage)} received messages are not an event as sent"
    assert set(arrivals) == set(originals)
    assert max(arrivals.values()) == 1
    sent = {
        source: registry.get_sample_value(
            "siem_exporter_events_sent_total", {"source": source, "sink": "siem"}
        )
        for source in SOURCES
    }
    assert sent == dict.fromkeys(SOURCES, PAGE_SIZE * PAGES_PER_SOURCE)

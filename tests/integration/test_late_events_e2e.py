"""End to end: events hours late reach the SIEM seconds after they become visible.

The real collector runs against the simulated tenant's "late" scenario (a quarter of the
events turn up 40 minutes to 2.5 hours late) and delivers into a real rsyslogd. The fresh
window is a minute long and the nearest guarantee sweep is hours away, so only the rescans
of spare budget can find these events promptly: each must arrive within a few poll
intervals of becoming visible.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    collector_config,
    free_port,
    metric_value,
    start_collector,
    start_sim,
)

POLL_INTERVAL = 2.0
RUN = 60.0
PROMPT = 10 * POLL_INTERVAL  # "a few poll intervals", with the budget shared by two sources


def test_events_hours_late_are_delivered_within_a_few_poll_intervals(tmp_path: Path) -> None:
    first_seen: dict[str, float] = {}
    with start_sim(tmp_path, scenario="late") as sim, RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="1m",
            poll_interval="2s",
            max_lookback="4h",
            page_size=1000,
        )
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready(timeout=120)
            started = time.time()
            read = 0
            while time.time() < started + RUN + PROMPT:
                messages = receiver.messages()
                now = time.time()
                for msgid, msg in messages[read:]:
                    if msgid == "signins":
                        first_seen.setdefault(json.loads(msg)["id"], now)
                read = len(messages)
                time.sleep(0.5)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        truth = sim.truth("signins")

    late = [
        e
        for e in truth
        if started + POLL_INTERVAL < e["available_at"] <= started + RUN
        and e["available_at"] - e["event_time"] >= 40 * 60
    ]
    assert len(late) >= 5, "the run saw events hours late become visible"
    missing = [e["id"] for e in late if e["id"] not in first_seen]
    assert not missing, f"{len(missing)} of {len(late)} events hours late never arrived"
    waits = sorted(first_seen[e["id"]] - e["available_at"] for e in late)
    assert waits[-1] <= PROMPT, (
        f"events hours late waited up to {waits[-1]:.0f} s after becoming visible "
        f"(median {waits[len(waits) // 2]:.0f} s)"
    )
    history = [e["id"] for e in truth if e["available_at"] < started - POLL_INTERVAL]
    assert history, "the tenant had events before the collector started"
    unread = [i for i in history if i not in first_seen]
    assert not unread, f"{len(unread)} of {len(history)} events from before the start not read"
    found_late = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("siem_exporter_late_events_found_total{") and 'source="signins"' in line
    )
    # Every one of them was found by a rescan or a sweep (the fresh window is a minute long),
    # after every tier had read its stretch once: each counts, whichever band found it.
    assert found_late >= len(late), f"{found_late:.0f} counted as found late of {len(late)}"
    wait = metric_value(metrics, "siem_exporter_late_event_max_wait_seconds", source="signins")
    assert 0 < wait <= PROMPT, "the plan says late events are found promptly"

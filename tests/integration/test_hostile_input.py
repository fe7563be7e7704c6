"""Hostile API output, end to end: the simulator serves it, a real rsyslogd receives it.

The simulated tenant serves injected objects verbatim (no id, 100 KB, every awkward
character JSON can carry, a time field that is not a time) while some of its pages come
back as HTTP 200 with a truncated body. Whatever the API sent, the SIEM must receive each
object exactly once, as one line of JSON equal to what was served, and the collector must
count what it saw and keep running.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    start_collector,
    wait_until,
)

AWKWARD = (
    'line\nbreak\r\n tab\t quote" backslash\\ slash/ nul\x00 bell\x07 esc\x1b[31m '
    "del\x7f nel\x85 lsep\u2028 psep\u2029 bom\ufeff rtl\u202e Zürich 東京 emoji 😀🏳️‍🌈"
)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def hostile_objects() -> list[dict[str, Any]]:
    """One object per case, each tagged with ``hostile_case`` so it can be found in the SIEM."""
    created = now_iso()
    return [
        {"hostile_case": "no id", "createdDateTime": created, "detail": "keyed by content"},
        {"hostile_case": "no id, second", "createdDateTime": created, "detail": "another"},
        {"hostile_case": "null id", "id": None, "createdDateTime": created},
        {"hostile_case": "empty id", "id": "", "createdDateTime": created},
        {
            "hostile_case": "100 KB",
            "id": "hostile-100kb",
            "createdDateTime": created,
            "blob": "x" * 100_000,
        },
        {
            "hostile_case": "awkward characters",
            "id": "hostile-chars",
            "createdDateTime": created,
            AWKWARD: AWKWARD,
            "nested": {"list": [AWKWARD, None, True, 0, -1.5e300, 2**70], "": {}},
        },
        {"hostile_case": "time is not a time", "id": "hostile-time", "createdDateTime": "soon"},
        {"hostile_case": "no time field", "id": "hostile-no-time"},
        {
            "hostile_case": "forged syslog inside",
            "id": "<134>1 2020-01-01T00:00:00Z forged siem-exporter 1 signins - {}",
            "createdDateTime": created,
        },
        {"hostile_case": "non-GUID id", "id": "   id with spaces 😀 ", "createdDateTime": created},
        # JSON's "\ud800": a lone surrogate, which UTF-8 cannot hold, in the key's input.
        {"hostile_case": "lone surrogate, no id", "createdDateTime": created, "x": "\ud800"},
        {"hostile_case": "lone surrogate id", "id": "hostile-\udfff", "createdDateTime": created},
    ]


def inject(sim: SimProcess, objects: list[dict[str, Any]]) -> None:
    response = requests.post(
        f"{sim.base_url}/_sim/inject",
        params={"source": "signins"},
        json=objects,
        verify=sim.ca_file,
        timeout=30,
    )
    response.raise_for_status()


def hostile_received(receiver: RsyslogReceiver) -> list[tuple[str, dict[str, Any]]]:
    """Every received hostile message as (msgid, object); each MSG must be one JSON value."""
    found = []
    for msgid, msg in receiver.messages():
        event = json.loads(msg)
        if "hostile_case" in event:
            found.append((msgid, event))
    return found


def test_hostile_events_arrive_once_and_intact_through_truncated_pages(
    sim: SimProcess, tmp_path: Path
) -> None:
    objects = hostile_objects()
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            sources=("signins",),
        )
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            without_id_before = collector.metric(
                "siem_exporter_events_without_id_total", source="signins"
            )
            sim.set_faults(malformed_pages=3)
            inject(sim, objects)
            wait_until(lambda: len(hostile_received(receiver)) >= len(objects), timeout=90)
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_api_errors_total",
                        source="signins",
                        reason="malformed_page",
                    )
                    >= 3
                ),
                timeout=60,
            )
            # Several more polls over the same window: nothing may be sent again.
            polled = collector.metric(
                "siem_exporter_last_success_timestamp_seconds", source="signins"
            )
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_last_success_timestamp_seconds", source="signins"
                    )
                    > polled + 3
                ),
                timeout=60,
            )
            text = collector.metrics()
            assert collector.get("/healthz").status_code == 200
            assert collector.process.poll() is None, "the collector died on hostile input"
            assert collector.terminate() == 0
        raw_lines = receiver.messages()
        received = hostile_received(receiver)
        logs = collector.logs()

    by_case = Counter(event["hostile_case"] for _, event in received)
    assert by_case == Counter(o["hostile_case"] for o in objects), "lost or duplicated"
    expected = {o["hostile_case"]: o for o in objects}
    for msgid, event in received:
        assert msgid == "signins"
        assert event == expected[event["hostile_case"]], f"{event['hostile_case']} was altered"
    for _, msg in raw_lines:
        json.loads(msg)  # every line the SIEM got is one complete JSON value
    assert sim.stats()["faults"]["malformed_pages"] == 0, "the truncated pages were never served"
    assert (
        metric_value(
            text, "siem_exporter_api_errors_total", source="signins", reason="malformed_page"
        )
        >= 3
    )
    without_id = sum(1 for o in objects if not (isinstance(o.get("id"), str) and o["id"]))
    assert (
        metric_value(text, "siem_exporter_events_without_id_total", source="signins")
        - without_id_before
        == without_id
    )
    assert "Traceback" not in logs
    for line in logs.splitlines():
        json.loads(line)  # the collector's own log stays one JSON object a line

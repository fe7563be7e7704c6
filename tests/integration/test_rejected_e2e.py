"""A message that can never be delivered, end to end: counted, kept on disk, and the source flows.

The simulated tenant serves a sign-in of about 70 KB, larger than one UDP datagram can carry,
between ordinary ones; the collector sends to a real rsyslogd over UDP. The big event must not
block the source (retried for ever) nor vanish: it is in the dead-letter file beside the
ledger, whole, counted in ``events_rejected_total`` and the dead-letter gauge, and every
event served after it still reaches the SIEM.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from exporter.deadletter import dead_letter_path
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    start_collector,
    wait_until,
)

pytestmark = pytest.mark.slow


def sign_in(case: str, size: int = 0) -> dict[str, object]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"id": f"rejected-e2e-{case}", "createdDateTime": created, "blob": "x" * size}


def test_an_oversized_udp_message_goes_to_the_dead_letter_file_and_the_source_keeps_flowing(
    sim: SimProcess, tmp_path: Path
) -> None:
    big = sign_in("big", 70_000)
    before, after = sign_in("before"), sign_in("after")
    with RsyslogReceiver(protocol="udp") as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port(), lookback="3m"
        )
        config["sinks"][0]["protocol"] = "udp"
        config["sinks"][0]["name"] = "siem-udp"
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            sim._call("POST", "inject", params={"source": "signins"}, json=[before, big])
            sim._call("POST", "inject", params={"source": "signins"}, json=[after])

            def received() -> set[str]:
                return {json.loads(msg).get("id") for _, msg in receiver.messages()}

            wait_until(lambda: {before["id"], after["id"]} <= received(), timeout=90)
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_events_rejected_total", sink="siem-udp", reason="too_large"
                    )
                    == 1
                ),
                timeout=30,
            )
            assert collector.metric("siem_exporter_dead_letter_events") == 1
            assert collector.metric("siem_exporter_sink_errors_total", sink="siem-udp") == 0
            assert big["id"] not in received()
            assert collector.process.poll() is None
            assert collector.terminate() == 0

    letters = dead_letter_path(config["state"]["path"])
    lines = [json.loads(line) for line in letters.read_text(encoding="utf-8").splitlines()]
    assert [(x["id"], x["source"], x["sink"], x["reason"]) for x in lines] == [
        (big["id"], "signins", "siem-udp", "too_large")
    ]
    assert lines[0]["event"] == big, "the event is kept whole, as the API served it"
    logged = [json.loads(line) for line in collector.logs().splitlines() if line.startswith("{")]
    assert any(
        entry.get("id") == big["id"] and entry.get("reason") == "too_large" for entry in logged
    ), "the refusal is logged with the event's id"

"""Fault tests, end to end, on the SIEM side: an outage of the receiver, and TLS done right or not.

The SIEM is a real rsyslogd (``tests/rsyslog.py``), stopped and started on the same port
for the outage; the collector is ``siem-exporter run`` in its own process, the tenant is
``siem-exporter simulate``. What must have arrived comes from the simulator's ground truth.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from exporter.sim.ca import write_test_pki
from tests.integration.test_collector_e2e import metric_value
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    CollectorProcess,
    SimProcess,
    collector_config,
    free_port,
    start_collector,
    start_sim,
    wait_until,
)

SOURCES = ("signins", "directoryAudits")
LOOKBACK_SECONDS = 180.0
OUTAGE_SECONDS = 30.0


@pytest.fixture
def sim(tmp_path: Path) -> SimProcess:
    with start_sim(tmp_path, scenario="test") as process:
        yield process


def config_for(sim: SimProcess, tmp_path: Path, port: int, **sink: Any) -> dict[str, Any]:
    config = collector_config(
        sim, tmp_path, syslog_port=port, metrics_port=free_port(), lookback="3m"
    )
    config["sinks"][0].update(sink)
    return config


def metric(collector: CollectorProcess, name: str, **labels: str) -> float:
    """One sample from /metrics; 0 while the listener is not up."""
    response = collector.get("/metrics")
    return 0.0 if response is None else metric_value(response.text, name, **labels)


def readiness(collector: CollectorProcess) -> int | None:
    response = collector.get("/readyz")
    return None if response is None else response.status_code


def wait_for_complete_polls(collector: CollectorProcess, after: float, timeout: float) -> None:
    """Every source completes a poll that started after ``after`` (two completions past it)."""

    def completed_since(moment: float) -> bool:
        text = collector.metrics()
        return all(
            metric_value(text, "siem_exporter_last_success_timestamp_seconds", source=s) > moment
            for s in SOURCES
        )

    wait_until(lambda: completed_since(after), timeout)
    first = time.time()
    wait_until(lambda: completed_since(first), timeout)


def expected(sim: SimProcess, source: str, started: float, frozen_at: float) -> set[str]:
    """Ids the collector owes: visible by the freeze, inside its first window or newer."""
    return {
        e["id"]
        for e in sim.truth(source)
        if e["available_at"] <= frozen_at
        and (e["event_time"] >= started - LOOKBACK_SECONDS + 2 or e["available_at"] > started)
    }


def received(receiver: RsyslogReceiver) -> dict[str, Counter[str]]:
    ids: dict[str, Counter[str]] = {s: Counter() for s in SOURCES}
    for msgid, msg in receiver.messages():
        ids[msgid][json.loads(msg)["id"]] += 1
    return ids


def test_siem_outage_delays_events_and_neither_loses_nor_repeats_them(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver.port)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            before_outage = len(receiver.messages())
            receiver.stop()
            outage_began = time.monotonic()
            wait_until(lambda: readiness(collector) == 503, timeout=20)
            errors = metric(collector, "siem_exporter_sink_errors_total", sink="syslog")
            assert errors > 0
            assert metric(collector, "siem_exporter_sink_up", sink="syslog") == 0
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_began)))
            assert readiness(collector) == 503
            during_outage = len(receiver.messages())
            receiver.start()
            wait_until(lambda: readiness(collector) == 200, timeout=90)
            frozen_at = sim.freeze()
            wait_for_complete_polls(collector, frozen_at, timeout=90)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        delivered = received(receiver)

    assert during_outage == before_outage, "messages were written while rsyslogd was stopped"
    assert metric_value(metrics, "siem_exporter_sink_errors_total", sink="syslog") >= errors
    for source in SOURCES:
        owed = expected(sim, source, started, frozen_at)
        missing = owed - set(delivered[source])
        assert not missing, f"{len(missing)} of {len(owed)} {source} events lost in the outage"
        repeated = [i for i, n in delivered[source].items() if n > 1]
        assert not repeated, f"{source} events delivered twice around the outage: {repeated[:5]}"
        assert metric_value(
            metrics, "siem_exporter_events_sent_total", source=source, sink="syslog"
        ) == sum(delivered[source].values())


def test_tls_sink_with_the_siems_ca_delivers(sim: SimProcess, tmp_path: Path) -> None:
    with RsyslogReceiver(tls=True) as receiver:
        assert receiver.ca_file is not None
        config = config_for(
            sim, tmp_path, receiver.port, protocol="tls", ca_file=str(receiver.ca_file)
        )
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            arrived = receiver.wait_for(50, timeout=60)
            assert collector.terminate() == 0
    truth = {s: {e["id"] for e in sim.truth(s)} for s in SOURCES}
    for msgid, msg in arrived:
        assert json.loads(msg)["id"] in truth[msgid]


def test_tls_sink_with_a_wrong_ca_sends_nothing_and_says_why(
    sim: SimProcess, tmp_path: Path
) -> None:
    other_ca = write_test_pki(tmp_path / "other-pki").ca_file
    with RsyslogReceiver(tls=True) as receiver:
        config = config_for(sim, tmp_path, receiver.port, protocol="tls", ca_file=str(other_ca))
        with start_collector(config, tmp_path) as collector:
            wait_until(
                lambda: metric(collector, "siem_exporter_sink_errors_total", sink="syslog") >= 2,
                timeout=60,
            )
            assert readiness(collector) == 503
            assert metric(collector, "siem_exporter_events_sent_total", source="signins") == 0
            assert collector.terminate() == 0
        assert receiver.messages() == []
    logs = collector.logs()
    assert "TLS certificate verify failed" in logs
    assert f"127.0.0.1:{receiver.port}" in logs


class RawRecorder:
    """A plain TCP listener posing as a TLS SIEM: records every byte a client sends, answers none."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.connections: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                data = b""
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
                self.connections.append(data)

    def close(self) -> None:
        self.server.close()


def test_tls_sink_never_falls_back_to_cleartext(sim: SimProcess, tmp_path: Path) -> None:
    recorder = RawRecorder()
    try:
        config = config_for(sim, tmp_path, recorder.port, protocol="tls", ca_file=str(sim.ca_file))
        with start_collector(config, tmp_path) as collector:
            wait_until(
                lambda: metric(collector, "siem_exporter_sink_errors_total", sink="syslog") >= 2,
                timeout=60,
            )
            assert collector.terminate() == 0
    finally:
        recorder.close()
    assert len(recorder.connections) >= 2
    for data in recorder.connections:
        assert data.startswith(b"\x16\x03"), f"not a TLS handshake: {data[:40]!r}"
        assert b"siem-exporter" not in data and b"createdDateTime" not in data
    assert "TLS" in collector.logs()

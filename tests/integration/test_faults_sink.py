"""Fault tests, end to end, on the SIEM side: an outage of the receiver, and TLS done right or not.

The SIEM is a real rsyslogd (``tests/rsyslog.py``), stopped and started on the same port
for the outage; the collector is ``siem-exporter run`` in its own process, the tenant is
``siem-exporter simulate``. What must have arrived comes from the simulator's ground truth.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from exporter.sim.ca import write_test_pki
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    ConnectionRecorder,
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    no_batch_in_flight,
    owed_ids,
    received_ids,
    start_collector,
    wait_for_polls_after,
    wait_for_quiet_delivery,
    wait_until,
)

SOURCES = ("signins", "directoryAudits")
LOOKBACK_SECONDS = 180.0
OUTAGE_SECONDS = 30.0


def config_for(sim: SimProcess, tmp_path: Path, port: int, **sink: Any) -> dict[str, Any]:
    config = collector_config(
        sim, tmp_path, syslog_port=port, metrics_port=free_port(), lookback="3m"
    )
    config["sinks"][0].update(sink)
    return config


def test_siem_outage_delays_events_and_neither_loses_nor_repeats_them(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver.port)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            with no_batch_in_flight(sim, collector, {None: receiver}, SOURCES):
                receiver.stop()
            before_outage = len(receiver.messages())  # after the stop: it flushes on SIGTERM
            outage_began = time.monotonic()
            wait_until(lambda: collector.readiness() == 503, timeout=20)
            errors = collector.metric("siem_exporter_sink_errors_total", sink="syslog")
            assert errors > 0
            assert collector.metric("siem_exporter_sink_up", sink="syslog") == 0
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_began)))
            assert collector.readiness() == 503
            during_outage = len(receiver.messages())
            receiver.start()
            wait_until(lambda: collector.readiness() == 200, timeout=90)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, SOURCES, frozen_at, timeout=90)
            wait_for_quiet_delivery(collector, receiver, SOURCES)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        delivered = received_ids(receiver, SOURCES)

    assert during_outage == before_outage, "messages were written while rsyslogd was stopped"
    assert metric_value(metrics, "siem_exporter_sink_errors_total", sink="syslog") >= errors
    for source in SOURCES:
        owed = owed_ids(sim.truth(source), started, frozen_at, LOOKBACK_SECONDS)
        missing = owed - set(delivered[source])
        assert not missing, f"{len(missing)} of {len(owed)} {source} events lost in the outage"
        repeated = [i for i, n in delivered[source].items() if n > 1]
        assert not repeated, f"{source} events delivered twice around the outage: {repeated[:5]}"
        assert metric_value(
            metrics, "siem_exporter_events_sent_total", source=source, sink="syslog"
        ) == sum(delivered[source].values())


def test_two_sinks_each_get_every_event_once_while_one_of_them_is_down(
    sim: SimProcess, tmp_path: Path
) -> None:
    """A batch is delivered only once both SIEMs took it, and the one that took it first is
    not sent it again while the other is retrying."""
    with RsyslogReceiver() as primary, RsyslogReceiver() as secondary:
        config = config_for(sim, tmp_path, primary.port, name="primary")
        config["sinks"].append({**config["sinks"][0], "name": "secondary", "port": secondary.port})
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            with no_batch_in_flight(sim, collector, {"secondary": secondary}, SOURCES):
                secondary.stop()
            wait_until(
                lambda: collector.metric("siem_exporter_sink_errors_total", sink="secondary") >= 2,
                timeout=30,
            )
            assert collector.metric("siem_exporter_sink_errors_total", sink="primary") == 0
            secondary.start()
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, SOURCES, frozen_at, timeout=90)
            for name, receiver in (("primary", primary), ("secondary", secondary)):
                wait_for_quiet_delivery(collector, receiver, SOURCES, sink=name)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        delivered = {
            "primary": received_ids(primary, SOURCES),
            "secondary": received_ids(secondary, SOURCES),
        }

    for source in SOURCES:
        owed = owed_ids(sim.truth(source), started, frozen_at, LOOKBACK_SECONDS)
        for sink, received in delivered.items():
            missing = owed - set(received[source])
            assert not missing, f"{sink} lacks {len(missing)} of {len(owed)} {source} events"
            repeated = [i for i, n in received[source].items() if n > 1]
            assert not repeated, f"{sink} got {source} events twice: {repeated[:5]}"
            assert metric_value(
                metrics, "siem_exporter_events_sent_total", source=source, sink=sink
            ) == sum(received[source].values())


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
                lambda: collector.metric("siem_exporter_sink_errors_total", sink="syslog") >= 2,
                timeout=60,
            )
            assert collector.readiness() == 503
            assert collector.metric("siem_exporter_events_sent_total", source="signins") == 0
            assert collector.terminate() == 0
        assert receiver.messages() == []
    logs = collector.logs()
    assert "TLS certificate verify failed" in logs
    assert f"127.0.0.1:{receiver.port}" in logs


def test_tls_sink_never_falls_back_to_cleartext(sim: SimProcess, tmp_path: Path) -> None:
    recorder = ConnectionRecorder()
    try:
        config = config_for(sim, tmp_path, recorder.port, protocol="tls", ca_file=str(sim.ca_file))
        with start_collector(config, tmp_path) as collector:
            wait_until(
                lambda: collector.metric("siem_exporter_sink_errors_total", sink="syslog") >= 2,
                timeout=60,
            )
            assert collector.terminate() == 0
    finally:
        recorder.close()
    assert len(recorder.received) >= 2
    for data in recorder.received:
        assert data.startswith(b"\x16\x03"), f"not a TLS handshake: {data[:40]!r}"
        assert b"siem-exporter" not in data and b"createdDateTime" not in data
    assert "TLS" in collector.logs()

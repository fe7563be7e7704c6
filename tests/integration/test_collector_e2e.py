"""End to end: ``siem-exporter run`` against the simulated tenant over HTTPS, into a real rsyslogd.

Nothing on the path of an event is faked: MSAL gets a token from the simulator's token
endpoint, the Graph client pages through late and out-of-order events, and rsyslog writes
what it received to a file that the test reads back and compares with the ground truth.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    ConnectionRecorder,
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    owed_ids,
    received_ids,
    secret_env,
    start_collector,
    start_sim,
    wait_for_polls_after,
    wait_until,
)

CONTRACT_METRICS = (
    "siem_exporter_api_drift_seconds",
    "siem_exporter_event_arrival_lag_seconds_bucket",
    "siem_exporter_query_window_seconds",
    "siem_exporter_events_sent_total",
    "siem_exporter_duplicates_suppressed_total",
    "siem_exporter_empty_pages_total",
    "siem_exporter_throttle_retries_total",
    "siem_exporter_token_failures_total",
    "siem_exporter_api_requests_total",
    "siem_exporter_sink_errors_total",
    "siem_exporter_last_success_timestamp_seconds",
    "siem_exporter_cycle_duration_seconds_bucket",
    "siem_exporter_build_info",
)
SOURCES = ("signins", "directoryAudits")
LOOKBACK = 180.0  # the "test" scenario's events are at most 90 s late


def test_every_event_arrives_exactly_once_with_late_and_out_of_order_arrivals(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port(), lookback="3m"
        )
        del config["client_secret_file"]
        config["client_secret"] = "${GRAPH_CLIENT_SECRET}"
        with start_collector(config, tmp_path, env=secret_env(sim)) as collector:
            collector.wait_ready()
            started = time.time()
            time.sleep(25)  # long enough for events to turn up tens of seconds late
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, SOURCES, frozen_at)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        delivered = received_ids(receiver, SOURCES)
        raw_messages = receiver.messages()

    late_seen = 0
    for source in SOURCES:
        truth = sim.truth(source)
        expected = owed_ids(truth, started, frozen_at, LOOKBACK)
        late_seen += sum(
            1
            for e in truth
            if started < e["available_at"] <= frozen_at and e["available_at"] - e["event_time"] > 30
        )
        assert expected, f"the simulator made no {source} events visible"
        missing = expected - set(delivered[source])
        assert not missing, f"{len(missing)} of {len(expected)} {source} events never arrived"
        duplicated = {i: n for i, n in delivered[source].items() if n > 1}
        assert not duplicated, f"{source} events delivered twice: {list(duplicated)[:5]}"
        assert metric_value(
            metrics, "siem_exporter_events_sent_total", source=source, sink="syslog"
        ) == sum(delivered[source].values())
    assert late_seen > 0, "the run had no events more than 30 s late: the test proves nothing"
    assert all(json.loads(msg)["id"] for _, msg in raw_messages)
    assert metric_value(metrics, "siem_exporter_duplicates_suppressed_total", source="signins") > 0


def test_contract_metrics_and_probes_are_served(sim: SimProcess, tmp_path: Path) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port()
        )
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            text = collector.metrics()
            assert collector.get("/healthz").status_code == 200
            assert collector.get("/readyz").status_code == 200
            assert collector.terminate() == 0
    for name in CONTRACT_METRICS:
        assert f"\n{name}" in text, f"{name} missing from /metrics"
    assert metric_value(text, "siem_exporter_build_info", version="0.1.0") == 1
    assert metric_value(text, "siem_exporter_api_requests_total", source="signins", code="200") > 0
    assert metric_value(text, "siem_exporter_query_window_seconds", source="signins") >= 300


def test_foreign_next_link_is_refused_without_sending_the_token(
    sim: SimProcess, tmp_path: Path
) -> None:
    recorder = ConnectionRecorder()
    foreign = f"https://localhost:{recorder.port}/v1.0/auditLogs/signIns?$skiptoken=stolen"
    try:
        with RsyslogReceiver() as receiver:
            config = collector_config(
                sim,
                tmp_path,
                syslog_port=receiver.port,
                metrics_port=free_port(),
                sources=("signins",),
            )
            with start_collector(config, tmp_path) as collector:
                collector.wait_ready()
                sim.set_faults(foreign_next_link=3, foreign_next_link_url=foreign)
                wait_until(
                    lambda: (
                        collector.metric(
                            "siem_exporter_api_errors_total",
                            source="signins",
                            reason="foreign_next_link",
                        )
                        >= 3
                    ),
                    timeout=30,
                )
                assert collector.terminate() == 0
            logs = collector.logs()
    finally:
        recorder.close()
    assert recorder.received == [], "the collector connected to the foreign host"
    assert "refused without sending the token" in logs
    assert sim.client_secret not in logs


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text(
        "tenant_id: t\nclient_id: c\nclient_secret: s\n"
        "sources: [{name: signins, endpoint: /v1.0/auditLogs/signIns, lookback: 1x}]\n"
        "sinks: [{host: 127.0.0.1, port: 514}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "sources[0].lookback" in result.stderr


def test_second_collector_on_the_same_state_is_refused(sim: SimProcess, tmp_path: Path) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port()
        )
        with start_collector(config, tmp_path) as first:
            first.wait_ready()
            second_dir = tmp_path / "second"
            second_dir.mkdir()
            config["metrics"]["listen"] = f"127.0.0.1:{free_port()}"
            with start_collector(config, second_dir) as second:
                assert second.process.wait(timeout=30) == 1
                assert "in use by another siem-exporter" in second.logs()
            assert first.terminate() == 0


def test_unreachable_authority_is_counted_and_the_loop_survives(tmp_path: Path) -> None:
    """No token to be had (closed port): failures counted as network, not ready, still running."""
    with start_sim(tmp_path) as sim, RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port()
        )
        config["authority_host"] = f"https://127.0.0.1:{free_port()}"
        with start_collector(config, tmp_path) as collector:

            def network_failures() -> float:
                response = collector.get("/metrics")
                if response is None:
                    return 0.0
                return metric_value(
                    response.text, "siem_exporter_token_failures_total", reason="network"
                )

            wait_until(lambda: network_failures() >= 2, timeout=60)
            assert collector.process.poll() is None
            assert collector.get("/readyz").status_code == 503
            assert collector.terminate() == 0
        assert sim.client_secret not in collector.logs()


def fake_jwt(subject: str) -> str:
    """A well-formed, unsigned JWT: what a projected service-account token looks like."""

    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'sub': subject})}.c2lnbmF0dXJl"


def test_workload_identity_rereads_the_federated_token_file(
    sim: SimProcess, tmp_path: Path
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(fake_jwt("first"))
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            sources=("signins",),
        )
        for key in ("client_secret_file", "tenant_id", "client_id"):
            del config[key]
        config["workload_identity"] = True
        env = {
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_TENANT_ID": sim.tenant_id,
            "AZURE_CLIENT_ID": sim.client_id,
        }
        with start_collector(config, tmp_path, env=env) as collector:
            collector.wait_ready()
            assert sim.stats()["distinct_client_assertions"] == 1
            token_file.write_text(fake_jwt("rotated by kubelet"))
            sim.set_faults(revoke_tokens=True)
            wait_until(lambda: sim.stats()["distinct_client_assertions"] == 2, timeout=30)
            sent = collector.metric(
                "siem_exporter_events_sent_total",
                source="signins",
                sink="syslog",
            )
            assert sent > 0
            assert collector.terminate() == 0

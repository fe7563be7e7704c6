"""``verify --metrics-file``: a scheduled audit's result where Prometheus can read it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from exporter.components import COMPONENTS
from exporter.config import effective_config, parse_config
from exporter.verify_compare import ApiEvent, LateArrivals, SourceResult
from exporter.verify_metrics import VerifyResultFile, write_result


def samples(path: Path) -> dict[str, float]:
    """Every sample of a text file as Prometheus parses it, labels folded into the name."""
    values = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def result(source: str, in_api: int, missing: int, late: int | None = None) -> SourceResult:
    gone = tuple(ApiEvent(bytes(16), bytes(16), f"id-{n}", 0.0) for n in range(missing))
    arrivals = None if late is None else LateArrivals(late, 2, 60.0)
    return SourceResult(source, in_api, in_api, 0, in_api - missing, 0, gone, arrivals)


def test_the_file_holds_the_status_the_time_and_each_source_s_counts(tmp_path: Path) -> None:
    path = tmp_path / "verify.prom"
    results = [result("signins", 470, 9, late=31), result("directoryAudits", 80, 0)]
    assert write_result(path, 1, results, 1_767_225_600.0) == 1
    assert samples(path) == {
        "siem_exporter_verify_exit_status": 1,
        "siem_exporter_verify_last_run_timestamp_seconds": 1_767_225_600.0,
        'siem_exporter_verify_api_events{source="signins"}': 470,
        'siem_exporter_verify_api_events{source="directoryAudits"}': 80,
        'siem_exporter_verify_missing_events{source="signins"}': 9,
        'siem_exporter_verify_missing_events{source="directoryAudits"}': 0,
        'siem_exporter_verify_late_arrivals{source="signins"}': 31,  # no ledger: no series
    }
    assert [p.name for p in tmp_path.iterdir()] == ["verify.prom"]  # renamed into place


@pytest.mark.parametrize(("status", "reported"), [(0, 1), (1, 1), (2, 2)])
def test_a_result_that_cannot_be_written_never_reports_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, reported: int
) -> None:
    path = tmp_path / "absent" / "verify.prom"
    assert write_result(path, status, [], 0.0) == reported
    assert capsys.readouterr().err.startswith("siem-exporter: --metrics-file: cannot write ")


def test_a_bad_config_is_written_as_2(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("tenant_id: t\n")
    path = tmp_path / "verify.prom"
    command = ["verify", "--config", str(config), "--from", "2026-01-01", "--to", "2026-01-02"]
    assert main([*command, "--metrics-file", str(path)]) == 2
    assert samples(path) == {
        "siem_exporter_verify_exit_status": 2,
        "siem_exporter_verify_last_run_timestamp_seconds": pytest.approx(
            path.stat().st_mtime, abs=5
        ),
    }


def served(registry: CollectorRegistry) -> dict[str, float]:
    """What ``/metrics`` would serve from ``registry``, as :func:`samples` reads a file."""
    values = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def test_the_collector_serves_the_last_audit_s_file_at_each_scrape(tmp_path: Path) -> None:
    """The chart's CronJob writes the file onto the state volume; the collector's /metrics
    then carries it, so the scrape that watches the collector sees the audit too."""
    config = parse_config(
        {
            "tenant_id": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "s",
            "sources": [{"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}],
            "sinks": [{"type": "syslog", "host": "siem.example.com", "port": 6514}],
            "metrics": {"verify_file": str(tmp_path / "verify.prom")},
        },
        {},
        COMPONENTS,
    )
    assert config.metrics_verify_file == str(tmp_path / "verify.prom")
    assert effective_config(config, COMPONENTS)["metrics"]["verify_file"] == str(
        tmp_path / "verify.prom"
    )
    registry = CollectorRegistry()
    registry.register(VerifyResultFile(Path(config.metrics_verify_file)))
    assert served(registry) == {}  # no audit has run yet: nothing, and no error
    write_result(tmp_path / "verify.prom", 1, [result("signins", 470, 9)], 1_767_225_600.0)
    assert served(registry) == samples(tmp_path / "verify.prom")
    write_result(tmp_path / "verify.prom", 0, [result("signins", 480, 0)], 1_767_312_000.0)
    assert served(registry)["siem_exporter_verify_exit_status"] == 0  # re-read per scrape


def test_the_served_file_cannot_shadow_a_collector_metric_nor_break_a_scrape(
    tmp_path: Path,
) -> None:
    path = tmp_path / "verify.prom"
    path.write_text(
        "siem_exporter_events_sent_total 5\nsiem_exporter_verify_exit_status 0\nother 1\n"
    )
    registry = CollectorRegistry()
    registry.register(VerifyResultFile(path))
    assert served(registry) == {"siem_exporter_verify_exit_status": 0}
    path.write_text("not { prometheus text\n")
    assert served(registry) == {}

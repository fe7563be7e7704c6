"""``verify --metrics-file``: a scheduled audit's result where Prometheus can read it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli import main
from exporter.verify_compare import ApiEvent, SourceResult
from exporter.verify_metrics import write_result


def samples(path: Path) -> dict[str, float]:
    """Every sample of a text file as Prometheus parses it, labels folded into the name."""
    values = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def result(source: str, in_api: int, missing: int) -> SourceResult:
    gone = tuple(ApiEvent(bytes(16), bytes(16), f"id-{n}", 0.0) for n in range(missing))
    return SourceResult(source, in_api, in_api, 0, in_api - missing, 0, gone)


def test_the_file_holds_the_status_the_time_and_each_source_s_counts(tmp_path: Path) -> None:
    path = tmp_path / "verify.prom"
    results = [result("signins", 470, 9), result("directoryAudits", 80, 0)]
    assert write_result(path, 1, results, 1_767_225_600.0) == 1
    assert samples(path) == {
        "siem_exporter_verify_exit_status": 1,
        "siem_exporter_verify_last_run_timestamp_seconds": 1_767_225_600.0,
        'siem_exporter_verify_api_events{source="signins"}': 470,
        'siem_exporter_verify_api_events{source="directoryAudits"}': 80,
        'siem_exporter_verify_missing_events{source="signins"}': 9,
        'siem_exporter_verify_missing_events{source="directoryAudits"}': 0,
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

"""The Grafana dashboard and Grafana alert provisioning: structure, consistency, PromQL.

Grafana cannot run here, so these checks stand in for opening the dashboard: every panel
has a unit and uses the ``datasource`` variable, rates use ``$__rate_interval``, every
metric named exists in the exporter, the Grafana alerts agree with the Prometheus rules,
and every query parses (``promtool check rules``; the end-to-end test also runs them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter.management_activity import ManagementMetrics
from exporter.metrics import ExporterMetrics
from exporter.verify_compare import LateArrivals, SourceResult
from exporter.verify_metrics import result_registry
from tests.prometheus import (
    DASHBOARD_FILE,
    GRAFANA,
    GRAFANA_ALERTS_FILE,
    dashboard_expressions,
    dashboard_variable_metrics,
    grafana_alert_expressions,
    grafana_alert_rules,
    prometheus_rules,
    promtool,
    substitute_grafana_variables,
    write_as_recording_rules,
)


def _exposed_families() -> tuple[set[str], set[str]]:
    """Every metric family the exporter registers, read from a real registry, and its histograms
    (the Management Activity API's own only with such a source, but they are the exporter's)."""
    registry = CollectorRegistry()
    ExporterMetrics(registry)
    ManagementMetrics(registry)
    families = {m.name.removeprefix("siem_exporter_"): m.type for m in registry.collect()}
    # What a scheduled audit's file adds to /metrics (metrics.verify_file), every series of it.
    audit = SourceResult("s", 1, 1, 0, 1, 0, (), LateArrivals(0, 0, 60.0))
    audited = result_registry(0, [audit], 0.0).collect()
    families |= {m.name.removeprefix("siem_exporter_"): m.type for m in audited}
    names = {f"{name}_total" if kind == "counter" else name for name, kind in families.items()}
    return names, {name for name, kind in families.items() if kind == "histogram"}


KNOWN_METRICS, HISTOGRAMS = _exposed_families()
METRIC_NAME = re.compile(r"\bsiem_exporter_(\w+)")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _known(name: str) -> bool:
    if name in KNOWN_METRICS:
        return True
    base, _, suffix = name.rpartition("_")
    return base in HISTOGRAMS and suffix in ("bucket", "sum", "count")


def test_dashboard_has_a_stable_uid_and_the_two_variables() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "siem-exporter"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["source"]["datasource"] == {"type": "prometheus", "uid": "$datasource"}
    assert variables["source"]["includeAll"] and variables["source"]["multi"]


def test_every_panel_has_a_unit_a_description_and_the_datasource_variable() -> None:
    panels = _panels()
    assert len({p["id"] for p in _dashboard()["panels"]}) == len(_dashboard()["panels"])
    for panel in panels:
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel.get("description"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "$datasource"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_ranges_use_rate_interval() -> None:
    for where, expr in dashboard_expressions().items():
        for selector in re.findall(r"\[([^\]]+)\]", expr):
            assert selector == "$__rate_interval", f"{where}: [{selector}]"


def test_dashboard_covers_what_the_issue_asks_for() -> None:
    used = {m for expr in dashboard_expressions().values() for m in METRIC_NAME.findall(expr)}
    wanted = {
        "events_sent_total",
        "duplicates_suppressed_total",
        "api_drift_seconds",
        "query_window_seconds",
        "event_arrival_lag_seconds_bucket",
        "empty_pages_total",
        "throttle_retries_total",
        "token_failures_total",
        "api_requests_total",
        "budget_requests_per_second",
        "last_success_timestamp_seconds",
        "sink_errors_total",
        "build_info",
    }
    assert wanted <= used, wanted - used


def test_every_metric_named_anywhere_exists_in_the_exporter() -> None:
    sources = [
        *dashboard_expressions().values(),
        *dashboard_variable_metrics().values(),
        *grafana_alert_expressions().values(),
        *(rule["expr"] for rule in prometheus_rules()),
    ]
    unknown = {m for expr in sources for m in METRIC_NAME.findall(expr) if not _known(m)}
    assert not unknown


def test_grafana_variables_are_all_replaced() -> None:
    for where, expr in dashboard_expressions().items():
        assert "$" not in substitute_grafana_variables(expr), where
    with pytest.raises(KeyError):
        substitute_grafana_variables("rate(x[$unknown_variable])")


def test_grafana_alerts_cover_drift_and_tokens_and_agree_with_prometheus_rules() -> None:
    prometheus = {r["alert"]: r for r in prometheus_rules() if "alert" in r}
    grafana = grafana_alert_rules()
    titles = {rule["title"] for rule in grafana}
    assert {"SiemExporterApiDriftHigh", "SiemExporterTokenFailures"} <= titles
    assert len({rule["uid"] for rule in grafana}) == len(grafana)
    for rule in grafana:
        twin = prometheus[rule["title"]]
        assert rule["labels"]["severity"] == twin["labels"]["severity"], rule["title"]
        assert rule["annotations"]["runbook_url"] == twin["annotations"]["runbook_url"]
        assert rule["annotations"]["summary"] == twin["annotations"]["summary"]
        assert rule["for"] == twin["for"], rule["title"]
        ref_ids = {query["refId"] for query in rule["data"]}
        assert rule["condition"] in ref_ids, rule["title"]
        for query in rule["data"]:
            assert query["model"]["refId"] == query["refId"]


def _grafana_threshold(title: str) -> float:
    rule = next(r for r in grafana_alert_rules() if r["title"] == title)
    condition = next(q for q in rule["data"] if q["refId"] == rule["condition"])
    return float(condition["model"]["conditions"][0]["evaluator"]["params"][0])


def test_grafana_drift_threshold_is_the_recorded_share_of_the_window() -> None:
    recorded = next(
        r
        for r in prometheus_rules()
        if r.get("record") == "siem_exporter:api_drift_window_ratio:threshold"
    )
    share = float(re.fullmatch(r"vector\(([\d.]+)\)", recorded["expr"].strip()).group(1))
    assert _grafana_threshold("SiemExporterApiDriftHigh") == share


def test_dashboard_provisioning_points_a_file_provider_at_a_directory() -> None:
    document = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "siem-exporter.yaml").read_text(encoding="utf-8")
    )
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert yaml.safe_load(GRAFANA_ALERTS_FILE.read_text(encoding="utf-8"))["apiVersion"] == 1


def _check(expressions: dict[str, str], tmp_path: Path) -> tuple[int, str]:
    rules = write_as_recording_rules(expressions, tmp_path / "expressions.yaml")
    result = promtool("check", "rules", str(rules))
    return result.returncode, result.stdout + result.stderr


def test_every_dashboard_and_grafana_alert_query_parses(tmp_path: Path) -> None:
    expressions = {k: substitute_grafana_variables(v) for k, v in dashboard_expressions().items()}
    expressions |= dashboard_variable_metrics()
    expressions |= grafana_alert_expressions()
    code, output = _check(expressions, tmp_path)
    assert code == 0, output


def test_the_parse_check_rejects_broken_promql(tmp_path: Path) -> None:
    code, output = _check(
        {"broken": "sum by (source) (rate(siem_exporter_events_sent_total[1m])"}, tmp_path
    )
    assert code != 0
    assert "parse error" in output

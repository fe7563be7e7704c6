"""How one config is wired: which sources share a request budget, which do not.

Graph limits each family of endpoints on its own (identity and access reports: 5 per 10 s
per app and tenant; Identity Protection: 1 per second per tenant; security alerts: 150 per
minute), so a 429 of one family, and the backoff it calls for, must not hold the others.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.components import COMPONENTS
from exporter.config import parse_config
from exporter.graph import GraphClient
from exporter.service import Exporter


def test_sources_of_one_family_share_its_budget_and_no_other(tmp_path: Path) -> None:
    document = {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "c",
        "client_secret": "s",
        "sources": [
            {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"},
            {"name": "noninteractive", "sign_in_event_types": ["nonInteractiveUser"]},
            {"name": "risk", "endpoint": "/v1.0/identityProtection/riskDetections"},
            {"name": "riskyUsers", "endpoint": "/v1.0/identityProtection/riskyUsers"},
        ],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
        "state": {"path": str(tmp_path / "state.db")},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    registry = CollectorRegistry()
    exporter = Exporter(parse_config(document, {}, COMPONENTS), registry)
    try:
        budget = {
            loop.source.name: loop.api.budget
            for loop in exporter.loops
            if isinstance(loop.api, GraphClient)
        }
        assert len(budget) == len(exporter.loops)
        shares = {loop.source.name: loop.planner.shares for loop in exporter.loops}
        assert budget["signins"] is budget["noninteractive"]
        assert budget["risk"] is budget["riskyUsers"]
        assert budget["signins"] is not budget["risk"]
        assert (budget["signins"].requests, budget["signins"].per) == (5, 10.0)
        assert (budget["risk"].requests, budget["risk"].per) == (1, 1.0)
        assert shares["signins"] is shares["noninteractive"] is not shares["risk"]
        assert shares["risk"].sources == 2
        assert shares["risk"].rate == 0.9, "one request a second, less the 10% reserve"
        for family, rate in (("identity_reports", 0.5), ("identity_protection", 1.0)):
            gauge = "siem_exporter_budget_requests_per_second"
            assert registry.get_sample_value(gauge, {"family": family}) == rate
    finally:
        exporter.ledger.close()


def test_metrics_verify_file_puts_the_last_audit_on_the_collector_s_metrics(
    tmp_path: Path,
) -> None:
    """The chart's verify CronJob writes its result onto the state volume; the collector
    serves it with its own metrics (``metrics.verify_file``)."""
    (tmp_path / "verify.prom").write_text("siem_exporter_verify_exit_status 1\n")
    document = {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "c",
        "client_secret": "s",
        "sources": [{"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
        "state": {"path": str(tmp_path / "state.db")},
        "metrics": {"listen": "127.0.0.1:0", "verify_file": str(tmp_path / "verify.prom")},
    }
    registry = CollectorRegistry()
    exporter = Exporter(parse_config(document, {}, COMPONENTS), registry)
    try:
        assert registry.get_sample_value("siem_exporter_verify_exit_status") == 1
        assert (
            registry.get_sample_value(
                "siem_exporter_events_sent_total", {"source": "signins", "sink": "syslog"}
            )
            == 0
        )
    finally:
        exporter.ledger.close()

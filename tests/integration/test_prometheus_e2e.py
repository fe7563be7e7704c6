"""A real Prometheus scraping a real exporter against the simulated tenant.

This proves what promtool cannot: that the rules, the dashboard and the Grafana alerts
query series the exporter really exposes, with the labels it really puts on them, and
that faults injected through the simulator drive the matching alerts to pending or
firing in ``/api/v1/alerts``. The tests share one stack and run in file order: healthy
first, then a drift incident, then token failures.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from exporter.sim.objects import tenant_guid
from exporter.sim.scenario import SCENARIOS
from exporter.verify_compare import LateArrivals, SourceResult
from exporter.verify_metrics import write_result
from tests.prometheus import (
    RULES_FILE,
    PrometheusClient,
    PrometheusServer,
    find_binary,
    prometheus_rules,
    shipped_expressions,
    wait_until,
)
from tests.stack import (
    CollectorProcess,
    SimProcess,
    collector_config,
    free_port,
    secret_env,
    start_collector,
    start_sim,
)

pytestmark = pytest.mark.slow

# Metric and recorded-series names in an expression: siem_exporter_*, level:siem_exporter_*:op,
# siem_exporter:*, and Prometheus's own up{...}.
SELECTOR = re.compile(r"(?<![\w:])((?:[a-z_]+:)?siem_exporter[\w:]*|up(?=\{))")


class DiscardingSyslogServer(AbstractContextManager["DiscardingSyslogServer"]):
    """A TCP listener that accepts syslog connections and throws the bytes away.

    Used only when rsyslogd is not installed: this test is about metrics, so any sink
    that accepts events will do.
    """

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(connection,), daemon=True).start()

    @staticmethod
    def _drain(connection: socket.socket) -> None:
        with connection:
            while connection.recv(65536):
                pass

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._socket.close()


class SyslogSink(Protocol):
    """What the tests need of a syslog receiver: a port, and start/stop as a context."""

    @property
    def port(self) -> int: ...

    def __enter__(self) -> object: ...

    def __exit__(self, *exc_info: Any) -> Any: ...


def _syslog_receiver() -> SyslogSink:
    """rsyslogd when installed (the real SIEM stand-in), else a discarding TCP listener."""
    if shutil.which("rsyslogd") or Path("/usr/sbin/rsyslogd").exists():
        from tests.rsyslog import RsyslogReceiver

        return RsyslogReceiver()
    return DiscardingSyslogServer()


def _start_exporter(
    stack: ExitStack,
    sim: SimProcess,
    tmp_path: Path,
    *,
    lookback: str = "5m",
    max_lookback: str = "1d",
) -> CollectorProcess:
    """A syslog receiver and a collector polling every second, both closed with ``stack``."""
    receiver = _syslog_receiver()
    stack.enter_context(receiver)
    config = collector_config(
        sim,
        tmp_path,
        syslog_port=receiver.port,
        metrics_port=free_port(),
        lookback=lookback,
        max_lookback=max_lookback,
        poll_interval="1s",
    )
    # An Office 365 source beside Graph's, so the series its alerts watch exist too.
    config["tenant_id"] = tenant_guid(SCENARIOS["test"].seed)
    config["management_url"] = sim.base_url
    config["sources"].append(
        {
            "name": "o365-aad",
            "api": "management_activity",
            "content_type": "Audit.AzureActiveDirectory",
            "poll_interval": "1s",
            "lookback": "5m",
            "max_lookback": "5m",
        }
    )
    # A scheduled audit's result, as the chart's verify CronJob leaves it for the collector
    # to serve, so the dashboard's audit row has series too.
    audit = SourceResult("signins", 120, 120, 0, 120, 0, (), LateArrivals(9, 0, 1.0))
    write_result(tmp_path / "verify.prom", 0, [audit], time.time())
    config["metrics"]["verify_file"] = str(tmp_path / "verify.prom")
    return stack.enter_context(start_collector(config, tmp_path, env=secret_env(sim)))


def _scrape(collector: CollectorProcess) -> list[str]:
    return [collector.base_url.removeprefix("http://")]


@dataclass
class Stack:
    sim: SimProcess
    prometheus: PrometheusClient
    # The alerts active once the stack was up: taken before any test injects a fault, since
    # the tests share the stack and run in any order (an alert on increase() over 10 min
    # stays pending long after its fault was lifted).
    alerts_when_up: list[str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Simulator, syslog receiver, collector and Prometheus, up and scraping."""
    find_binary("prometheus")
    tmp_path = tmp_path_factory.mktemp("e2e")
    with ExitStack() as stack:
        sim = stack.enter_context(start_sim(tmp_path, scenario="test"))
        # A 60 s window that cannot widen, so an incident pushes drift past it in a minute.
        collector = _start_exporter(stack, sim, tmp_path, lookback="60s", max_lookback="60s")
        collector.wait_ready()
        server = stack.enter_context(
            PrometheusServer(
                _scrape(collector), rule_files=[RULES_FILE], workdir=tmp_path / "prometheus"
            )
        )
        client = server.client
        wait_until(
            lambda: [t for t in client.targets() if t["health"] == "up"],
            timeout=30,
            what="the exporter target to be up",
        )
        # Rules evaluated before the first scrape hold SiemExporterAbsent pending a moment.
        scraped = max(_instant(t["lastScrape"]) for t in client.targets())
        wait_until(
            lambda: all(_instant(g["lastEvaluation"]) > scraped for g in client.rule_groups()),
            timeout=30,
            what="the rules to be evaluated after the first scrape",
        )
        yield Stack(sim, client, [a["labels"]["alertname"] for a in client.alerts()])


def _instant(rfc3339: str) -> float:
    """Prometheus's nanosecond RFC 3339 time as epoch seconds (microseconds kept)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _data_flows(client: PrometheusClient) -> bool:
    """Events were delivered and observed inside the dashboard's 30 s rate window."""
    return bool(
        client.query("sum(increase(siem_exporter_event_arrival_lag_seconds_count[30s])) > 0")
        and client.query("sum(increase(siem_exporter_events_sent_total[30s])) > 0")
    )


def _without_data(client: PrometheusClient, expressions: dict[str, str]) -> list[str]:
    """The names of the expressions that still return nothing after a grace period.

    Rates need two scrapes and recorded series one more evaluation, so each expression
    gets a few seconds before it counts as empty.
    """
    empty = []
    for where, expr in expressions.items():
        try:
            client.wait_for_data(expr, timeout=15)
        except TimeoutError:
            empty.append(where)
    return empty


def test_every_shipped_query_returns_data(stack: Stack) -> None:
    client = stack.prometheus
    wait_until(lambda: _data_flows(client), timeout=90, what="events to flow")
    alerts = {f"rules: {rule['alert']}" for rule in prometheus_rules() if "alert" in rule}
    # A healthy stack must not fire the alerts: their parts are checked in the next test.
    expressions = {k: v for k, v in shipped_expressions().items() if k not in alerts}
    assert not _without_data(client, expressions)


def test_every_rule_evaluates_and_every_series_an_alert_watches_exists(stack: Stack) -> None:
    client = stack.prometheus
    rules = [rule for group in client.rule_groups() for rule in group["rules"]]
    assert len(rules) == len(prometheus_rules())
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not unhealthy
    watched = {
        f"{rule['alert']}: {name}": name
        for rule in prometheus_rules()
        if "alert" in rule
        for name in SELECTOR.findall(rule["expr"])
    }
    assert not _without_data(client, watched)


def test_healthy_stack_fires_no_alert(stack: Stack) -> None:
    assert not stack.alerts_when_up, stack.alerts_when_up


def test_drift_beyond_the_window_makes_the_drift_alerts_pending(stack: Stack) -> None:
    now = time.time()
    stack.sim.set_faults(incident=[now, now + 3600])  # nothing new becomes visible
    try:
        high = stack.prometheus.wait_for_alert("SiemExporterApiDriftHigh", timeout=150)
        assert high["labels"]["severity"] == "warning"
        assert high["labels"]["source"] in ("signins", "directoryAudits")
        assert high["annotations"]["runbook_url"].endswith("#siemexporterapidrifthigh")
        assert "of the query window" in high["annotations"]["description"]
        beyond = stack.prometheus.wait_for_alert("SiemExporterApiDriftExceedsWindow", timeout=90)
        assert beyond["labels"]["severity"] == "critical"
    finally:
        stack.sim.set_faults(incident=None)


def test_token_failures_make_the_token_alert_pending(stack: Stack) -> None:
    # Revoking the issued tokens makes Graph answer 401; the collector asks for a new
    # token, and the authority now refuses every request as an invalid client secret.
    stack.sim.set_faults(token_failures=1_000_000, revoke_tokens=True)
    try:
        alert = stack.prometheus.wait_for_alert("SiemExporterTokenFailures", timeout=60)
        assert alert["labels"]["reason"] == "invalid_client"
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"]["runbook_url"].endswith("#siemexportertokenfailures")
    finally:
        stack.sim.set_faults(token_failures=0)


def test_an_exporter_that_never_gets_a_token_raises_the_critical_alert(tmp_path: Path) -> None:
    find_binary("prometheus")
    with ExitStack() as stack:
        sim = stack.enter_context(start_sim(tmp_path, scenario="test"))
        sim.set_faults(token_failures=1_000_000)  # before the collector's first request
        collector = _start_exporter(stack, sim, tmp_path)
        server = stack.enter_context(PrometheusServer(_scrape(collector), rule_files=[RULES_FILE]))
        alert = server.client.wait_for_alert("SiemExporterNoValidToken", timeout=60)
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#siemexporternovalidtoken")
        assert not server.client.query("siem_exporter_last_token_success_timestamp_seconds > 0")

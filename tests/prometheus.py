"""A real Prometheus server on a loopback port, and the PromQL the project ships.

Rules, dashboards and Grafana alerts are only worth something if Prometheus accepts and
answers their queries, so tests run the Debian ``prometheus`` binary rather than a fake:
``PrometheusServer`` writes a scrape config for the given targets plus the given rule
files, starts the server with one-second scrape and evaluation intervals in a temporary
directory, and hands back a ``PrometheusClient`` over its HTTP API.

The second half extracts every PromQL expression from the shipped files (rules file,
dashboard JSON, Grafana alert provisioning) so the unit tests can parse them with
``promtool`` and the end-to-end test can evaluate them against live data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pytest
import requests
import yaml

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
GRAFANA = REPO / "grafana"
RULES_FILE = GRAFANA / "prometheus-rules.yaml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "siem-exporter.json"
GRAFANA_ALERTS_FILE = GRAFANA / "provisioning" / "alerting" / "siem-exporter.yaml"
RULE_TESTS_DIR = GRAFANA / "tests"

# Concrete stand-ins for Grafana's template variables, so its queries become plain PromQL.
GRAFANA_VARIABLES = {
    "source": ".*",
    "__rate_interval": "30s",
    "__interval": "15s",
    "__range": "5m",
}

T = TypeVar("T")


def find_binary(name: str) -> str:
    """Path of a Prometheus tool; skips when absent, but fails under CI where it must exist.

    CI installs the Debian package, so a missing binary there is a broken pipeline, not a
    reason to pass silently.
    """
    found = shutil.which(name)
    if found is None and os.access(f"/usr/bin/{name}", os.X_OK):
        found = f"/usr/bin/{name}"
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (apt-get install prometheus)")
        pytest.skip(f"{name} not installed (apt-get install prometheus)")
    return found


def free_port() -> int:
    """A TCP port on the loopback that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error (for example a PromQL parse error)."""


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` on timeout.

    Everything Prometheus does happens on its own one-second clock, so tests poll for an
    outcome instead of sleeping a guessed amount.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _http_get(
    url: str, params: dict[str, str] | None = None, timeout: float = 10.0
) -> requests.Response:
    """GET on the loopback, ignoring proxy and CA-bundle settings from the environment."""
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, params=params, timeout=timeout, verify=True)


@dataclass(frozen=True)
class PrometheusClient:
    """A small client for the parts of the Prometheus HTTP API the tests need."""

    base_url: str

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        body = _http_get(f"{self.base_url}{path}", params=params).json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (scalars come back as one sample)."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts, pending or firing, with their labels and annotations."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """Loaded rule groups with each rule's health and last evaluation error."""
        return list(self._get("/api/v1/rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their health."""
        return list(self._get("/api/v1/targets")["activeTargets"])

    def wait_for_data(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The first non-empty result of ``expr``."""
        return wait_until(lambda: self.query(expr), timeout=timeout, what=f"data for {expr}")

    def wait_for_alert(
        self, name: str, timeout: float = 60.0, states: Sequence[str] = ("pending", "firing")
    ) -> dict[str, Any]:
        """The first active alert called ``name`` in one of ``states``."""

        def probe() -> dict[str, Any] | None:
            for alert in self.alerts():
                if alert["labels"].get("alertname") == name and alert["state"] in states:
                    return alert
            return None

        return wait_until(probe, timeout=timeout, what=f"alert {name} in {list(states)}")


class PrometheusServer:
    """Context manager around one ``prometheus`` process scraping ``targets`` every second.

    The server's directory (config, TSDB, log) is a fresh temporary directory unless
    ``workdir`` is given; ``log()`` returns its output for failure messages.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        job: str = "siem-exporter",
        interval: str = "1s",
        workdir: Path | None = None,
    ) -> None:
        self._binary = find_binary("prometheus")
        self._dir = workdir or Path(tempfile.mkdtemp(prefix="prometheus-test-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._config = self._dir / "prometheus.yml"
        self._logfile = self._dir / "prometheus.log"
        self._config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "evaluation_interval": interval},
                    "rule_files": [str(Path(f).resolve()) for f in rule_files],
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                    ],
                }
            ),
            encoding="utf-8",
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.client = PrometheusClient("")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it reports ready; retries if the port was taken."""
        for _ in range(3):
            self.port = free_port()
            self.client = PrometheusClient(f"http://{HOST}:{self.port}")
            with open(self._logfile, "ab") as log:
                self._process = subprocess.Popen(
                    [
                        self._binary,
                        f"--config.file={self._config}",
                        f"--storage.tsdb.path={self._dir / 'data'}",
                        f"--web.listen-address={HOST}:{self.port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                )
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                if _http_get(f"{self.client.base_url}/-/ready", timeout=2).status_code == 200:
                    return True
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it does not exit in time."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log(self) -> str:
        """What the server wrote to its log, for assertion messages."""
        return self._logfile.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``promtool`` with ``args`` and capture its output (never raises on failure)."""
    return subprocess.run(
        [find_binary("promtool"), *args], capture_output=True, text=True, timeout=120
    )


# --- the PromQL the project ships ----------------------------------------------------


def substitute_grafana_variables(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace ``$var``, ``${var}`` and ``[[var]]`` with concrete values.

    Raises ``KeyError`` for a variable with no stand-in, so a new dashboard variable
    cannot slip through untested.
    """
    table = values or GRAFANA_VARIABLES

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return table[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", replace, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(path: Path = DASHBOARD_FILE) -> dict[str, str]:
    """Every panel query of the dashboard, keyed ``panel title/refId``, variables intact."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found[f"{panel['title']}/{target['refId']}"] = target["expr"]
    return found


def dashboard_variable_metrics(path: Path = DASHBOARD_FILE) -> dict[str, str]:
    """For each ``label_values(metric, label)`` variable, the metric its options come from."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        if match is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {text!r}")
        found[f"variable {variable['name']}"] = match.group(1)
    return found


def grafana_alert_rules(path: Path = GRAFANA_ALERTS_FILE) -> list[dict[str, Any]]:
    """The rules of the Grafana alert provisioning file, all groups flattened."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def grafana_alert_expressions(path: Path = GRAFANA_ALERTS_FILE) -> dict[str, str]:
    """Every PromQL query of the Grafana alert rules, keyed ``rule title/refId``."""
    return {
        f"{rule['title']}/{query['refId']}": query["model"]["expr"]
        for rule in grafana_alert_rules(path)
        for query in rule["data"]
        if query["datasourceUid"] != "__expr__"
    }


def prometheus_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The rules (recording and alerting) of a Prometheus rules file, groups flattened."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_expressions(path: Path = RULES_FILE) -> dict[str, str]:
    """Every rule expression, keyed by the recorded metric or the alert name."""
    return {rule.get("record") or rule["alert"]: rule["expr"] for rule in prometheus_rules(path)}


def shipped_expressions() -> dict[str, str]:
    """All PromQL the project ships, Grafana variables replaced, keyed by where it lives."""
    found = {f"rules: {k}": v for k, v in rule_expressions().items()}
    found |= {
        f"dashboard: {k}": substitute_grafana_variables(v)
        for k, v in dashboard_expressions().items()
    }
    found |= {f"dashboard: {k}": v for k, v in dashboard_variable_metrics().items()}
    found |= {f"grafana alert: {k}": v for k, v in grafana_alert_expressions().items()}
    return found


def write_as_recording_rules(expressions: dict[str, str], path: Path) -> Path:
    """Wrap expressions as recording rules so ``promtool check rules`` parses each one."""
    rules = [
        {"record": f"check:expression_{index}", "expr": expr}
        for index, expr in enumerate(expressions.values())
    ]
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "shipped-expressions", "rules": rules}]}),
        encoding="utf-8",
    )
    return path

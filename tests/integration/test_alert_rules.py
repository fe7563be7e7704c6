"""The Prometheus rules file: promtool accepts it, its unit tests pass and cover every alert.

``grafana/tests/*.yaml`` holds the promtool unit tests. These tests run them, and also
check that the unit tests are complete (every alert has a case that fires it with labels
and annotations and a healthy case past its ``for`` that does not) and able to fail (a
rules file with a changed threshold breaks them).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.prometheus import REPO, RULE_TESTS_DIR, RULES_FILE, prometheus_rules, promtool

RUNBOOK = REPO / "docs" / "monitoring.md"
RUNBOOK_URL = "https://github.com/siem-exporter/siem-exporter/blob/main/docs/monitoring.md#"
DURATION = re.compile(r"(\d+)([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(duration: str) -> int:
    parts = DURATION.findall(duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * SECONDS[u] for n, u in parts)


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in prometheus_rules() if "alert" in rule]


def _test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yaml"))


def _alert_cases() -> list[dict[str, Any]]:
    cases = []
    for path in _test_files():
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def _github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    result = promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", *map(str, _test_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_follow_the_mixin_conventions() -> None:
    anchors = {
        _github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    alerts = _alerts()
    assert len(alerts) >= 8
    for alert in alerts:
        name = alert["alert"]
        assert re.fullmatch(r"SiemExporter(?:[A-Z][a-z0-9]+)+", name), name
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert "{{" not in annotations["summary"], f"{name}: summary must be static"
        if not alert["expr"].startswith("absent("):  # absent() has no labels to show
            assert "{{" in annotations["description"], f"{name}: description must be templated"
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"{name}: no runbook section in {RUNBOOK}"


def test_every_alert_has_a_firing_case_and_a_healthy_case() -> None:
    cases = _alert_cases()
    for alert in _alerts():
        name = alert["alert"]
        mine = [case for case in cases if case["alertname"] == name]
        firing = [case for case in mine if case.get("exp_alerts")]
        assert firing, f"{name}: no test where it fires"
        for case in firing:
            for expected in case["exp_alerts"]:
                assert expected["exp_labels"]["severity"] == alert["labels"]["severity"]
                assert set(expected["exp_annotations"]) == set(alert["annotations"]), name
        sustained = _seconds(alert.get("for", "0s"))
        healthy = [
            case
            for case in mine
            if not case.get("exp_alerts") and _seconds(case["eval_time"]) > sustained
        ]
        assert healthy, f"{name}: no healthy case evaluated after its 'for' of {sustained}s"


def test_the_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    rules = RULES_FILE.read_text(encoding="utf-8")
    assert "vector(0.75)" in rules
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES_FILE.name).write_text(rules.replace("vector(0.75)", "vector(0.9)"))
    for path in _test_files():
        shutil.copy(path, tmp_path / "tests" / path.name)
    result = promtool("test", "rules", *map(str, sorted((tmp_path / "tests").glob("*.yaml"))))
    assert result.returncode != 0
    assert "SiemExporterApiDriftHigh" in result.stdout + result.stderr

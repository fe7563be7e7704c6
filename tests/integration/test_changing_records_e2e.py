"""End to end, the Entra logs beyond sign-ins: ``siem-exporter run`` collects provisioning
(whose filter takes only ``gt``/``lt``), risk detections and security alerts (records that
change while the run goes on, collected with ``update_field``) from ``siem-exporter
simulate`` over HTTPS into a real rsyslogd.

What the collector owes comes from the simulator's ground truth: every provisioning event
made visible, and every version of a changing record that was current long enough for a
poll to see it, each exactly once. An unchanged record fetched again by the overlapping
windows must never reach the SIEM a second time.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.sim.objects import iso_from_ticks
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    owed_ids,
    start_collector,
    wait_for_polls_after,
)

pytestmark = pytest.mark.slow

LOOKBACK = 180.0  # the "test" scenario's events are at most 90 s late
# A version current for less than this after the collector started may have been replaced
# between two of its polls: no collector can owe it. Each version of the "test" scenario is
# current for at least 10 s, several polls even at Identity Protection's 1 request a second.
SEEN_FOR = 8.0
# Per source: its keys, the simulator stream it reads, and its update field (None: events
# that never change).
SOURCES: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "provisioning": ({"endpoint": "/v1.0/auditLogs/provisioning"}, "provisioning", None),
    "riskdetections": (
        {
            "endpoint": "/v1.0/identityProtection/riskDetections",
            "update_field": "lastUpdatedDateTime",
            "page_size": 500,
        },
        "riskDetections",
        "lastUpdatedDateTime",
    ),
    "alerts": (
        {"endpoint": "/v1.0/security/alerts_v2", "update_field": "lastUpdateDateTime"},
        "alerts",
        "lastUpdateDateTime",
    ),
}


def config_for(sim: SimProcess, tmp_path: Path, syslog_port: int, names: Iterable[str]) -> Any:
    config = collector_config(
        sim,
        tmp_path,
        syslog_port=syslog_port,
        metrics_port=free_port(),
        lookback="3m",
        sources=("signins",),
    )
    template = {k: v for k, v in config["sources"][0].items() if k != "endpoint"}
    config["sources"] = [{**template, "name": name, **SOURCES[name][0]} for name in names]
    return config


def owed_versions(
    truth: Iterable[dict[str, Any]], started: float, frozen_at: float
) -> set[tuple[str, str]]:
    """The (id, update time) of every version a collector started at ``started`` owes.

    Shown by the freeze and current for ``SEEN_FOR`` seconds after the start (one shown after
    the freeze is never served; one replaced after it stays current), and inside the first
    window or shown only after the start, as :func:`owed_ids` has it for events.
    """
    owed = set()
    for v in truth:
        replaced = frozen_at if v["superseded_at"] is None else min(v["superseded_at"], frozen_at)
        current_for = replaced - max(v["available_at"], started)
        if v["available_at"] > frozen_at or (replaced < frozen_at and current_for < SEEN_FOR):
            continue
        if v["update_time"] >= started - LOOKBACK + 2 or v["available_at"] > started:
            owed.add((v["id"], iso_from_ticks(v["update_ticks"])))
    return owed


def received(receiver: RsyslogReceiver, names: Iterable[str]) -> dict[str, Counter[Any]]:
    """How often each event (changing records: each (id, update time)) reached the SIEM."""
    got: dict[str, Counter[Any]] = {name: Counter() for name in names}
    for msgid, msg in receiver.messages():
        if msgid in got:
            event = json.loads(msg)
            field = SOURCES[msgid][2]
            got[msgid][event["id"] if field is None else (event["id"], event[field])] += 1
    return got


@dataclass(frozen=True)
class Run:
    """One collector run: when it was launched, ready, the freeze, when it stopped, its
    final metrics and what the SIEM received per source."""

    launched: float
    started: float
    frozen_at: float
    stopped: float
    metrics: str
    delivered: dict[str, Counter[Any]]


def run_collector(sim: SimProcess, tmp_path: Path, names: tuple[str, ...], seconds: float) -> Run:
    """Collect ``names`` for ``seconds`` while the world moves, then freeze it and drain."""
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver.port, names)
        launched = time.time()
        with start_collector(config, tmp_path) as collector:
            try:
                collector.wait_ready()
            except AssertionError as exc:
                answers = sim.stats()["requests"]
                raise AssertionError(
                    f"collector never ready; the tenant answered {answers}"
                ) from exc
            started = time.time()
            time.sleep(seconds)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, names, frozen_at, timeout=120)
            metrics = collector.metrics()
            assert collector.terminate() == 0
            stopped = time.time()
        return Run(launched, started, frozen_at, stopped, metrics, received(receiver, names))


def test_provisioning_risk_detections_and_alerts_arrive_once_each_version_once(
    sim: SimProcess, tmp_path: Path
) -> None:
    names = tuple(SOURCES)
    run = run_collector(sim, tmp_path, names, 30)
    started, frozen_at, delivered = run.started, run.frozen_at, run.delivered

    requests = sim.stats()["requests"]
    assert "400" not in requests["provisioning"], "the provisioning filter was refused"
    events = sim.truth("provisioning")
    expected = owed_ids(events, started, frozen_at, LOOKBACK)
    got = delivered["provisioning"]
    assert len(expected) > 100
    assert not expected - set(got), f"{len(expected - set(got))} provisioning events missing"
    assert not {i for i, n in got.items() if n > 1}, "provisioning events delivered twice"
    assert set(got) <= {e["id"] for e in events}

    for name in ("riskdetections", "alerts"):
        truth = sim.truth(SOURCES[name][1])
        owed = owed_versions(truth, started, frozen_at)
        got = delivered[name]
        changed = {
            (v["id"], iso_from_ticks(v["update_ticks"]))
            for v in truth
            if v["version"] > 0 and started < v["available_at"] <= frozen_at
        }
        assert len(owed & changed) > 10, f"few {name} records changed during the run"
        missing = owed - set(got)
        assert not missing, f"{len(missing)} of {len(owed)} {name} versions never arrived"
        twice = [key for key, n in got.items() if n > 1]
        assert not twice, f"{name} versions re-sent (an unchanged record sent again): {twice[:3]}"
        known = {(v["id"], iso_from_ticks(v["update_ticks"])) for v in truth}
        assert set(got) <= known, f"{name}: a version the tenant never had"
        sent = metric_value(
            run.metrics, "siem_exporter_events_sent_total", source=name, sink="syslog"
        )
        assert sent == sum(got.values())


def test_identity_protection_throttling_without_retry_after_loses_nothing_and_backs_off(
    sim: SimProcess, tmp_path: Path
) -> None:
    # Other apps of the tenant take half of Identity Protection's 1 request per second,
    # which is per tenant, so this collector meets 429s that carry no Retry-After.
    sim.set_faults(identity_protection_budget=[1, 2.0])
    names = ("riskdetections",)

    run = run_collector(sim, tmp_path, names, 30)

    stats = sim.stats()
    codes = stats["requests"]["riskDetections"]
    throttled = codes.get("429", 0)
    assert throttled > 0, "the collector never met Identity Protection's limit"
    assert throttled == stats["throttled_by_family"]["identityProtection"]
    owed = owed_versions(sim.truth("riskDetections"), run.started, run.frozen_at)
    got = run.delivered["riskdetections"]
    missing = owed - set(got)
    assert not missing, f"{len(missing)} of {len(owed)} versions lost to throttling"
    assert not [key for key, n in got.items() if n > 1]
    # The collector spends its own budget for the family (Graph's 1 request per second),
    # 429s included: it never sends faster, however often it is refused.
    budget_requests, budget_seconds = 1, 1.0
    ran_for = run.stopped - run.launched
    assert sum(codes.values()) <= ran_for * budget_requests / budget_seconds + 1
    retried = metric_value(
        run.metrics, "siem_exporter_throttle_retries_total", source=names[0], code="429"
    )
    assert retried == throttled, "a 429 the collector did not count as a throttle retry"

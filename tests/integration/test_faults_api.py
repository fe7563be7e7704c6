"""Fault tests, end to end, on the Microsoft side: a failing token endpoint and a throttling storm.

``siem-exporter run`` talks to ``siem-exporter simulate`` over HTTPS (MSAL against its token
endpoint, Graph with its budget) and delivers into a real rsyslogd. Faults are switched on
through the simulator's control endpoint while the collector runs; the simulator's ground
truth and its request statistics say what should have happened.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    start_collector,
    wait_for_polls_after,
    wait_for_quiet_delivery,
    wait_until,
)

LOOKBACK_SECONDS = 180.0


def assert_exactly_once(
    sim: SimProcess,
    receiver: RsyslogReceiver,
    sources: tuple[str, ...],
    started: float,
    frozen_at: float,
    metrics: str,
) -> list[tuple[str, str]]:
    """Every owed event of ``sources`` arrived once, as counted; returns the other messages."""
    delivered: dict[str, Counter[str]] = {s: Counter() for s in sources}
    others = []
    for msgid, msg in receiver.messages():
        if msgid in delivered:
            delivered[msgid][json.loads(msg)["id"]] += 1
        else:
            others.append((msgid, msg))
    for source in sources:
        owed = {
            e["id"]: (round(e["event_time"] - started, 1), round(e["available_at"] - started, 1))
            for e in sim.truth(source)
            if e["available_at"] <= frozen_at
            and (e["event_time"] >= started - LOOKBACK_SECONDS + 2 or e["available_at"] > started)
        }
        missing = sorted(owed[i] for i in set(owed) - set(delivered[source]))
        assert not missing, (
            f"{len(missing)} of {len(owed)} {source} events lost; (event time, visible at) "
            f"relative to the start: {missing[:5]}"
        )
        repeated = [i for i, n in delivered[source].items() if n > 1]
        assert not repeated, f"{source} events delivered twice: {repeated[:5]}"
        assert metric_value(
            metrics, "siem_exporter_events_sent_total", source=source, sink="syslog"
        ) == sum(delivered[source].values())
    return others


def test_token_endpoint_outage_is_classified_warned_and_recovered_from(
    sim: SimProcess, tmp_path: Path
) -> None:
    sources = ("signins",)
    with RsyslogReceiver() as receiver:
        config: dict[str, Any] = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            sources=sources,
        )
        config["inband_warnings"] = True
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            # Steady state first: the faults below should cut regular polls short, not the
            # first one, whose window the owed events are counted from.
            wait_until(
                lambda: collector.metric(
                    "siem_exporter_last_success_timestamp_seconds", source="signins"
                ),
                timeout=60,
            )
            # The cached token stops working and no new one can be had: AADSTS7000215.
            sim.set_faults(token_failures=1_000_000, token_error=7000215, revoke_tokens=True)
            wait_until(lambda: collector.readiness() == 503, timeout=90)
            invalid_client = collector.metric(
                "siem_exporter_token_failures_total", reason="invalid_client"
            )
            assert invalid_client >= 3
            sim.set_faults(token_failures=0)
            wait_until(lambda: collector.readiness() == 200, timeout=60)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, sources, frozen_at, timeout=60)
            wait_for_quiet_delivery(collector, receiver, sources)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        others = assert_exactly_once(sim, receiver, sources, started, frozen_at, metrics)

    assert (
        metric_value(metrics, "siem_exporter_token_failures_total", reason="invalid_client")
        >= invalid_client
    )
    for reason in ("unauthorized_client", "invalid_scope", "network", "other"):
        assert metric_value(metrics, "siem_exporter_token_failures_total", reason=reason) == 0
    warnings = [msg for msgid, msg in others if msgid == "warning"]
    assert others and len(warnings) == len(others), f"unexpected messages: {others[:3]}"
    assert any(w.startswith("WARNING: ") and "token" in w for w in warnings), warnings
    assert "AADSTS7000215" in collector.logs()
    assert sim.client_secret not in collector.logs()


@pytest.mark.parametrize("style", ["seconds", "integer", "http-date"])
def test_throttling_storm_is_waited_out_never_early_and_loses_nothing(
    sim: SimProcess, tmp_path: Path, style: str
) -> None:
    sources = ("signins", "directoryAudits")
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            page_size=100,
        )
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            # The collector believes in 50 requests per 10 s; the tenant now allows 4 per 2 s.
            sim.set_faults(budget=[4, 2], retry_after_style=style)
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_throttle_retries_total",
                        source="signins",
                        code="429",
                    )
                    + collector.metric(
                        "siem_exporter_throttle_retries_total",
                        source="directoryAudits",
                        code="429",
                    )
                    >= 4
                ),
                timeout=60,
            )
            # Then four 503s without Retry-After: backoff, also held for the whole tenant.
            sim.set_faults(budget=[50, 10], graph_503=4)
            wait_until(lambda: sim.stats()["faults"]["graph_503"] == 0, timeout=60)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, sources, frozen_at, timeout=90)
            wait_for_quiet_delivery(collector, receiver, sources)
            throttled_before = sim.stats()["throttled"]
            metrics = collector.metrics()
            assert collector.terminate() == 0
        assert_exactly_once(sim, receiver, sources, started, frozen_at, metrics)

    stats = sim.stats()
    assert stats["throttled"] >= 4
    assert stats["early_requests"] == 0, f"requests sent before Retry-After expired: {stats}"
    retries = {
        code: sum(
            metric_value(metrics, "siem_exporter_throttle_retries_total", source=s, code=code)
            for s in sources
        )
        for code in ("429", "503")
    }
    # Every 429 the tenant sent is a counted retry. The collector keeps polling until it is
    # stopped, so a 429 may be on its way while /metrics is read: each source can have one
    # answer in flight between the two counts.
    counted = (throttled_before - len(sources), retries["429"], stats["throttled"])
    assert counted[0] <= counted[1] <= counted[2], counted
    assert retries["503"] == 4


def test_queries_abandoned_after_server_errors_or_malformed_pages_skip_nothing(
    sim: SimProcess, tmp_path: Path
) -> None:
    """Six failed attempts at one page abandon the query (500s, then pages cut short); the
    tier runs it again later, and every event of the stretch it was reading still arrives."""
    sources = ("signins",)
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            sources=sources,
            page_size=100,
        )
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            collector.wait_ready()
            for fault in ("graph_500", "malformed_pages"):
                sim.set_faults(**{fault: 6})
                wait_until(lambda fault=fault: sim.stats()["faults"][fault] == 0, timeout=60)
                wait_until(lambda fault=fault: abandoned(collector, fault), timeout=60)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, sources, frozen_at, timeout=90)
            wait_for_quiet_delivery(collector, receiver, sources)
            metrics = collector.metrics()
            assert collector.terminate() == 0
        assert_exactly_once(sim, receiver, sources, started, frozen_at, metrics)
    for reason in ("http_error", "malformed_page"):
        assert (
            metric_value(metrics, "siem_exporter_api_errors_total", source="signins", reason=reason)
            >= 6
        )


ABANDONED_BY = {"graph_500": "http_error", "malformed_pages": "malformed_page"}


def abandoned(collector: Any, fault: str) -> bool:
    """Whether the collector logged a query abandoned for the reason ``fault`` produces."""
    for line in collector.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            record.get("msg") == "query abandoned, the tier retries"
            and record.get("reason") == ABANDONED_BY[fault]
        ):
            return True
    return False


@pytest.mark.parametrize(
    ("refusal", "reason", "advice"),
    [
        ("permission", "forbidden", "AuditLog.Read.All and Directory.Read.All"),
        ("licence", "unlicensed", "Microsoft Entra ID P1 or P2"),
    ],
)
def test_a_refused_source_says_what_it_needs_stays_unready_and_asks_again_slowly(
    sim: SimProcess, tmp_path: Path, refusal: str, reason: str, advice: str
) -> None:
    """A 403 is a person's job: the log line names what to grant, /readyz says which source
    is refused, and each query tier asks again only after minutes, not every poll."""
    sim.set_faults(graph_403=refusal)
    try:
        with RsyslogReceiver() as receiver:
            config = collector_config(
                sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port()
            )
            with start_collector(config, tmp_path) as collector:
                wait_until(
                    lambda: (
                        collector.metric(
                            "siem_exporter_api_errors_total", source="signins", reason=reason
                        )
                        > 0
                    ),
                    timeout=60,
                )
                readiness = collector.get("/readyz")
                assert readiness is not None and readiness.status_code == 503
                assert f"signins ({reason})" in readiness.text
                time.sleep(20)  # the fresh tier polls every second when Graph answers
                metrics = collector.metrics()
                assert collector.terminate() == 0
                logs = collector.logs()
    finally:
        sim.set_faults(graph_403=None)
    tiers = {
        line.split('tier="', 1)[1].split('"', 1)[0]
        for line in metrics.splitlines()
        if line.startswith("siem_exporter_tier_interval_seconds{") and 'source="signins"' in line
    }
    refused = metric_value(
        metrics, "siem_exporter_api_requests_total", source="signins", code="403"
    )
    assert tiers and refused <= len(tiers), f"{refused} refused requests from {len(tiers)} tiers"
    assert advice in logs and "signins" in logs
    assert not receiver.messages(), "nothing was delivered, and nothing claimed to be"


def test_a_filter_graph_refuses_is_named_in_the_log_with_its_source(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port()
        )
        config["sources"][0]["filter"] = "riskState eq 'atRisk'"
        with start_collector(config, tmp_path) as collector:
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_api_errors_total", source="signins", reason="bad_request"
                    )
                    > 0
                ),
                timeout=60,
            )
            assert collector.terminate() == 0
            logs = collector.logs()
    refusal = next(line for line in logs.splitlines() if "graph refused source signins" in line)
    assert "(riskState eq 'atRisk')" in refusal, refusal

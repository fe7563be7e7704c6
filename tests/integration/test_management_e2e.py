"""End to end: ``api: management_activity`` sources against the simulated Management Activity
API over HTTPS, into a real rsyslogd.

The simulator puts records into blobs late (a later blob holds older records), lists blobs
late, and puts a tenth of the records into a second blob with their fields in another
order; the collector must deliver every record exactly once, fetch every blob once, ride
out AF429 throttles, count a blob that expired before it was fetched as lost, and survive
a subscription an administrator disabled.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from exporter.sim.objects import tenant_guid
from exporter.sim.scenario import SCENARIOS
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    start_collector,
    start_sim,
    wait_until,
)

AAD, EXCHANGE = "Audit.AzureActiveDirectory", "Audit.Exchange"
SOURCES = {"aad": AAD, "exchange": EXCHANGE}
WEEK = 7 * 86400.0


def control(sim: SimProcess, method: str, action: str, **kwargs: Any) -> Any:
    response = requests.request(
        method,
        f"{sim.base_url}/_sim/management/{action}",
        verify=sim.ca_file,
        timeout=30,
        **kwargs,
    )
    response.raise_for_status()
    return response.json()


def management_config(sim: SimProcess, tmp_path: Path, syslog_port: int) -> dict[str, Any]:
    config = collector_config(sim, tmp_path, syslog_port=syslog_port, metrics_port=free_port())
    config["tenant_id"] = tenant_guid(SCENARIOS["test"].seed)
    config["management_url"] = sim.base_url
    config["sources"] = [
        {
            "name": name,
            "api": "management_activity",
            "content_type": content_type,
            "poll_interval": "1s",
            "lookback": "30s",
            "max_lookback": "10m",
            "rescan_floor": "10s",
        }
        for name, content_type in SOURCES.items()
    ]
    return config


def owed(sim: SimProcess, content_type: str, frozen_at: float) -> tuple[set[str], set[str]]:
    """The records a collector owes by the freeze, and those only an expired blob held."""
    owed_ids, lost_ids = set(), set()
    for record in control(sim, "GET", "truth", params={"contentType": content_type}):
        blobs = [b for b in record["blobs"] if b["exists"] and b["listable_at"] <= frozen_at]
        alive = [b for b in blobs if b["expires"] > b["content_created"] + WEEK - 1]
        if alive:
            owed_ids.add(record["Id"])
        elif blobs:
            lost_ids.add(record["Id"])
    return owed_ids, lost_ids


def received(receiver: RsyslogReceiver) -> dict[str, Counter[str]]:
    ids: dict[str, Counter[str]] = {name: Counter() for name in SOURCES}
    for msgid, msg in receiver.messages():
        if msgid in ids:
            ids[msgid][json.loads(msg)["Id"]] += 1
    return ids


def wait_for_quiet_delivery(collector: Any, receiver: RsyslogReceiver) -> None:
    """Until events_sent_total stood still for two seconds and matches what rsyslog holds."""

    def sent() -> float:
        return sum(
            collector.metric("siem_exporter_events_sent_total", source=name, sink="syslog")
            for name in SOURCES
        )

    def quiet() -> bool:
        before = sent()
        time.sleep(2.0)
        return before == sent() == sum(sum(c.values()) for c in received(receiver).values())

    wait_until(quiet, 60, interval=0.0)


def test_every_record_exactly_once_through_late_duplicated_blobs_throttles_and_an_expired_blob(
    tmp_path: Path,
) -> None:
    with start_sim(tmp_path) as sim, RsyslogReceiver() as receiver:
        config = management_config(sim, tmp_path, receiver.port)
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            time.sleep(8)
            control(sim, "POST", "faults", json={"af429": 6})  # a throttle storm (backoff doubles)
            time.sleep(6)
            control(sim, "POST", "faults", json={"expire_fetches": 1})
            wait_until(
                lambda: (
                    collector.metric(
                        "siem_exporter_blob_fetch_failures_total", source="aad", reason="expired"
                    )
                    + collector.metric(
                        "siem_exporter_blob_fetch_failures_total",
                        source="exchange",
                        reason="expired",
                    )
                ),
                timeout=30,
            )
            time.sleep(4)
            frozen_at = control(sim, "POST", "freeze")["frozen_at"]
            expected = {name: owed(sim, ct, frozen_at) for name, ct in SOURCES.items()}
            wait_until(
                lambda: all(
                    expected[name][0] <= set(got) for name, got in received(receiver).items()
                ),
                timeout=60,
            )
            wait_for_quiet_delivery(collector, receiver)
            metrics = {
                name: {
                    "duplicates": collector.metric(
                        "siem_exporter_duplicates_suppressed_total", source=name
                    ),
                    "af429": collector.metric(
                        "siem_exporter_throttle_retries_total", source=name, code="AF429"
                    ),
                    "fetched": collector.metric("siem_exporter_blobs_fetched_total", source=name),
                    "lag_count": collector.metric(
                        "siem_exporter_event_arrival_lag_seconds_count", source=name
                    ),
                }
                for name in SOURCES
            }
            logs = collector.logs()
            assert collector.terminate() == 0
        stats = control(sim, "GET", "stats")
        got = received(receiver)

    for name in SOURCES:
        owed_ids, lost_ids = expected[name]
        assert set(got[name]) == owed_ids, name  # nothing missing, nothing invented
        assert max(got[name].values()) == 1, name  # nothing twice
        assert not lost_ids & set(got[name])
    assert sum(len(lost) for _, lost in expected.values()) > 0  # the expired blob held records
    assert sum(m["duplicates"] for m in metrics.values()) > 0  # copies across blobs were dropped
    assert sum(m["af429"] for m in metrics.values()) >= 6
    assert all(m["lag_count"] > 0 and m["fetched"] > 0 for m in metrics.values())
    assert max(stats["blob_fetches"].values()) == 1  # each blob fetched once
    assert "without_publisher" not in stats["requests"]  # PublisherIdentifier on every call
    assert "content blob expired before it could be fetched" in logs


def test_a_subscription_disabled_mid_run_is_an_error_and_an_alert_and_recovers(
    tmp_path: Path,
) -> None:
    with start_sim(tmp_path) as sim, RsyslogReceiver() as receiver:
        config = management_config(sim, tmp_path, receiver.port)
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            time.sleep(4)
            control(sim, "POST", "subscription", json={"contentType": AAD, "disabled": True})
            wait_until(
                lambda: collector.metric("siem_exporter_subscription_enabled", source="aad") == 0,
                timeout=30,
            )
            errors = collector.metric(
                "siem_exporter_api_errors_total", source="aad", reason="subscription_disabled"
            )
            control(sim, "POST", "subscription", json={"contentType": AAD, "disabled": False})
            wait_until(
                lambda: collector.metric("siem_exporter_subscription_enabled", source="aad") == 1,
                timeout=90,
            )
            time.sleep(4)
            frozen_at = control(sim, "POST", "freeze")["frozen_at"]
            expected = owed(sim, AAD, frozen_at)[0]
            wait_until(lambda: expected <= set(received(receiver)["aad"]), timeout=60)
            wait_for_quiet_delivery(collector, receiver)
            logs = collector.logs()
            assert collector.terminate() == 0
        got = received(receiver)["aad"]

    assert errors > 0
    assert set(got) == expected and max(got.values()) == 1
    assert "disabled by an administrator" in logs and "subscription enabled again" in logs

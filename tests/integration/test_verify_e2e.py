"""End to end: ``siem-exporter verify`` against the simulated tenant over HTTPS and a real rsyslogd.

Two audits a user runs: of our own collector, whose SIEM lost some events (verify names
exactly those, ``--deliver-missing`` closes the gap once, and the late arrivals it counts
agree with the ledger and the simulator's ground truth), and of a foreign integration,
a naive poller written here that asks for "the last N seconds every N seconds" and so
loses every event that turns up late (verify names exactly those, against the
simulator's ground truth).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from exporter.eventtime import parse_event_time
from exporter.graph import event_key
from exporter.sim.token import client_credentials_token
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    SimProcess,
    collector_config,
    free_port,
    start_collector,
    wait_for_polls_after,
    wait_until,
)
from tests.unit.test_verify_metrics import samples

pytestmark = pytest.mark.slow
SOURCES = ("signins", "directoryAudits")
TIME_FIELDS = {"signins": "createdDateTime", "directoryAudits": "activityDateTime"}
MAX_LATENESS = 90.0  # the "test" scenario's
POLL_INTERVAL = 5.0  # late means more than this: long enough that some events are on time


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verify(config: Path, start: float, end: float, *extra: str) -> tuple[int, Any, str]:
    """``python -m exporter verify --json`` at the whole budget: status, report, stderr."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "verify",
            "--config",
            str(config),
            "--from",
            iso(start),
            "--to",
            iso(end),
            "--budget-share",
            "100%",
            "--json",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, report, result.stderr


def as_siem_record(msgid: str, msg: str) -> str:
    """One received message as a Splunk-like export line: the RFC 5424 line in ``_raw``."""
    line = f"<134>1 2026-01-01T00:00:00Z collector-0 siem-exporter 1 {msgid} - {msg}"
    return json.dumps({"_raw": line, "index": "entra", "host": "siem"}) + "\n"


def event_time(msgid: str, msg: str) -> float:
    when = parse_event_time(json.loads(msg)[TIME_FIELDS[msgid]])
    assert when is not None
    return when.timestamp()


def ledger_rows(state: Path, source: str, start: float, end: float) -> dict[bytes, float]:
    """Read straight from the ledger file: each key of ``source`` in ``[start, end)`` with its
    recorded time minus its event time."""
    db = sqlite3.connect(f"{state.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT key, recorded_at - event_time FROM delivered"
            " WHERE source = ? AND event_time >= ? AND event_time < ?",
            (source, start, end),
        ).fetchall()
    finally:
        db.close()
    return {bytes(key): lag for key, lag in rows}


def check_late_arrivals(
    sim: SimProcess, state: Path, report: Any, start: float, end: float, frozen_at: float
) -> None:
    """verify's late arrivals are what the ledger says, and the ledger agrees with the ground
    truth: no event was recorded before it became visible, so every event visible more than
    a poll interval after its time is among them; and events seen in time are not."""
    truly_late = late = held = 0
    for row in report["sources"]:
        lags = ledger_rows(state, row["source"], start, end)
        late_keys = {key for key, lag in lags.items() if lag > POLL_INTERVAL}
        assert len(lags) == row["in_ledger"] == row["in_api"]
        assert (row["late_arrivals"], row["late_unknown"]) == (len(late_keys), 0)
        assert row["late_after_seconds"] == POLL_INTERVAL
        truth = {
            event_key({"id": e["id"]})[0]: e["available_at"] - e["event_time"]
            for e in sim.truth(row["source"])
            if start <= e["event_time"] < end and e["available_at"] <= frozen_at
        }
        assert truth.keys() == lags.keys()
        assert all(lags[key] >= lateness - 1e-3 for key, lateness in truth.items())
        truly_late_keys = {key for key, lateness in truth.items() if lateness > POLL_INTERVAL}
        assert truly_late_keys <= late_keys
        truly_late, late, held = (
            truly_late + len(truly_late_keys),
            late + len(late_keys),
            held + len(lags),
        )
    assert truly_late, "nothing turned up late: the test proves nothing"
    assert late < held, "every event counted late: the test proves nothing"


def test_verify_names_what_the_siem_lost_and_deliver_missing_closes_the_gap_once(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            lookback="3m",
            poll_interval=f"{POLL_INTERVAL:g}s",
        )
        config_path = tmp_path / "verify.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with start_collector(config, tmp_path) as collector:
            collector.wait_ready()
            started = time.time()
            time.sleep(20)
            frozen_at = sim.freeze()
            wait_for_polls_after(collector, SOURCES, frozen_at)
            # Since the collector runs, up to the freeze: the late arrivals it caught.
            live_start, live_end = float(int(started) + 1), float(int(frozen_at))
            status, report, _ = verify(config_path, live_start, live_end)
            assert status == 0, report
            state = Path(config["state"]["path"])
            check_late_arrivals(sim, state, report, live_start, live_end, frozen_at)
            # Inside the first window, and late enough that every event of it was visible.
            start, end = float(int(started - 170)), float(int(frozen_at - MAX_LATENESS - 5))
            # Beside the running collector: the ledger is read without its lock.
            status, report, _ = verify(config_path, start, end)
            assert status == 0, report
            assert all(row["in_api"] == row["in_ledger"] > 0 for row in report["sources"])
            # Read at the collector's start, over a minute after it happened: the backlog
            # arrived late too, and says so.
            assert all(row["late_arrivals"] == row["in_ledger"] for row in report["sources"])
            # Delivering needs the ledger's lock, which the collector holds.
            status, _, stderr = verify(config_path, start, end, "--deliver-missing")
            assert status == 2
            assert stderr.startswith("siem-exporter: --deliver-missing: ")
            assert collector.terminate() == 0

        received = receiver.messages()
        lost: set[tuple[str, str]] = set()
        export = tmp_path / "siem-export.jsonl"
        with export.open("w", encoding="utf-8") as out:
            for index, (msgid, msg) in enumerate(received):
                if index % 7 == 3:  # the SIEM lost it (inside the stretch or not)
                    if start <= event_time(msgid, msg) < end:
                        lost.add((msgid, json.loads(msg)["id"]))
                    continue
                out.write(as_siem_record(msgid, msg))
        assert {msgid for msgid, _ in lost} == set(SOURCES)

        status, report, stderr = verify(config_path, start, end, "--siem-export", str(export))
        assert status == 1
        assert stderr.startswith("siem-exporter verify: ") and "\r" not in stderr  # no TTY
        assert {(m["source"], m["id"]) for m in report["missing"]} == lost
        assert len(report["missing"]) == len(lost)
        assert all(row["siem_not_in_api"] == 0 for row in report["sources"])
        assert report["export"]["elsewhere"] > 0  # the events outside the stretch

        before = len(received)
        status, report, _ = verify(
            config_path, start, end, "--siem-export", str(export), "--deliver-missing"
        )
        assert status == 1
        assert report["delivered"] == len(lost)
        receiver.wait_for(before + len(lost))
        time.sleep(1.0)  # nothing more comes
        delivered = receiver.messages()[before:]
        assert Counter((m, json.loads(msg)["id"]) for m, msg in delivered) == Counter(lost)

        with export.open("a", encoding="utf-8") as out:
            out.writelines(as_siem_record(msgid, msg) for msgid, msg in delivered)
        status, report, _ = verify(config_path, start, end, "--siem-export", str(export))
        assert (status, report["missing"]) == (0, [])
        status, report, _ = verify(config_path, start, end)  # the ledger alone agrees
        assert status == 0


def test_a_long_audit_is_refused_without_yes_before_any_request(
    sim: SimProcess, tmp_path: Path
) -> None:
    config = collector_config(
        sim, tmp_path, syslog_port=free_port(), metrics_port=free_port(), sources=("signins",)
    )
    config_path = tmp_path / "verify.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    export = tmp_path / "empty.jsonl"
    export.write_text("")
    now = time.time()
    command = [
        sys.executable, "-m", "exporter", "verify", "--config", str(config_path),
        "--from", iso(now - 30 * 86400), "--to", iso(now - 60),
        "--siem-export", str(export), "--budget-share", "0.1%",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("siem-exporter: --yes: 30 days of signins at about ")
    assert "narrow --from/--to" in result.stderr
    assert result.stdout == ""
    # The first page for the estimate (no ledger to count from), and nothing more.
    assert sum(sim.stats()["authorized_requests"].values()) == 1


def naive_poller(sim: SimProcess, every: float, polls: int, out: Path) -> tuple[float, float]:
    """A vendor-style integration: every ``every`` s, ask for the last ``every`` s, no overlap.

    Writes each event it got as the SIEM would store it (the event's JSON, one a line) and
    returns the stretch its windows covered.
    """
    token = client_credentials_token(sim)
    first = float(int(time.time())) + 1.0
    with out.open("w", encoding="utf-8") as export:
        for poll in range(polls):
            window_end = first + poll * every
            time.sleep(max(0.0, window_end - time.time()))
            url: str | None = f"{sim.base_url}/v1.0/auditLogs/signIns"
            params: dict[str, str] | None = {
                "$filter": f"createdDateTime ge {iso(window_end - every)} "
                f"and createdDateTime le {iso(window_end)}",
                "$top": "1000",
            }
            while url is not None:
                response = requests.get(
                    url,
                    params=params,
                    headers={"Authorization": f"Bearer {token}"},
                    verify=sim.ca_file,
                    timeout=30,
                )
                response.raise_for_status()
                page = response.json()
                export.writelines(json.dumps(event) + "\n" for event in page["value"])
                url, params = page.get("@odata.nextLink"), None
    return first - every, first + (polls - 1) * every


def test_verify_names_exactly_the_events_a_non_overlapping_poller_missed(
    sim: SimProcess, tmp_path: Path
) -> None:
    """Then closes the vendor's gap: delivered once to the SIEM and recorded in a ledger."""
    export = tmp_path / "vendor.jsonl"
    start, end = naive_poller(sim, every=4.0, polls=6, out=export)
    frozen_at = sim.freeze()
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=free_port(),
            sources=("signins",),
        )
        config_path = tmp_path / "verify.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        assert not Path(config["state"]["path"]).exists()  # no ledger: the export is all

        wait_until(lambda: time.time() >= end, timeout=10)
        result = tmp_path / "verify.prom"  # what a scheduled audit leaves for Prometheus
        status, report, _ = verify(
            config_path, start, end, "--siem-export", str(export), "--metrics-file", str(result)
        )
        truth = sim.truth("signins")
        in_api = {
            e["id"]
            for e in truth
            if start <= e["event_time"] < end and e["available_at"] <= frozen_at
        }
        got = {json.loads(line)["id"] for line in export.read_text().splitlines()}
        missed = in_api - got
        assert missed, "the poller missed nothing: the test proves nothing"
        assert status == 1
        assert {m["id"] for m in report["missing"]} == missed
        assert len(report["missing"]) == len(missed)
        assert report["sources"][0]["in_api"] == len(in_api)
        assert report["sources"][0]["in_ledger"] is None
        assert {
            name: value for name, value in samples(result).items() if "timestamp" not in name
        } == {
            "siem_exporter_verify_exit_status": 1,
            'siem_exporter_verify_api_events{source="signins"}': len(in_api),
            'siem_exporter_verify_missing_events{source="signins"}': len(missed),
        }

        status, report, _ = verify(
            config_path, start, end, "--siem-export", str(export), "--deliver-missing"
        )
        assert (status, report["delivered"]) == (1, len(missed))
        receiver.wait_for(len(missed))
        time.sleep(1.0)  # nothing more comes
        delivered = Counter(json.loads(msg)["id"] for _, msg in receiver.messages())
        assert delivered == Counter(missed)
        # The ledger it started holds exactly what it delivered: the rest is the poller's.
        status, report, _ = verify(config_path, start, end)
        assert status == 1
        assert {m["id"] for m in report["missing"]} == in_api & got

"""The state file under fault: damaged, unreadable, or on a full disk.

The ledger is what stops a re-send, so a ledger the collector cannot trust must stop it
before it sends anything (exit 1, one line, the file left as it was), and a ledger it
cannot write must pause delivery rather than forget what it sent. A full disk is made
without privileges the way the kernel reports one to SQLite: the collector's
``RLIMIT_FSIZE`` is lowered at runtime (``prlimit``) so every file write fails with EFBIG
(CPython ignores SIGXFSZ), then raised again. Its log therefore goes to a pipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.graph import event_key
from exporter.ledger import Ledger
from tests.rsyslog import RsyslogReceiver
from tests.stack import SimProcess, collector_config, free_port, metric_value, wait_until

REPO = Path(__file__).resolve().parents[2]
LOOKBACK = 180.0


def write_config(config: dict[str, Any], directory: Path) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def damage(state: Path, kind: str) -> None:
    """Leave ``state`` damaged in one of the ways a disk or an operator can."""
    state.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        state.write_bytes(os.urandom(64 * 1024))
    elif kind == "directory":
        state.mkdir()
        (state / "something").write_text("not a database")
    else:  # a real ledger whose middle pages were overwritten
        ledger = Ledger(state)
        for _ in range(20):
            ledger.record(
                "signins", [(uuid.uuid4().bytes, time.time()) for _ in range(1000)], time.time()
            )
        ledger.close()
        size = state.stat().st_size
        with state.open("r+b") as file:
            file.seek(size // 2)
            file.write(os.urandom(16 * 1024))


def snapshot(directory: Path) -> dict[str, str]:
    """Name -> content digest of everything under ``directory`` except the lock file."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.endswith(".lock"):
            found[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[str(path.relative_to(directory))] = "directory"
    return found


@pytest.mark.parametrize("kind", ["garbage", "damaged pages", "directory"])
def test_a_damaged_state_file_stops_the_collector_before_it_sends(
    sim: SimProcess, tmp_path: Path, kind: str
) -> None:
    with RsyslogReceiver() as receiver:
        config = collector_config(
            sim, tmp_path, syslog_port=receiver.port, metrics_port=free_port(), lookback="3m"
        )
        state = Path(config["state"]["path"])
        damage(state, kind)
        before = snapshot(state.parent)
        config_path = write_config(config, tmp_path)
        command = [sys.executable, "-m", "exporter", "run", "--config", str(config_path)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO)
        time.sleep(1)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert str(state) in result.stderr and "docs/reliability.md" in result.stderr
        assert snapshot(state.parent) == before, "the damaged state was modified"
        assert receiver.messages() == [], "events were sent without a trustworthy ledger"
        assert "signins" not in sim.stats()["requests"], "Graph was queried anyway"

        # The documented recovery: move the damaged file aside and start again.
        state.rename(state.with_name("state.db.damaged"))
        metrics_port = free_port()
        config["metrics"]["listen"] = f"127.0.0.1:{metrics_port}"
        write_config(config, tmp_path)
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=REPO) as process:
            try:
                wait_until(lambda: len(receiver.messages()) > 0, timeout=60)
            finally:
                process.terminate()
                assert process.wait(timeout=30) == 0


class PipedCollector:
    """``siem-exporter run`` whose log goes to a pipe (a file write would hit the limit)."""

    def __init__(self, config_path: Path, metrics_port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"msg": line.decode("utf-8", "replace")})

    def logged(self, message: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("msg") == message]

    def metric(self, name: str, **labels: str) -> float:
        import requests

        try:
            text = requests.get(self.metrics_url, timeout=5).text
        except requests.ConnectionError:
            return 0.0
        return metric_value(text, name, **labels)

    def set_file_size_limit(self, limit: int) -> None:
        _, hard = resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (limit, hard))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return code


def completed_polls(collector: PipedCollector) -> float:
    """When the last complete poll of signins ended (0 before the first)."""
    return collector.metric("siem_exporter_last_success_timestamp_seconds", source="signins")


def ledger_keys(state: Path) -> set[bytes]:
    """The keys the ledger holds right now, read as a second, read-only SQLite client."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT key FROM delivered WHERE source = 'signins'")}
    finally:
        db.close()


def received_events(receiver: RsyslogReceiver) -> list[dict[str, Any]]:
    return [json.loads(msg) for _, msg in receiver.messages()]


def test_a_full_state_disk_pauses_delivery_and_resumes_without_loss_or_duplicates(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        metrics_port = free_port()
        config = collector_config(
            sim,
            tmp_path,
            syslog_port=receiver.port,
            metrics_port=metrics_port,
            lookback="3m",
            sources=("signins",),
            page_size=100,
        )
        state = Path(config["state"]["path"])
        collector = PipedCollector(write_config(config, tmp_path), metrics_port)
        try:
            wait_until(lambda: completed_polls(collector) > 0, timeout=60)
            started = time.time() - 1
            collector.set_file_size_limit(1)  # every write to any file now fails: EFBIG
            wait_until(lambda: collector.logged("cannot write the state file; delivery paused"), 60)
            time.sleep(1.5)
            paused_at = len(receiver.messages())
            time.sleep(8)
            assert len(receiver.messages()) == paused_at, "events were sent while state was full"
            assert collector.process.poll() is None
            sent_keys = {event_key(event)[0] for event in received_events(receiver)}
            assert ledger_keys(state) <= sent_keys, "the ledger holds an event never sent"

            collector.set_file_size_limit(resource.RLIM_INFINITY)
            # The paused poll finishes first; new events come with the polls after it.
            wait_until(lambda: len(receiver.messages()) > paused_at, timeout=120)
            frozen_at = sim.freeze()
            wait_until(lambda: completed_polls(collector) > frozen_at + 2, timeout=60)
            assert collector.stop() == 0
        finally:
            if collector.process.poll() is None:
                collector.process.kill()
                collector.process.wait()
        events = received_events(receiver)

    errors = {
        line.get("error", "")
        for line in collector.logged("cannot write the state file; delivery paused")
    }
    print("SQLite reported:", sorted(errors))
    assert any("full" in error or "I/O" in error for error in errors), errors
    delivered = Counter(event["id"] for event in events)
    duplicated = {i: n for i, n in delivered.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} events sent twice across the full disk"
    expected = {
        e["id"]
        for e in sim.truth("signins")
        if e["available_at"] <= frozen_at
        and (e["event_time"] >= started - LOOKBACK + 2 or e["available_at"] > started)
    }
    missing = expected - set(delivered)
    assert not missing, f"{len(missing)} of {len(expected)} events lost across the full disk"
    assert ledger_keys(state) == {event_key(event)[0] for event in events}
    assert b"Traceback" not in b"".join(collector.raw)

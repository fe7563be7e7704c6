"""Real processes for end-to-end tests: the simulated tenant and the collector, as a user runs them.

Both start through the console entry point (``python -m exporter``) in their own process, so
a test exercises exactly what ships: argument parsing, config loading, HTTPS with the
simulator's CA, signals and exit codes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        present = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample_name == name and present == wanted:
            return float(value)
    return 0.0


def owed_ids(
    truth: Iterable[dict[str, Any]], started: float, frozen_at: float, lookback: float
) -> set[str]:
    """The events a collector started at ``started`` with ``lookback`` owes by the freeze.

    Visible by the freeze, and either inside its first window (two seconds of slack for
    the first query's own start) or visible only after it started.
    """
    return {
        e["id"]
        for e in truth
        if e["available_at"] <= frozen_at
        and (e["event_time"] >= started - lookback + 2 or e["available_at"] > started)
    }


def received_ids(receiver: Any, sources: Iterable[str]) -> dict[str, Counter[str]]:
    """How often each event id reached a SIEM receiver, per source (MSGID)."""
    ids: dict[str, Counter[str]] = {source: Counter() for source in sources}
    for msgid, msg in receiver.messages():
        if msgid in ids:
            ids[msgid][json.loads(msg)["id"]] += 1
    return ids


class ConnectionRecorder:
    """A plain TCP listener that records the bytes of every connection and answers nothing.

    Stands in for a host that must never be contacted (a foreign nextLink) or a SIEM that
    must never see cleartext.
    """

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                data = b""
                try:
                    while chunk := conn.recv(65536):
                        data += chunk
                except OSError:
                    pass
                self.received.append(data)

    def close(self) -> None:
        self.server.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class SimProcess:
    """A running ``siem-exporter simulate``, driven through its control endpoints."""

    def __init__(self, process: subprocess.Popen[str], announcement: dict[str, str]) -> None:
        self.process = process
        self.base_url = announcement["base_url"]
        self.ca_file = announcement["ca_file"]
        self.tenant_id = announcement["tenant_id"]
        self.client_id = announcement["client_id"]
        self.client_secret = announcement["client_secret"]

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(
            method, f"{self.base_url}/_sim/{path}", verify=self.ca_file, timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json()

    def set_faults(self, **knobs: Any) -> Any:
        return self._call("POST", "faults", json=knobs)

    def freeze(self) -> float:
        return float(self._call("POST", "freeze")["frozen_at"])

    def truth(self, source: str = "signins") -> list[dict[str, Any]]:
        return list(self._call("GET", "truth", params={"source": source}))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))


@contextlib.contextmanager
def start_sim(tmp_path: Path, scenario: str = "test") -> Iterator[SimProcess]:
    """``python -m exporter simulate`` on a free port; stopped with SIGTERM at the end."""
    workdir = tmp_path / "sim"
    workdir.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--scenario",
            scenario,
            "--workdir",
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"simulator exited with {process.wait()} before announcing")
        yield SimProcess(process, json.loads(line))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def collector_config(
    sim: SimProcess,
    tmp_path: Path,
    *,
    syslog_port: int,
    metrics_port: int,
    lookback: str = "5m",
    poll_interval: str = "1s",
    max_lookback: str = "1d",
    sources: tuple[str, ...] = ("signins", "directoryAudits"),
    page_size: int = 200,
) -> dict[str, Any]:
    """A CONTRACT.md config pointing at ``sim`` and a syslog receiver on ``syslog_port``.

    The secret is read from a file, as a mounted Kubernetes Secret would be; a test can
    swap in ``client_secret: ${GRAPH_CLIENT_SECRET}`` with :func:`secret_env`.
    """
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(sim.client_secret, encoding="utf-8")
    endpoints = {
        "signins": "/v1.0/auditLogs/signIns",
        "directoryAudits": "/v1.0/auditLogs/directoryAudits",
    }
    return {
        "tenant_id": sim.tenant_id,
        "client_id": sim.client_id,
        "client_secret_file": str(secret_file),
        "authority_host": sim.base_url,
        "graph_url": sim.base_url,
        "ca_bundle": sim.ca_file,
        "sources": [
            {
                "name": name,
                "endpoint": endpoints[name],
                "page_size": page_size,
                "poll_interval": poll_interval,
                "lookback": lookback,
                "max_lookback": max_lookback,
            }
            for name in sources
        ],
        "state": {"path": str(tmp_path / "state" / "state.db")},
        "sinks": [
            {
                "type": "syslog",
                "host": "127.0.0.1",
                "port": syslog_port,
                "protocol": "tcp",
                "framing": "octet-counting",
            }
        ],
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "budget": {"requests": 50, "per": "10s"},
        "log_level": "info",
    }


class CollectorProcess:
    """A running ``siem-exporter run``; its stdout (JSON logs) goes to ``log_path``."""

    def __init__(self, process: subprocess.Popen[bytes], metrics_port: int, log_path: Path) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{metrics_port}"
        self.metrics_url = f"{self.base_url}/metrics"
        self.log_path = log_path

    def get(self, path: str) -> requests.Response | None:
        """GET on the metrics listener; None while it is not up."""
        try:
            return requests.get(f"{self.base_url}{path}", timeout=5)
        except requests.ConnectionError:
            return None

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics; 0 while the listener is not up."""
        response = self.get("/metrics")
        return 0.0 if response is None else metric_value(response.text, name, **labels)

    def readiness(self) -> int | None:
        """The status of /readyz; None while the listener is not up."""
        response = self.get("/readyz")
        return None if response is None else response.status_code

    def metrics(self) -> str:
        response = self.get("/metrics")
        assert response is not None and response.status_code == 200
        return response.text

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"collector exited: {self.logs()[-2000:]}"
            response = self.get("/readyz")
            return response is not None and response.status_code == 200

        wait_until(ready, timeout)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait: the exit status of a graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def wait_for_polls_after(
    collector: CollectorProcess, sources: Iterable[str], after: float, timeout: float = 60
) -> None:
    """Every source completes a fresh query that began after ``after``: two completions past it."""
    names = list(sources)

    def completed_since(moment: float) -> bool:
        text = collector.metrics()
        return all(
            metric_value(text, "siem_exporter_last_success_timestamp_seconds", source=s) > moment
            for s in names
        )

    wait_until(lambda: completed_since(after), timeout)
    first = time.time()
    wait_until(lambda: completed_since(first), timeout)


def wait_for_quiet_delivery(
    collector: CollectorProcess,
    receiver: Any,
    sources: Iterable[str],
    timeout: float = 90,
    sink: str | None = None,
) -> None:
    """Until ``events_sent_total`` (to ``sink``, or to every sink when None) has stood still
    for two seconds and matches what the receiver holds: rescans may still be reading the
    backlog from before the start, so a snapshot of the metrics taken while they deliver
    would disagree with the receiver, and a stop then would leave a batch owed."""
    names = list(sources)
    sink_label = f'sink="{sink}"' if sink is not None else ""

    def sent() -> float:
        text = collector.metrics()
        return sum(
            value
            for line in text.splitlines()
            if line.startswith("siem_exporter_events_sent_total{")
            and sink_label in line
            and any(f'source="{name}"' in line for name in names)
            for value in [float(line.rsplit(" ", 1)[1])]
        )

    last: dict[str, float] = {}

    def quiet() -> bool:
        before = sent()
        time.sleep(2.0)
        received = sum(sum(ids.values()) for ids in received_ids(receiver, names).values())
        last.update(sent_before=before, sent=sent(), received=received)
        return before == last["sent"] == received

    try:
        wait_until(quiet, timeout, interval=0.0)
    except AssertionError as exc:
        raise AssertionError(f"delivery did not settle: {last}") from exc


@contextlib.contextmanager
def no_batch_in_flight(
    sim: SimProcess,
    collector: CollectorProcess,
    receivers: dict[str | None, Any],
    sources: Iterable[str],
) -> Iterator[None]:
    """Hold every page back (Graph answers 503) while the body stops a receiver.

    Plain syslog cannot tell bytes a dying receiver never read from bytes it stored (README,
    "Delivery guarantee"), so a receiver stopped while a batch is in flight may lose it, and
    a test of what the collector does once the receiver is gone would fail by chance. Each
    source fetches, sends, then fetches again, so once every source has had a 503 and
    delivery to each receiver (keyed by sink name; None for every sink) is quiet, no batch
    is on its way. The 503s stop when the body ends.
    """
    names = list(sources)
    sim.set_faults(graph_503=1_000_000, graph_503_retry_after=0.2)
    try:
        wait_until(
            lambda: all(
                collector.metric("siem_exporter_api_requests_total", source=name, code="503") > 0
                for name in names
            ),
            timeout=30,
        )
        for sink, receiver in receivers.items():
            wait_for_quiet_delivery(collector, receiver, names, sink=sink)
        yield
    finally:
        sim.set_faults(graph_503=0)


@contextlib.contextmanager
def start_collector(
    config: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> Iterator[CollectorProcess]:
    """``python -m exporter run --config`` with ``config`` written to a file; killed at the end."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log_path = tmp_path / f"collector-{time.monotonic_ns()}.log"
    metrics_port = int(config["metrics"]["listen"].rpartition(":")[2])
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    collector = CollectorProcess(process, metrics_port, log_path)
    try:
        yield collector
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def secret_env(sim: SimProcess) -> dict[str, str]:
    """The environment that carries the simulator's client secret into ``${GRAPH_CLIENT_SECRET}``."""
    return {"GRAPH_CLIENT_SECRET": sim.client_secret}

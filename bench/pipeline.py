"""The pipeline benchmark: simulated Graph over HTTPS -> the real collector -> a TCP receiver
(plain syslog, or RELP with ``--protocol relp``, every message acknowledged).

Three real processes, as in production: the simulated tenant (a child process holding a
custom :class:`~exporter.sim.Scenario` whose whole history of N sign-ins is visible and
frozen, its request budget lifted, each event's JSON kept after a warm-up pass so the
simulator is not a busy neighbour of the collector on a small machine), the collector (``python -m exporter run`` with
``page_size: 1000`` and a lifted budget) and, in this process, a syslog receiver that only
counts octet-counted frames and their ids, so the receiver is never the bottleneck.

Each run starts a fresh collector with an empty ledger, which drains the N events in one
poll. Measured per run: wall time from launch to the last frame, collector CPU seconds
(``/proc/PID/stat``), peak RSS (``VmHWM``), the ledger on disk (``state.db`` + WAL), and
whether every event arrived exactly once. The baseline, measured in the same run against the
same sim, each run before a collector run: the same pages fetched and parsed directly with
``requests``, no collector. The collector's wall time is read against it, and its own CPU
(TLS, inflate and ``json.loads``, work of the collector's kind) is the yardstick of the
machine's speed: on a shared host that speed moves by a fifth or more between runs, the
collector's CPU over the baseline client's much less.

    python -m bench.pipeline [--events N] [--runs R] [--tenant-scale] [--protocol relp] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import yaml

from bench.common import (
    RESULTS_DIR,
    cpu_seconds,
    file_bytes,
    median,
    peak_rss_bytes,
    write_table,
)
from exporter.relp import CLOSE, OPEN, SYSLOG, FrameParser, encode_frame
from exporter.sim.token import client_credentials_token

HISTORY_SECONDS = 3600.0
PAGE_SIZE = 1000
LIFTED_BUDGET = [100_000, 10]
TARGET_EVENTS_PER_CPU_SECOND = 20_000  # sign-ins of 1.9 kB
TENANT_SCALE_TARGET_EVENTS_PER_CPU_SECOND = 15_000  # issue 14: sign-ins of 11.5 kB
TENANT_SCALE_TARGET_PEAK_RSS = 150e6  # issue 14: pages of 1000 sign-ins of 11.5 kB
_ID_FIELD = b'"id":"'
_GUID_LENGTH = 36


@dataclass(frozen=True)
class SimInfo:
    """What the sim child announces: where it listens, what to trust, how many events exist."""

    base_url: str
    ca_file: str
    tenant_id: str
    client_id: str
    client_secret: str
    visible: int
    pid: int


def _serve_sim(
    events: int, workdir: str, tenant_scale: bool, conn: multiprocessing.connection.Connection
) -> None:
    """Child process: a frozen tenant whose ``events`` sign-ins lie within the last hour.

    Lateness is at most 0.1 s and the tenant is frozen a moment after start, so nothing
    appears or changes while the collector drains: each run sees exactly the same pages.
    """
    from exporter.sim import Scenario, SimulatedTenant
    from exporter.sim.timeline import LatenessBand

    scenario = Scenario(
        name="bench",
        signins_rate=events / HISTORY_SECONDS,
        directory_audits_rate=0.001,
        history=HISTORY_SECONDS,
        lateness=(LatenessBand(1.0, 0.05, 0.1),),
        max_lateness=0.1,
        tenant_scale_signins=tenant_scale,
        keep_encoded_events=True,
    )
    tenant = SimulatedTenant(scenario, Path(workdir))
    tenant.start("127.0.0.1", 0)
    tenant.set_faults(budget=LIFTED_BUDGET)
    time.sleep(0.2)
    frozen_at = tenant.freeze()
    visible = sum(1 for e in tenant.truth("signins") if e["available_at"] <= frozen_at)
    conn.send(
        {
            "base_url": tenant.base_url,
            "ca_file": str(tenant.ca_file),
            "tenant_id": tenant.tenant_id,
            "client_id": tenant.client_id,
            "client_secret": tenant.client_secret,
            "visible": visible,
        }
    )
    conn.recv()
    tenant.stop()


class SimChild:
    """The sim in a spawned child process, so its CPU is not the collector's or ours."""

    def __init__(self, events: int, workdir: Path, tenant_scale: bool = False) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=_serve_sim, args=(events, str(workdir), tenant_scale, child_conn), daemon=True
        )

    def __enter__(self) -> SimInfo:
        self._process.start()
        if not self._conn.poll(600):
            raise RuntimeError("the simulated tenant did not start within 600 s")
        assert self._process.pid is not None
        return SimInfo(**self._conn.recv(), pid=self._process.pid)

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class FrameCounter:
    """A TCP syslog receiver that counts octet-counted frames and the distinct event ids.

    Parsing is a length prefix and one ``find`` per frame, so it keeps up with any sender
    this machine can run; ids are the sign-in GUIDs, the first ``"id"`` of each message.
    """

    protocol = "tcp"

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self.frames = 0
        self.ids: set[bytes] = set()
        self.first_frame_at: float | None = None
        self.last_frame_at: float | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(client,), daemon=True).start()

    def _read(self, client: socket.socket) -> None:
        buffer = bytearray()
        with client:
            while chunk := client.recv(1 << 20):
                buffer += chunk
                consumed = self._count(buffer)
                del buffer[:consumed]

    def _count(self, buffer: bytearray) -> int:
        """Count the complete frames at the start of ``buffer``; returns the bytes they take."""
        position, ids = 0, []
        while True:
            space = buffer.find(b" ", position, position + 12)
            if space < 0:
                break
            end = space + 1 + int(buffer[position:space])
            if end > len(buffer):
                break
            start = buffer.find(_ID_FIELD, space, end) + len(_ID_FIELD)
            ids.append(bytes(buffer[start : start + _GUID_LENGTH]))
            position = end
        self._record(ids)
        return position

    def _record(self, ids: list[bytes]) -> None:
        if ids:
            now = time.monotonic()
            with self._lock:
                self.frames += len(ids)
                self.ids.update(ids)
                self.first_frame_at = self.first_frame_at or now
                self.last_frame_at = now

    def reset(self) -> None:
        with self._lock:
            self.frames = 0
            self.ids = set()
            self.first_frame_at = self.last_frame_at = None

    def close(self) -> None:
        self._server.close()


class RelpFrameCounter(FrameCounter):
    """The same counter speaking RELP's receiving side: it accepts the session and answers
    every ``syslog`` frame ``200`` at once, so the collector pays for acknowledged delivery
    (framing, the window, waiting for answers) and the receiver is still never the limit."""

    protocol = "relp"
    _OPEN_ANSWER = b"200 OK\nrelp_version=0\nrelp_software=bench\ncommands=syslog"

    def _read(self, client: socket.socket) -> None:
        parser = FrameParser(max_data=1 << 30)
        with client:
            while chunk := client.recv(1 << 20):
                answers, ids = [], []
                for frame in parser.feed(chunk):
                    if frame.command == SYSLOG:
                        start = frame.data.find(_ID_FIELD) + len(_ID_FIELD)
                        ids.append(frame.data[start : start + _GUID_LENGTH])
                        answers.append(encode_frame(frame.txnr, b"rsp", b"200 OK"))
                    elif frame.command == OPEN:
                        answers.append(encode_frame(frame.txnr, b"rsp", self._OPEN_ANSWER))
                    elif frame.command == CLOSE:
                        answers.append(encode_frame(frame.txnr, b"rsp"))
                self._record(ids)
                client.sendall(b"".join(answers))


@dataclass(frozen=True)
class CollectorRun:
    """One collector draining the sim into the receiver."""

    seconds: float
    cpu_seconds: float
    steady_events: int
    steady_cpu_seconds: float
    peak_rss: int
    running_ledger_bytes: int
    closed_ledger_bytes: int
    delivered: int
    distinct: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _collector_config(
    sim: SimInfo, workdir: Path, syslog_port: int, metrics_port: int, protocol: str
) -> Path:
    secret = workdir / "client-secret"
    secret.write_text(sim.client_secret, encoding="utf-8")
    config = {
        "tenant_id": sim.tenant_id,
        "client_id": sim.client_id,
        "client_secret_file": str(secret),
        "authority_host": sim.base_url,
        "graph_url": sim.base_url,
        "ca_bundle": sim.ca_file,
        "sources": [
            {
                "name": "signins",
                "endpoint": "/v1.0/auditLogs/signIns",
                "page_size": PAGE_SIZE,
                "poll_interval": "1h",
                "lookback": "2h",
                "max_lookback": "1d",
            }
        ],
        "state": {"path": str(workdir / "state" / "state.db")},
        "sinks": [
            {
                "type": "syslog",
                "host": "127.0.0.1",
                "port": syslog_port,
                "protocol": protocol,
            }
        ],
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "budget": {"requests": LIFTED_BUDGET[0], "per": f"{LIFTED_BUDGET[1]}s"},
        "log_level": "warning",
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _poll_completed(metrics_port: int) -> bool:
    """The first poll finished: checkpoints and eviction are written, the collector idles."""
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except requests.ConnectionError:
        return False
    for line in text.splitlines():
        if line.startswith("siem_exporter_last_success_timestamp_seconds{"):
            return float(line.rpartition(" ")[2]) > 0
    return False


def run_collector(
    sim: SimInfo, receiver: FrameCounter, workdir: Path, timeout: float
) -> CollectorRun:
    """Launch a collector with an empty ledger and wait until it delivered and completed the poll."""
    workdir.mkdir(parents=True)
    metrics_port = _free_port()
    config = _collector_config(sim, workdir, receiver.port, metrics_port, receiver.protocol)
    receiver.reset()
    with open(workdir / "collector.log", "wb") as log:
        launched = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    first_page: tuple[int, float] | None = None  # frames and CPU once a page was delivered
    try:
        deadline = launched + timeout
        while receiver.frames < sim.visible or not _poll_completed(metrics_port):
            if first_page is None and receiver.frames >= PAGE_SIZE:
                first_page = (receiver.frames, cpu_seconds(process.pid))
            if process.poll() is not None:
                raise RuntimeError(f"collector exited with {process.returncode}, see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"collector delivered {receiver.frames} of {sim.visible} in {timeout} s"
                )
            time.sleep(0.02)
        assert receiver.last_frame_at is not None
        state = workdir / "state" / "state.db"
        ledger_files = (state, state.with_name("state.db-wal"))
        seconds = receiver.last_frame_at - launched
        used, peak, running = (
            cpu_seconds(process.pid),
            peak_rss_bytes(process.pid),
            file_bytes(*ledger_files),
        )
        process.send_signal(signal.SIGTERM)
        if process.wait(timeout=60) != 0:
            raise RuntimeError(f"collector exited with {process.returncode} on SIGTERM")
        frames_before, cpu_before = first_page or (0, 0.0)
        return CollectorRun(
            seconds=seconds,
            cpu_seconds=used,
            steady_events=receiver.frames - frames_before,
            steady_cpu_seconds=used - cpu_before,
            peak_rss=peak,
            running_ledger_bytes=running,
            closed_ledger_bytes=file_bytes(*ledger_files),
            delivered=receiver.frames,
            distinct=len(receiver.ids),
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class FetchRun:
    """The baseline: the same pages fetched and parsed directly, no collector."""

    seconds: float
    events: int
    sim_cpu_seconds: float
    client_cpu_seconds: float  # this thread's: requests, TLS, inflate, json.loads


def fetch_directly(sim: SimInfo) -> FetchRun:
    """Token, then every page of the same query, following ``@odata.nextLink``, with requests."""
    session = requests.Session()
    token = client_credentials_token(sim, session)
    headers = {"Authorization": f"Bearer {token}"}
    start = datetime.fromtimestamp(time.time() - 2 * HISTORY_SECONDS, UTC)
    query = urlencode(
        {"$filter": f"createdDateTime ge {start:%Y-%m-%dT%H:%M:%SZ}", "$top": str(PAGE_SIZE)}
    )
    url: str | None = f"{sim.base_url}/v1.0/auditLogs/signIns?{query}"
    events = 0
    sim_cpu = cpu_seconds(sim.pid)
    client_cpu = time.thread_time()
    began = time.monotonic()
    while url is not None:
        response = session.get(url, headers=headers, verify=sim.ca_file, timeout=60)
        response.raise_for_status()
        page: dict[str, Any] = response.json()
        events += len(page["value"])
        url = page.get("@odata.nextLink")
    seconds = time.monotonic() - began
    client_cpu = time.thread_time() - client_cpu
    session.close()
    return FetchRun(seconds, events, cpu_seconds(sim.pid) - sim_cpu, client_cpu)


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


def benchmark(
    events: int,
    runs: int,
    results_dir: Path,
    timeout: float,
    name: str = "pipeline",
    tenant_scale: bool = False,
    protocol: str = "tcp",
) -> dict[str, float]:
    """Run the baseline and the collector ``runs`` times each; write the table; return medians."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workdir = Path(tmp)
        receiver = RelpFrameCounter() if protocol == "relp" else FrameCounter()
        try:
            with SimChild(events, workdir / "sim", tenant_scale) as sim:
                fetch_directly(sim)  # a warm-up pass: the sim renders each event once
                fetches, collected = [], []
                for n in range(runs):  # interleaved: the yardstick sees the machine they saw
                    fetches.append(fetch_directly(sim))
                    collected.append(run_collector(sim, receiver, workdir / f"run-{n}", timeout))
        finally:
            receiver.close()
    visible = sim.visible
    for run in collected:
        if run.delivered != visible or run.distinct != visible:
            raise RuntimeError(
                f"{visible} events generated, {run.delivered} delivered, {run.distinct} distinct"
            )
    if any(fetch.events != visible for fetch in fetches):
        raise RuntimeError(f"the direct fetch did not return all {visible} events")
    fetch_seconds = median(f.seconds for f in fetches)
    sim_cpu = median(f.sim_cpu_seconds for f in fetches)
    client_cpu = median(f.client_cpu_seconds for f in fetches)
    seconds = median(r.seconds for r in collected)
    cpu = median(r.cpu_seconds for r in collected)
    figures = {
        "events": float(visible),
        "fetch_events_per_second": visible / fetch_seconds,
        "events_per_second": visible / seconds,
        "events_per_cpu_second": visible / cpu,
        "steady_events_per_cpu_second": median(
            r.steady_events / r.steady_cpu_seconds for r in collected
        ),
        "cpu_seconds_per_100k": cpu * 100_000 / visible,
        "sim_cpu_seconds_per_100k": sim_cpu * 100_000 / visible,
        "client_cpu_seconds_per_100k": client_cpu * 100_000 / visible,
        "collector_to_client_cpu": cpu / client_cpu,
        "peak_rss_bytes": median(r.peak_rss for r in collected),
        "ledger_bytes_per_million": median(r.closed_ledger_bytes for r in collected)
        * 1e6
        / visible,
        "running_ledger_bytes": median(r.running_ledger_bytes for r in collected),
    }
    per_core = figures["events_per_cpu_second"]
    peak_rss = figures["peak_rss_bytes"]
    if tenant_scale:
        per_core_target = TENANT_SCALE_TARGET_EVENTS_PER_CPU_SECOND
        rss_target = f"< {_mb(TENANT_SCALE_TARGET_PEAK_RSS)} at 11.5 kB: " + (
            "met" if peak_rss < TENANT_SCALE_TARGET_PEAK_RSS else "not met"
        )
    else:
        per_core_target, rss_target = TARGET_EVENTS_PER_CPU_SECOND, ""
    rows = [
        ("events delivered (each exactly once)", f"{visible:,}", "", ""),
        (
            "baseline: direct fetch + parse, events/s",
            f"{figures['fetch_events_per_second']:,.0f}",
            "1.00",
            "",
        ),
        (
            "collector end to end, events/s (wall, launch to last frame)",
            f"{figures['events_per_second']:,.0f}",
            f"{figures['events_per_second'] / figures['fetch_events_per_second']:.2f}",
            "",
        ),
        (
            "collector events per CPU-second (per core)",
            f"{per_core:,.0f}",
            "",
            f"≥ {per_core_target:,}{' at 11.5 kB' if tenant_scale else ''}: "
            + ("met" if per_core >= per_core_target else "not met"),
        ),
        (
            "the same after the first page (start-up, imports and token left out)",
            f"{figures['steady_events_per_cpu_second']:,.0f}",
            "",
            "",
        ),
        ("collector CPU-seconds per 100k events", f"{figures['cpu_seconds_per_100k']:.2f}", "", ""),
        (
            "sim CPU-seconds per 100k events served (baseline)",
            f"{figures['sim_cpu_seconds_per_100k']:.2f}",
            "",
            "",
        ),
        (
            "baseline client CPU-seconds per 100k events (requests, TLS, inflate, json.loads)",
            f"{figures['client_cpu_seconds_per_100k']:.2f}",
            "",
            "",
        ),
        (
            "collector CPU / baseline client CPU, the same runs interleaved",
            f"{figures['collector_to_client_cpu']:.3f}",
            "",
            "",
        ),
        ("collector peak RSS (VmHWM)", _mb(peak_rss), "", rss_target),
        (
            "ledger on disk per million entries (after shutdown: WAL checkpointed)",
            _mb(figures["ledger_bytes_per_million"]),
            "",
            f"< 100 MB: {'met' if figures['ledger_bytes_per_million'] < 100e6 else 'not met'}",
        ),
        (
            "ledger on disk while running (state.db + WAL, absolute)",
            _mb(figures["running_ledger_bytes"]),
            "",
            "",
        ),
    ]
    notes = [
        f"Medians of {runs} runs of each, measured in the same run on the same frozen sim "
        f"({visible:,} sign-ins of about {'11.8' if tenant_scale else '1.9'} kB, "
        f"pages of {PAGE_SIZE}, budget lifted, sink protocol {protocol}); "
        "each collector run starts with an empty ledger. Ratio: against the baseline. "
        "Per core: events per CPU-second of the collector process (utime + stime), from "
        "launch; the line after it counts from the moment a first page was delivered, as a "
        "pod that has run for a while spends it (a once-only start-up of about 0.4 CPU-s is "
        "a few per cent of a short run). The baseline client's CPU is measured in the same "
        "runs, interleaved with the collector's: their ratio is what stays put when the "
        "shared machine's speed moves.",
        "Command: `python -m bench.pipeline "
        + f"--events {events} --runs {runs}{' --tenant-scale' if tenant_scale else ''}"
        + f"{' --protocol relp' if protocol == 'relp' else ''}`.",
    ]
    write_table(
        name,
        ("measure", "value", "ratio to baseline", "target"),
        rows,
        notes,
        results_dir,
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="sign-ins to drain")
    parser.add_argument("--runs", type=int, default=3, help="runs of each, for medians")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per collector run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="5000 events, 1 run, written to pipeline-smoke.md: does it still work?",
    )
    parser.add_argument(
        "--tenant-scale",
        action="store_true",
        help="sign-ins of about 11.5 KB, as a real tenant's, instead of bare 2 KB ones",
    )
    parser.add_argument(
        "--protocol",
        choices=("tcp", "relp"),
        default="tcp",
        help="the sink's protocol: plain syslog over TCP, or RELP (each message acknowledged)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.runs, args.timeout = 5000, 1, 120.0
    name = "pipeline-smoke" if args.smoke else "pipeline"
    if args.tenant_scale:
        name += "-tenant-scale"
    if args.protocol == "relp":
        name += "-relp"
    benchmark(
        args.events,
        args.runs,
        args.results_dir,
        args.timeout,
        name,
        args.tenant_scale,
        args.protocol,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

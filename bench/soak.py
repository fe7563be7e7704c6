"""Soak: demo traffic for N minutes under random faults; nothing lost, nothing twice, flat memory.

    python -m bench.soak --minutes 30          # the default; run from the repository root

Three real processes and a real SIEM: the simulated tenant (``siem-exporter simulate
--scenario demo``: late and out-of-order events up to 12 minutes, Graph's real budget of
5 requests per 10 s), the collector as shipped (``python -m exporter run``) and rsyslogd
(tests/rsyslog.py). Every 15 to 45 seconds one fault, picked at random, hits the run:
token failures, a revoked token, 503s with Retry-After, 504s, 500s, a 429 storm (the
tenant's budget cut to 1 request per 10 s for a while), truncated pages, or an rsyslogd
restart. The collector's RSS is sampled every 10 s.

At the end the tenant is frozen, the collector completes a poll that began after the
freeze and stops, and what rsyslog received is compared with the tenant's ground truth.
Exit status 0 only when nothing was lost and nothing was delivered twice. A table of
RSS over time goes to stdout and ``bench/results/soak.md``. Not run in CI (it takes
minutes); ``--minutes 0.5`` is a quick look.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import RESULTS_DIR, write_table
from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    CollectorProcess,
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    start_collector,
    start_sim,
    wait_until,
)

SOURCES = ("signins", "directoryAudits")
LOOKBACK = "15m"  # the demo scenario's events are at most 12 minutes late
LOOKBACK_SECONDS = 15 * 60.0
SAMPLE_EVERY = 10.0


def rss_bytes(pid: int) -> int:
    """The resident set size of a process right now (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS in /proc/{pid}/status")


@dataclass
class Soak:
    """One run's moving parts and what it observed."""

    sim: SimProcess
    receiver: RsyslogReceiver
    collector: CollectorProcess
    rng: random.Random
    faults: Counter[str] = field(default_factory=Counter)
    rss: list[tuple[float, int]] = field(default_factory=list)

    def inject(self) -> str:
        """Hit the run with one random fault; returns its name."""
        kinds: dict[str, Callable[[], None]] = {
            "token failures": lambda: self.sim.set_faults(token_failures=self.rng.randint(1, 4)),
            "revoked token": lambda: self.sim.set_faults(revoke_tokens=True),
            "503 with Retry-After": lambda: self.sim.set_faults(
                graph_503=self.rng.randint(1, 5), graph_503_retry_after=self.rng.uniform(0.5, 4)
            ),
            "504": lambda: self.sim.set_faults(graph_504=self.rng.randint(1, 4)),
            "500": lambda: self.sim.set_faults(graph_500=self.rng.randint(1, 3)),
            "429 storm": self._throttle_storm,
            "truncated pages": lambda: self.sim.set_faults(malformed_pages=self.rng.randint(1, 4)),
            "SIEM restart": self._restart_siem,
        }
        name = self.rng.choice(sorted(kinds))
        kinds[name]()
        self.faults[name] += 1
        return name

    def _throttle_storm(self) -> None:
        self.sim.set_faults(budget=[1, 10])
        self.pause(self.rng.uniform(10, 30))
        self.sim.set_faults(budget=[5, 10])

    def _restart_siem(self) -> None:
        self.receiver.stop()
        self.pause(self.rng.uniform(3, 20))
        self.receiver.start()

    def pause(self, seconds: float) -> None:
        """Sleep, still sampling memory and watching the collector."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.collector.process.poll() is not None:
                raise SystemExit(f"the collector exited: {self.collector.logs()[-2000:]}")
            self.sample()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def sample(self) -> None:
        now = time.monotonic()
        if not self.rss or now - self.rss[-1][0] >= SAMPLE_EVERY:
            self.rss.append((now, rss_bytes(self.collector.process.pid)))


def polled_after(collector: CollectorProcess, moment: float) -> bool:
    response = collector.get("/metrics")
    if response is None:
        return False
    return all(
        metric_value(response.text, "siem_exporter_last_success_timestamp_seconds", source=s)
        > moment
        for s in SOURCES
    )


def settle(receiver: RsyslogReceiver, quiet: float = 60.0, timeout: float = 900.0) -> None:
    """Wait until nothing new reaches the SIEM for ``quiet`` seconds.

    Stretches the fresh tier missed while faults were injected are fetched by catch-up
    queries on leftover budget, after the next fresh poll: judge only once they are done.
    """
    deadline = time.monotonic() + timeout
    count, since = len(receiver.messages()), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(5)
        now_count = len(receiver.messages())
        if now_count != count:
            count, since = now_count, time.monotonic()


def in_scope(event: dict[str, float], started: float, frozen_at: float) -> bool:
    """Visible by the freeze, and inside the first window or visible only after the start."""
    return event["available_at"] <= frozen_at and (
        event["event_time"] >= started - LOOKBACK_SECONDS + 2 or event["available_at"] > started
    )


def run(minutes: float, seed: int, results_dir: Path) -> int:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        workdir = Path(directory)
        with start_sim(workdir, scenario="demo") as sim, RsyslogReceiver() as receiver:
            config = collector_config(
                sim,
                workdir,
                syslog_port=receiver.port,
                metrics_port=free_port(),
                lookback=LOOKBACK,
                poll_interval="5s",
                page_size=1000,
            )
            config["budget"] = {"requests": 5, "per": "10s"}
            with start_collector(config, workdir) as collector:
                collector.wait_ready(timeout=180)
                started = time.time()
                soak = Soak(sim, receiver, collector, rng)
                began = time.monotonic()
                end = began + minutes * 60
                next_report = began + 60
                while time.monotonic() < end:
                    soak.pause(min(rng.uniform(15, 45), max(0.0, end - time.monotonic())))
                    if time.monotonic() >= end:
                        break
                    fault = soak.inject()
                    if time.monotonic() >= next_report:
                        next_report += 60
                        print(
                            f"[{(time.monotonic() - began) / 60:5.1f} min] received "
                            f"{len(receiver.messages()):7d}  rss "
                            f"{soak.rss[-1][1] / 2**20:6.1f} MiB  last fault: {fault}",
                            flush=True,
                        )
                sim.set_faults(budget=[5, 10])
                frozen_at = sim.freeze()
                wait_until(lambda: polled_after(collector, frozen_at + 1), timeout=600)
                settle(receiver)
                soak.sample()
                exit_code = collector.terminate(timeout=120)
                logs = collector.logs()
            received = receiver.messages()
            truth = {source: sim.truth(source) for source in SOURCES}
    return report(soak, received, truth, started, frozen_at, exit_code, logs, results_dir)


def report(
    soak: Soak,
    received: list[tuple[str, str]],
    truth: dict[str, list[dict[str, float]]],
    started: float,
    frozen_at: float,
    exit_code: int,
    logs: str,
    results_dir: Path,
) -> int:
    delivered: dict[str, Counter[str]] = {source: Counter() for source in SOURCES}
    for msgid, msg in received:
        delivered[msgid][json.loads(msg)["id"]] += 1
    lost = duplicates = expected_total = 0
    for source in SOURCES:
        expected = {e["id"] for e in truth[source] if in_scope(e, started, frozen_at)}
        expected_total += len(expected)
        missing = expected - set(delivered[source])
        lost += len(missing)
        for event in truth[source]:
            if event["id"] in missing:
                print(
                    f"lost {source}: event time {event['event_time'] - started:+.0f} s, "
                    f"visible {event['available_at'] - started:+.0f} s after the start",
                    flush=True,
                )
        duplicates += sum(n - 1 for n in delivered[source].values() if n > 1)
    began = soak.rss[0][0]
    rows = [
        (f"{(at - began) / 60:.1f}", f"{rss / 2**20:.1f}")
        for index, (at, rss) in enumerate(soak.rss)
        if index % 6 == 0 or index == len(soak.rss) - 1
    ]
    quarter = max(1, len(soak.rss) // 4)
    first = sum(r for _, r in soak.rss[quarter : 2 * quarter]) / max(
        1, len(soak.rss[quarter : 2 * quarter])
    )
    last = sum(r for _, r in soak.rss[-quarter:]) / quarter
    notes = [
        f"Faults injected: {', '.join(f'{name} x{n}' for name, n in sorted(soak.faults.items()))}.",
        f"Events expected {expected_total}, received {len(received)}: lost {lost}, "
        f"duplicates {duplicates}. Collector exit status {exit_code}; "
        f"tracebacks in its log: {logs.count('Traceback')}.",
        f"RSS, mean of the second quarter {first / 2**20:.1f} MiB, of the last quarter "
        f"{last / 2**20:.1f} MiB ({(last - first) / first * 100:+.1f} %).",
    ]
    write_table("soak", ("minute", "collector RSS (MiB)"), rows, notes, results_dir)
    ok = lost == 0 and duplicates == 0 and exit_code == 0
    print("OK: nothing lost, nothing duplicated" if ok else "FAILED", flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="fault sequence seed")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    print(f"soak: {args.minutes} min, seed {args.seed}", flush=True)
    return run(args.minutes, args.seed, args.results_dir)


if __name__ == "__main__":
    sys.exit(main())

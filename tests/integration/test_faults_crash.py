"""Fault tests, end to end: the collector killed or stopped while it pages through a burst.

Real processes throughout: ``siem-exporter run`` against ``siem-exporter simulate`` over
HTTPS, into a real rsyslogd. A burst is a few hundred sign-ins injected at once, so a small
``page_size`` makes the collector spend many pages delivering new events; the signal lands
while it does. Expectations come from the simulator's ground truth, never from the collector.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.rsyslog import RsyslogReceiver
from tests.stack import (
    CollectorProcess,
    SimProcess,
    collector_config,
    free_port,
    metric_value,
    no_batch_in_flight,
    owed_ids,
    received_ids,
    start_collector,
    wait_for_polls_after,
    wait_until,
)

SOURCES = ("signins", "directoryAudits")
LOOKBACK = "3m"
LOOKBACK_SECONDS = 180.0
PAGE_SIZE = 10
RESTART_PAGE_SIZE = 100
BURST = 1500
BUDGET = 200  # requests per 10 s, on both sides: a 3-minute window of 10-event pages in ~5 s


def sent(collector: CollectorProcess, source: str) -> float:
    """``events_sent_total`` of one source; 0 while the listener is not up."""
    response = collector.get("/metrics")
    if response is None:
        return 0.0
    return metric_value(
        response.text, "siem_exporter_events_sent_total", source=source, sink="syslog"
    )


def burst(sim: SimProcess, count: int) -> set[str]:
    """``count`` new sign-ins, visible at once (a backlog released after an incident, say)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    objects = [
        {"id": str(uuid.uuid4()), "createdDateTime": now, "userPrincipalName": f"burst{n}@x"}
        for n in range(count)
    ]
    response = sim._call("POST", "inject", params={"source": "signins"}, json=objects)
    assert response == {"injected": True}
    return {o["id"] for o in objects}


def config_for(sim: SimProcess, tmp_path: Path, receiver: RsyslogReceiver) -> dict[str, Any]:
    config = collector_config(
        sim,
        tmp_path,
        syslog_port=receiver.port,
        metrics_port=free_port(),
        lookback=LOOKBACK,
        page_size=PAGE_SIZE,
    )
    config["budget"] = {"requests": BUDGET, "per": "10s"}
    sim.set_faults(budget=[BUDGET, 10])
    return config


def wait_for_first_polls(collector: CollectorProcess) -> None:
    """Every source completed its first poll: what follows is steady state."""
    collector.wait_ready(timeout=90)
    wait_until(
        lambda: all(
            metric_value(
                collector.metrics(), "siem_exporter_last_success_timestamp_seconds", source=s
            )
            > 0
            for s in SOURCES
        ),
        timeout=120,
    )


def signal_mid_burst(sim: SimProcess, collector: CollectorProcess, signum: int) -> set[str]:
    """Release a burst, send ``signum`` once a quarter of it went out; the burst's ids."""
    baseline = sent(collector, "signins")
    ids = burst(sim, BURST)
    wait_until(
        lambda: sent(collector, "signins") >= baseline + BURST // 4, timeout=60, interval=0.02
    )
    collector.process.send_signal(signum)
    return ids


def finish_on_same_state(
    sim: SimProcess, config: dict[str, Any], workdir: Path
) -> tuple[float, str]:
    """Restart on the same state, freeze the world, let every source catch up; (frozen, metrics).

    The restart reads pages ten times larger: small pages only matter for where the signal
    landed, and the ledger, not the page size, decides what is sent again.
    """
    restart = {
        **config,
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "sources": [{**source, "page_size": RESTART_PAGE_SIZE} for source in config["sources"]],
    }
    with start_collector(restart, workdir) as collector:
        collector.wait_ready(timeout=90)
        frozen_at = sim.freeze()
        wait_for_polls_after(collector, SOURCES, frozen_at, timeout=120)
        metrics = collector.metrics()
        assert collector.terminate() == 0
    return frozen_at, metrics


def assert_delivered(
    sim: SimProcess,
    delivered: dict[str, Counter[str]],
    started: float,
    frozen_at: float,
    *,
    max_repeats: int,
) -> None:
    """Every event each source owed arrived, and at most ``max_repeats`` of them twice."""
    for source in SOURCES:
        owed = owed_ids(sim.truth(source), started, frozen_at, LOOKBACK_SECONDS)
        missing = owed - set(delivered[source])
        assert not missing, f"{len(missing)} of {len(owed)} {source} events never delivered"
        repeats = sum(n - 1 for n in delivered[source].values() if n > 1)
        assert repeats <= max_repeats, f"{source}: {repeats} repeats, more than {max_repeats}"


def test_sigkill_mid_pagination_repeats_at_most_one_page_per_source(
    sim: SimProcess, tmp_path: Path
) -> None:
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            wait_for_first_polls(collector)
            burst_ids = signal_mid_burst(sim, collector, signal.SIGKILL)
            assert collector.process.wait(timeout=10) == -signal.SIGKILL
        unsent = burst_ids - set(received_ids(receiver, SOURCES)["signins"])
        assert unsent, "the whole burst went out before the kill: the test proves nothing"
        frozen_at, _ = finish_on_same_state(sim, config, tmp_path)
        delivered = received_ids(receiver, SOURCES)

    assert_delivered(sim, delivered, started, frozen_at, max_repeats=PAGE_SIZE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_stop_signal_during_a_burst_exits_promptly_and_repeats_nothing(
    sim: SimProcess, tmp_path: Path, signum: int
) -> None:
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            wait_for_first_polls(collector)
            burst_ids = signal_mid_burst(sim, collector, signum)
            signalled = time.monotonic()
            status = collector.process.wait(timeout=30)
            took = time.monotonic() - signalled
        assert status == 0
        assert took < 10, f"shutdown took {took:.1f}s"
        unsent = burst_ids - set(received_ids(receiver, SOURCES)["signins"])
        assert unsent, "the whole burst went out before the signal: the test proves nothing"
        frozen_at, _ = finish_on_same_state(sim, config, tmp_path)
        delivered = received_ids(receiver, SOURCES)

    assert_delivered(sim, delivered, started, frozen_at, max_repeats=0)


def test_sigkill_during_the_first_poll_loses_nothing_of_the_first_window(
    sim: SimProcess, tmp_path: Path
) -> None:
    """The first poll pages back through the whole lookback, newest first; killed halfway and
    restarted later, the collector still owes the oldest events of that first window."""
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            wait_until(lambda: sent(collector, "signins") >= 200, timeout=90, interval=0.02)
            first_poll_done = metric_value(
                collector.metrics(),
                "siem_exporter_last_success_timestamp_seconds",
                source="signins",
            )
            collector.process.send_signal(signal.SIGKILL)
            assert collector.process.wait(timeout=10) == -signal.SIGKILL
        assert first_poll_done == 0, "the first poll completed before the kill"
        time.sleep(10)  # the restart's own lookback no longer reaches the first window's start
        frozen_at, _ = finish_on_same_state(sim, config, tmp_path)
        delivered = received_ids(receiver, SOURCES)

    assert_delivered(sim, delivered, started, frozen_at, max_repeats=PAGE_SIZE)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stop_during_a_siem_outage_leaves_the_unsent_batch_owed(
    sim: SimProcess, tmp_path: Path, signum: int
) -> None:
    """A batch still retrying against a stopped SIEM was never delivered.

    A graceful stop (SIGTERM cuts the retry short) or a crash (SIGKILL) in that state must
    leave its events unrecorded, so the restarted collector sends them once the SIEM is back.
    """
    with RsyslogReceiver() as receiver:
        config = config_for(sim, tmp_path, receiver)
        with start_collector(config, tmp_path) as collector:
            started = time.time()
            wait_for_first_polls(collector)
            with no_batch_in_flight(sim, collector, {None: receiver}, SOURCES):
                receiver.stop()
            errors = collector.metric("siem_exporter_sink_errors_total", sink="syslog")
            burst_ids = burst(sim, BURST)
            wait_until(
                lambda: (
                    collector.metric("siem_exporter_sink_errors_total", sink="syslog") >= errors + 2
                ),
                timeout=60,
            )
            collector.process.send_signal(signum)
            status = collector.process.wait(timeout=30)
        assert status == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
        assert burst_ids - set(received_ids(receiver, SOURCES)["signins"]), (
            "the burst reached the SIEM before the outage: the test proves nothing"
        )
        receiver.start()
        frozen_at, _ = finish_on_same_state(sim, config, tmp_path)
        delivered = received_ids(receiver, SOURCES)

    crashed = signum == signal.SIGKILL
    assert_delivered(sim, delivered, started, frozen_at, max_repeats=PAGE_SIZE if crashed else 0)
    assert burst_ids <= set(delivered["signins"])

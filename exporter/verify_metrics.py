"""``verify --metrics-file``: the audit's result as a Prometheus text file.

A scheduled audit (cron, a Kubernetes CronJob) has no one reading its report: its result
must reach the monitoring that already watches the collector, without a Pushgateway. The
file is in the format node-exporter's textfile collector reads (name it ``*.prom``), and
is written whole under a temporary name and renamed, so a scrape never sees half of it.
An alert can then fire on missing events, on an audit that proved nothing, and (from the
timestamp) on an audit that stopped running.

Where no node-exporter reads the file (the Helm chart's CronJob writes it onto the state
volume), the collector serves it: with ``metrics.verify_file`` set, :class:`VerifyResultFile`
adds the file's ``siem_exporter_verify_*`` series to ``/metrics`` at every scrape.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter.metrics import PREFIX
from exporter.verify_compare import SourceResult

log = logging.getLogger(__name__)
VERIFY_PREFIX = f"{PREFIX}_verify_"


def result_registry(
    status: int, results: Sequence[SourceResult], finished_at: float
) -> CollectorRegistry:
    """The gauges of one audit; ``results`` is empty when it ended before comparing."""
    registry = CollectorRegistry()
    Gauge(
        f"{PREFIX}_verify_exit_status",
        "verify's exit status: 0 nothing missing, 1 something missing or nothing proven, "
        "2 bad config or arguments",
        registry=registry,
    ).set(status)
    Gauge(
        f"{PREFIX}_verify_last_run_timestamp_seconds",
        "When verify finished (Unix time)",
        registry=registry,
    ).set(finished_at)
    in_api = Gauge(
        f"{PREFIX}_verify_api_events",
        "Events the API holds for the audited stretch",
        ["source"],
        registry=registry,
    )
    missing = Gauge(
        f"{PREFIX}_verify_missing_events",
        "Events of the stretch missing from the SIEM export (without one: from the ledger)",
        ["source"],
        registry=registry,
    )
    late = Gauge(
        f"{PREFIX}_verify_late_arrivals",
        "Deliveries of the stretch, per the ledger, recorded more than one poll interval after "
        "their event time: what a plain poller would have lost (unknown times not counted)",
        ["source"],
        registry=registry,
    )
    for result in results:
        in_api.labels(result.source).set(result.in_api)
        missing.labels(result.source).set(len(result.missing))
        if result.late is not None:
            late.labels(result.source).set(result.late.late)
    return registry


def write_result(
    path: Path, status: int, results: Sequence[SourceResult], finished_at: float
) -> int:
    """Write the file; the exit status, 1 instead of 0 when it could not be written (a
    scheduled audit whose result nobody can see has proven nothing)."""
    try:
        write_to_textfile(str(path), result_registry(status, results, finished_at))
    except OSError as exc:
        print(
            f"siem-exporter: --metrics-file: cannot write {path}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return max(status, 1)
    return status


class VerifyResultFile(Collector):
    """The last audit's result, read from ``path`` at each scrape. Only ``siem_exporter_verify_*``
    families are served, so the file can never shadow or duplicate a collector metric; no
    file yet (no audit has run) serves nothing, and an unreadable one is logged and skipped,
    so ``/metrics`` keeps answering."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        try:
            text = self.path.read_text(encoding="utf-8")
            families = [
                family
                for family in text_string_to_metric_families(text)
                if family.name.startswith(VERIFY_PREFIX)
            ]
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("metrics.verify_file: cannot read %s: %s", self.path, exc)
            return
        yield from families

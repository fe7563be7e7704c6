"""``siem-exporter verify``: re-read the API for a closed stretch and prove what the SIEM holds.

The I/O around the pure comparison (:mod:`exporter.verify_compare`), the export reader
(:mod:`exporter.verify_export`) and the report (:mod:`exporter.verify_report`):

- The API is re-read with the collector's own Graph client and query (window, filter,
  event types, versions), drawing from a :class:`RequestBudget` limited to a share of the
  family's budget: by default the reserve the collector leaves unplanned, so an audit
  beside a running collector takes no request the collector planned for.
- The ledger is opened read-only and without the process lock (:class:`LedgerReader`),
  so an audit may run beside the collector and can never alter what it audits. Only
  ``--deliver-missing`` takes the lock, because it records what it delivers.
- Before reading, the cost is estimated from the ledger's count for the stretch (or the
  last day), or from the first page, and an audit longer than
  :data:`~exporter.verify_report.CONFIRM_ABOVE` needs ``--yes``.

Exit status: 0 nothing missing, 1 something missing (or the API could not be read, so
nothing is proven), 2 a bad argument or config (one stderr line naming it).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.auth import TokenProvider
from exporter.budget import RequestBudget
from exporter.cli import one_line
from exporter.clock import RealClock
from exporter.components import open_sink
from exporter.config import Config, SourceConfig
from exporter.deadletter import DeadLetters, dead_letter_path
from exporter.delivery import Delivery
from exporter.errors import ExporterError, StateError
from exporter.graph import GraphClient
from exporter.graph_query import GraphSettings
from exporter.https import VerifiedSession, trust_bundle
from exporter.ledger import Ledger, LedgerReader
from exporter.logs import configure_logging, fields
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent, Page, dedupe_key
from exporter.verify_args import ArgumentProblem, Arguments, read_arguments
from exporter.verify_compare import (
    ApiEvent,
    Keying,
    Known,
    LateArrivals,
    SiemSide,
    SourceResult,
    Stretch,
    attribute,
    compare,
    late_arrivals,
    record_keys,
)
from exporter.verify_metrics import write_result
from exporter.verify_report import (
    CONFIRM_ABOVE,
    DAY,
    ExportSummary,
    SourceEstimate,
    describe_estimate,
    events_from_first_page,
    events_in,
    human_duration,
    human_rate,
    needs_confirmation,
    report_json,
    report_text,
    requests_for,
)

log = logging.getLogger(__name__)
EXIT_OK, EXIT_MISSING, EXIT_ARGUMENT = 0, 1, 2
DELIVERY_BATCH = 500


def keying_of(source: SourceConfig) -> Keying:
    settings: GraphSettings = source.settings
    return Keying(source.name, settings.window_field, settings.update_field)


def ledger_side(
    reader: LedgerReader | None, source: SourceConfig, stretch: Stretch
) -> tuple[set[bytes] | None, LateArrivals | None]:
    """The keys the ledger holds for the stretch, and those it holds undated (none from
    Graph, whose events all have times), with how many of the dated arrived late; None
    without a ledger."""
    if reader is None:
        return None, None
    dated = reader.between(source.name, stretch.start, stretch.end)
    late = late_arrivals(dated, source.poll_interval)
    return {key for key, _, _ in dated} | reader.undated(source.name), late


@dataclass
class Reading:
    """One source's re-read under way: its pages, the first taken already for the estimate."""

    source: SourceConfig
    pages: Iterator[Page]
    first: Page | None
    estimate: SourceEstimate


def verify(config: Config, args: argparse.Namespace) -> int:
    """Run the audit; the exit status as the module docstring says, also written to
    ``--metrics-file`` when given."""
    # Logs go to stderr beside the estimate, stdout being the report's; a one-off command
    # shows only what went wrong, unless the config asks for debug.
    configure_logging("debug" if config.log_level == "debug" else "warning", sys.stderr)
    status, results = _audit(config, args)
    if args.metrics_file is not None:
        status = write_result(args.metrics_file, status, results, time.time())
    return status


def _audit(config: Config, args: argparse.Namespace) -> tuple[int, list[SourceResult]]:
    """The exit status and, when the audit got as far as comparing, each source's result."""
    try:
        given = read_arguments(config, args, time.time())
        ledger = _lock_ledger(Path(config.state_path)) if args.deliver_missing else None
    except ArgumentProblem as problem:
        print(f"siem-exporter: {one_line(str(problem))}", file=sys.stderr)
        return EXIT_ARGUMENT, []
    try:
        return Audit(config, given, args).run(ledger)
    except ArgumentProblem as problem:
        print(f"siem-exporter: {one_line(str(problem))}", file=sys.stderr)
        return EXIT_ARGUMENT, []
    except (ExporterError, OSError) as exc:
        log.error("verify failed", extra=fields(error=str(exc)))
        print(
            f"siem-exporter: verify failed, nothing proven: {one_line(str(exc))}", file=sys.stderr
        )
        return EXIT_MISSING, []
    finally:
        if ledger is not None:
            ledger.close()


def _lock_ledger(state: Path) -> Ledger:
    """The ledger with its process lock: --deliver-missing records what it sends."""
    try:
        return Ledger(state)
    except StateError as exc:
        raise ArgumentProblem("--deliver-missing", str(exc)) from None


class Audit:
    """One run of verify: estimate, re-read, compare, report and (asked) deliver."""

    def __init__(
        self,
        config: Config,
        given: Arguments,
        args: argparse.Namespace,
    ) -> None:
        self.config = config
        self.sources = given.sources
        self.stretch = given.stretch
        self.share = given.share
        self.export = given.export
        self.args = args
        self.clock = RealClock()
        self.metrics = ExporterMetrics(CollectorRegistry())
        self.reader = LedgerReader(config.state_path) if Path(config.state_path).exists() else None
        verify_tls = trust_bundle(config.ca_bundle)
        self.http = VerifiedSession(verify_tls, timeout=120.0)
        self.tokens = TokenProvider(config, self.metrics, self.clock, VerifiedSession(verify_tls))
        self.budgets: dict[str, RequestBudget] = {}
        self.ledgers: dict[str, set[bytes] | None] = {}
        self.late: dict[str, LateArrivals | None] = {}
        self.elsewhere = 0  # export records the attribution placed with no audited source
        self.progress = sys.stderr.isatty()

    def rate(self, source: SourceConfig) -> float:
        """Requests per second the audit may send to ``source``'s budget family."""
        budget = self.config.budget_of(source)
        return budget.requests * self.share / budget.per

    def budget(self, source: SourceConfig) -> RequestBudget:
        """One request at a time, evenly spaced: no burst takes a collector's slots at once."""
        family = source.settings.budget_family
        if family not in self.budgets:
            self.budgets[family] = RequestBudget(1, 1.0 / self.rate(source), self.clock)
        return self.budgets[family]

    def run(self, ledger: Ledger | None) -> tuple[int, list[SourceResult]]:
        readings = [self.open_reading(source) for source in self.sources]
        estimates = [r.estimate for r in readings]
        rates = [self.rate_text(r.source) for r in readings]
        sentence = describe_estimate(estimates, self.stretch.end - self.stretch.start, rates)
        if needs_confirmation(estimates) and not self.args.yes:
            raise ArgumentProblem(
                "--yes",
                f"{sentence}; over {human_duration(CONFIRM_ABOVE)}: narrow --from/--to, "
                "raise --budget-share, or add --yes",
            )
        print(f"siem-exporter verify: {sentence}", file=sys.stderr)
        eligible = self.eligible_sides()
        api: dict[str, list[ApiEvent]] = {}
        kept: dict[str, dict[bytes, KeyedEvent]] = {}
        for reading in readings:
            api[reading.source.name], kept[reading.source.name] = self.read(reading, eligible)
        results = self.compare(api)
        delivered = None
        if ledger is not None:
            delivered = self.deliver(results, kept, ledger)
        summary = self.export_summary()
        report = report_json if self.args.json else report_text
        sys.stdout.write(report(self.stretch.start, self.stretch.end, results, summary, delivered))
        if self.args.json:
            sys.stdout.write("\n")
        missing = sum(len(r.missing) for r in results)
        log.info("verify done", extra=fields(missing=missing, delivered=delivered))
        return (EXIT_MISSING if missing else EXIT_OK), results

    def rate_text(self, source: SourceConfig) -> str:
        budget = self.config.budget_of(source)
        return human_rate(budget.requests, budget.per, self.share)

    def open_reading(self, source: SourceConfig) -> Reading:
        """The source's query, and its estimate: from the ledger, else from its first page."""
        stretch, span = self.stretch, self.stretch.end - self.stretch.start
        client = GraphClient(
            self.config.graph_url,
            source,
            self.tokens,
            self.budget(source),
            self.metrics,
            self.clock,
            self.http,
        )
        pages = client.pages(stretch.start, stretch.end)
        now = self.clock.now()
        events: float | None = None
        for sample in (
            Stretch(max(stretch.start, stretch.end - DAY), stretch.end),
            Stretch(now - DAY, now),
        ):
            count = (
                0
                if self.reader is None
                else self.reader.count_between(source.name, sample.start, sample.end)
            )
            if count:
                events = events_in(count, sample.end - sample.start, span)
                break
        first = None
        if events is None:
            first = next(pages)
            times = [e.event_time for e in first.events if e.event_time is not None]
            has_more = len(first.events) >= source.page_size
            events = events_from_first_page(
                len(first.events),
                max(times, default=stretch.end),
                min(times, default=stretch.end),
                stretch.start,
                has_more,
            )
        estimate = SourceEstimate(
            source.name, events, requests_for(events, source.page_size), self.rate(source)
        )
        return Reading(source, pages, first, estimate)

    def eligible_sides(self) -> dict[str, SiemSide]:
        """Per source, every export record that may be its (its MSGID or none), keyed its way.

        An API event none of them matches is missing whatever the attribution decides, so
        the full event is kept for --deliver-missing while the pages stream past.
        """
        sides: dict[str, SiemSide] = {}
        for source in self.sources:
            side = SiemSide()
            if self.export is not None:
                keying = keying_of(source)
                for record in self.export.records:
                    if record.msgid in (None, source.name):
                        side.add(record_keys(record, keying))
            sides[source.name] = side
        return sides

    def read(
        self, reading: Reading, eligible: dict[str, SiemSide]
    ) -> tuple[list[ApiEvent], dict[bytes, KeyedEvent]]:
        """Every event of the stretch, and the full events that may be missing."""
        name = reading.source.name
        side = eligible[name] if self.export is not None else None
        ledger, self.late[name] = ledger_side(self.reader, reading.source, self.stretch)
        self.ledgers[name] = ledger
        found: list[ApiEvent] = []
        kept: dict[bytes, KeyedEvent] = {}
        first = [] if reading.first is None else [reading.first]
        for pages, page in enumerate(itertools.chain(first, reading.pages), start=1):
            for keyed in page.events:
                if keyed.event_time is not None and not self.stretch.holds(keyed.event_time):
                    continue  # the query's whole-second bounds reach a little past the stretch
                event_id = keyed.event.get("id")
                base, _ = dedupe_key(event_id, keyed.event)
                item = ApiEvent(
                    keyed.key,
                    base,
                    event_id if isinstance(event_id, str) else None,
                    keyed.event_time,
                )
                found.append(item)
                held = side.holds(item) if side is not None else item.key in (ledger or ())
                if not held and self.args.deliver_missing:
                    kept[item.key] = keyed
            self.show_progress(reading, pages, len(found))
        if self.progress:
            sys.stderr.write("\n")
        return found, kept

    def show_progress(self, reading: Reading, pages: int, events: int) -> None:
        """One line rewritten in place on a terminal: pages, events, time left at the rate."""
        if not self.progress:
            return
        left = max(reading.estimate.requests - pages, 0) / reading.estimate.rate
        sys.stderr.write(
            f"\r{reading.source.name}: {pages:,} pages, {events:,} events, "
            f"about {human_duration(left)} left   "
        )
        sys.stderr.flush()

    def compare(self, api: dict[str, list[ApiEvent]]) -> list[SourceResult]:
        """Each source's three sets side by side (the export attributed first)."""
        sides: dict[str, SiemSide] | None = None
        if self.export is not None:
            known = {
                name: Known(
                    frozenset({e.key for e in events} | (self.ledgers[name] or set())),
                    frozenset(e.base for e in events),
                )
                for name, events in api.items()
            }
            keyings = [keying_of(s) for s in self.sources]
            sides, self.elsewhere = attribute(self.export.records, keyings, known, self.stretch)
        return [
            compare(
                name,
                events,
                self.ledgers[name],
                None if sides is None else sides[name],
                self.late[name],
            )
            for name, events in api.items()
        ]

    def export_summary(self) -> ExportSummary | None:
        if self.export is None:
            return None
        return ExportSummary(
            path=str(self.args.siem_export),
            format=self.export.format,
            records=len(self.export.records),
            elsewhere=self.elsewhere,
            unreadable=len(self.export.unreadable),
            ids_only=all(r.event is None for r in self.export.records),
        )

    def deliver(
        self, results: list[SourceResult], kept: dict[str, dict[bytes, KeyedEvent]], ledger: Ledger
    ) -> int:
        """Send what the SIEM lacks through the configured sinks, then record it as delivered.

        The same :class:`Delivery` as the collector's: retried until every sink accepts,
        refusals kept in the dead-letter file, and the ledger written only afterwards.
        """
        config = self.config
        delivery = Delivery(
            [open_sink(s) for s in config.sinks],
            self.metrics,
            Health({s.name: s.poll_interval for s in self.sources}),
            self.clock,
            DeadLetters(
                dead_letter_path(config.state_path), config.dead_letter_max_mb * 1024 * 1024
            ),
        )
        sent = 0
        try:
            for result in results:
                batch = [kept[result.source][e.key] for e in result.missing]
                for i in range(0, len(batch), DELIVERY_BATCH):
                    chunk = batch[i : i + DELIVERY_BATCH]
                    delivery.send(result.source, chunk)
                    ledger.record(
                        result.source, [(k.key, k.event_time) for k in chunk], self.clock.now()
                    )
                    sent += len(chunk)
                    log.info(
                        "delivered missing events",
                        extra=fields(source=result.source, events=len(chunk)),
                    )
        finally:
            delivery.close()
        return sent

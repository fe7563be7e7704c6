"""What ``siem-exporter verify`` says: the estimate before it starts, and the report after.

Pure code. The estimate exists because an audit draws from the same request budget as the
collector: a month of sign-ins is tens of thousands of requests, hours at Graph's five
requests per ten seconds, and a user should learn that before starting, not from a
progress line. The report is a table a person reads plus one line per missing event, or
the same as JSON for a script.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.verify_compare import ApiEvent, SourceResult

CONFIRM_ABOVE = 15 * 60.0  # an audit estimated to take longer needs --yes
DAY = 86400.0
_NONE = "-"


@dataclass(frozen=True, slots=True)
class SourceEstimate:
    """What reading one source for the stretch should cost.

    ``rate`` is the requests per second the audit may send to this source's budget family.
    """

    source: str
    events: float
    requests: int
    rate: float

    @property
    def seconds(self) -> float:
        return self.requests / self.rate


def events_in(count: int, sample_seconds: float, span_seconds: float) -> float:
    """Events expected in ``span_seconds`` when ``count`` fell in ``sample_seconds``."""
    return count / sample_seconds * span_seconds if sample_seconds > 0 else float(count)


def events_from_first_page(
    page_events: int, newest: float, oldest: float, start: float, has_more: bool
) -> float:
    """Events expected in the stretch from its first page (newest first) alone.

    Without a next page the page is the whole stretch. Otherwise the page's events spread
    over ``[oldest, newest]``, and the rest of the stretch, back to ``start``, is taken to
    be as busy.
    """
    if not has_more:
        return float(page_events)
    spread = max(newest - oldest, 1.0)
    return page_events + page_events / spread * max(oldest - start, 0.0)


def requests_for(events: float, page_size: int) -> int:
    """Pages (requests, one each) to read ``events``: at least one, which may come back empty."""
    return max(1, math.ceil(events / page_size))


def human_count(value: float) -> str:
    """1M, 1.5M, 20k, 950: a count as people say it."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            scaled = value / size
            return (
                f"{scaled:.1f}".rstrip("0").rstrip(".") + unit
                if scaled < 10
                else f"{scaled:.0f}{unit}"
            )
    return f"{value:.0f}"


def human_duration(seconds: float) -> str:
    """17 hours, 12 minutes, 40 seconds, 3 days: rounded to the unit that reads naturally."""
    for unit, size, above in (
        ("day", DAY, 2 * DAY),
        ("hour", 3600.0, 5400.0),
        ("minute", 60.0, 90.0),
    ):
        if seconds >= above:
            amount = round(seconds / size)
            return f"{amount} {unit}s"
    amount = max(1, round(seconds))
    return f"{amount} second" + ("" if amount == 1 else "s")


def human_rate(requests: int, per: float, share: float) -> str:
    """``5 requests per 10 s``, with the share of the budget when it is not all of it."""
    text = f"{requests * share:.3g} requests per {per:g} s"
    return text if share >= 1.0 else f"{text} ({share * 100:.3g}% of the budget)"


def describe_estimate(
    estimates: Sequence[SourceEstimate], span_seconds: float, rates: Sequence[str]
) -> str:
    """One sentence: how much there is to read and how long it takes at the budget's rate.

    "30 days of signins at about 1M a day is about 30,000 requests: 17 hours at 5
    requests per 10 s"
    """
    days = span_seconds / DAY
    span = human_duration(span_seconds) if days < 2 else f"{days:.3g} days"
    what = " and ".join(
        f"{e.source} at about {human_count(e.events / span_seconds * DAY)} a day" for e in estimates
    )
    requests = sum(e.requests for e in estimates)
    seconds = sum(e.seconds for e in estimates)
    at = " and ".join(dict.fromkeys(rates))
    return f"{span} of {what} is about {requests:,} requests: {human_duration(seconds)} at {at}"


def needs_confirmation(estimates: Sequence[SourceEstimate]) -> bool:
    """True when the audit would take longer than :data:`CONFIRM_ABOVE` without --yes."""
    return sum(e.seconds for e in estimates) > CONFIRM_ABOVE


def iso(seconds: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds, as Graph writes its times."""
    if seconds is None:
        return None
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def missing_entry(source: str, event: ApiEvent) -> dict[str, Any]:
    """One missing event as the report names it: id, event time, source."""
    return {
        "id": event.event_id if event.event_id is not None else f"(no id; key {event.key.hex()})",
        "event_time": iso(event.event_time),
        "source": source,
    }


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What the SIEM export held, for the report."""

    path: str
    format: str
    records: int
    elsewhere: int  # records of other sources, outside the stretch, or not placeable
    unreadable: int
    ids_only: bool


_COLUMNS = (
    ("source", "source"),
    ("in API", "in_api"),
    ("delivered (ledger)", "in_ledger"),
    ("not in ledger", "not_in_ledger"),
    ("in SIEM export", "in_siem"),
    ("missing from SIEM", "missing_from_siem"),
    ("in SIEM, not in API", "siem_not_in_api"),
    ("late arrivals", "late_arrivals"),
)


def result_row(result: SourceResult, with_export: bool) -> dict[str, Any]:
    """One source's counts; a side that was not compared is None.

    ``late_arrivals`` counts the deliveries in the stretch recorded more than
    ``late_after_seconds`` (the poll interval) after their event time; ``late_unknown``
    those whose recorded time the ledger does not know, which may be late or not.
    """
    late = result.late
    return {
        "source": result.source,
        "in_api": result.in_api,
        "in_ledger": result.in_ledger,
        "not_in_ledger": result.not_in_ledger,
        "in_siem": result.in_siem,
        "missing_from_siem": len(result.missing) if with_export else None,
        "siem_not_in_api": result.siem_not_in_api,
        "late_arrivals": None if late is None else late.late,
        "late_unknown": None if late is None else late.unknown,
        "late_after_seconds": None if late is None else late.late_after,
    }


def report_json(
    start: float,
    end: float,
    results: Sequence[SourceResult],
    export: ExportSummary | None,
    delivered: int | None,
) -> str:
    """The report for scripts: counts per source, every missing event, the export's figures."""
    document = {
        "from": iso(start),
        "to": iso(end),
        "sources": [result_row(r, export is not None) for r in results],
        "missing": [missing_entry(r.source, e) for r in results for e in r.missing],
        "export": None if export is None else _export_dict(export),
        "delivered": delivered,
    }
    return json.dumps(document, ensure_ascii=False)


def _export_dict(export: ExportSummary) -> dict[str, Any]:
    return {
        "path": export.path,
        "format": export.format,
        "records": export.records,
        "elsewhere": export.elsewhere,
        "unreadable": export.unreadable,
        "ids_only": export.ids_only,
    }


def _cell(value: Any) -> str:
    if value is None:
        return _NONE
    return f"{value:,}" if isinstance(value, int) else str(value)


def _text_cell(row: dict[str, Any], name: str) -> str:
    """A cell of the table; late arrivals say how many more the ledger cannot date."""
    if name == "late_arrivals" and row["late_unknown"]:
        return f"{_cell(row[name])} (+{row['late_unknown']:,} unknown)"
    return _cell(row[name])


def _late_line(rows: Sequence[dict[str, Any]]) -> str | None:
    """What the late-arrivals column counts, with each source's threshold."""
    thresholds = [
        f"{r['source']} {r['late_after_seconds']:g} s"
        for r in rows
        if r["late_arrivals"] is not None
    ]
    if not thresholds:
        return None
    line = (
        "late arrivals: delivered, and first seen more than one poll interval after their "
        f"event time ({', '.join(thresholds)})"
    )
    if any(r["late_unknown"] for r in rows):
        line += "; unknown: recorded before the ledger kept when (layout 2)"
    return line


def report_text(
    start: float,
    end: float,
    results: Sequence[SourceResult],
    export: ExportSummary | None,
    delivered: int | None,
) -> str:
    """The report for a person: the table, the export's figures, then each missing event."""
    counts = [result_row(r, export is not None) for r in results]
    rows = [[title for title, _ in _COLUMNS]]
    rows += [[_text_cell(row, name) for _, name in _COLUMNS] for row in counts]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [f"event time {iso(start)} to {iso(end)} (end excluded)"]
    lines += [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    late = _late_line(counts)
    if late is not None:
        lines.append(late)
    if export is not None:
        lines.append(
            f"SIEM export {export.path}: {export.format}, {export.records:,} records, "
            f"{export.elsewhere:,} of other sources or outside the stretch, "
            f"{export.unreadable:,} lines holding no event"
            + (
                "; ids only, so versions of a changing record are not told apart"
                if export.ids_only
                else ""
            )
        )
    missing = [missing_entry(r.source, e) for r in results for e in r.missing]
    against = "the SIEM export" if export is not None else "the ledger"
    if missing:
        lines.append(f"{len(missing):,} missing from {against} (id, event time, source):")
        lines += [f"{m['id']}  {m['event_time'] or _NONE}  {m['source']}" for m in missing]
    else:
        lines.append(f"nothing missing from {against}")
    if delivered is not None:
        lines.append(
            f"delivered {delivered:,} missing events to the sinks and recorded them in the ledger"
        )
    return "\n".join(lines) + "\n"

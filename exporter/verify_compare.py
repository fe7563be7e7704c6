"""The comparison ``siem-exporter verify`` makes: the API now, the ledger, a SIEM export.

Pure code. Every event is compared by the 16-byte key the collector itself derives
(:func:`exporter.graph.event_key`): the id, and for records that change (``update_field``)
the id with that field's value, so one version of a risk detection is not mistaken for
another. A SIEM export that holds only ids cannot tell versions apart; such a record
counts for every version of its id, and the report says the export held ids only.

An export may hold the events of every source the SIEM receives. A record is attributed
to a source by its MSGID when it has one; otherwise by its key being known to that
source (in the API or the ledger for the stretch), or, for an unknown key, by its own time
falling in the stretch of exactly one source's time field. Whatever cannot be placed is
counted, never silently taken for a source's.

The ledger also tells how many of the stretch's deliveries arrived late
(:func:`late_arrivals`): the events the collector caught that a plain poller would have lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.eventtime import parse_event_time
from exporter.graph import event_key
from exporter.pipeline import dedupe_key
from exporter.verify_export import ExportRecord


@dataclass(frozen=True, slots=True)
class Keying:
    """How one source keys and dates its events: its name, window field and version field."""

    source: str
    window_field: str
    update_field: str | None = None


@dataclass(frozen=True, slots=True)
class Stretch:
    """The stretch of event time under audit: ``start <= t < end`` (epoch seconds)."""

    start: float
    end: float

    def holds(self, when: float | None) -> bool:
        return when is not None and self.start <= when < self.end


@dataclass(frozen=True, slots=True)
class ApiEvent:
    """An event the API returned for the stretch: its key, its id's key, id and time."""

    key: bytes
    base: bytes  # the key of the id alone; equals ``key`` unless the source has versions
    event_id: str | None
    event_time: float | None


def api_event(event: dict[str, Any], keying: Keying) -> ApiEvent:
    """``event`` keyed and dated as the collector keys and dates it."""
    key, _ = event_key(event, keying.update_field)
    base, _ = dedupe_key(event.get("id"), event)
    when = parse_event_time(event.get(keying.window_field))
    event_id = event.get("id")
    return ApiEvent(
        key,
        base,
        event_id if isinstance(event_id, str) else None,
        None if when is None else when.timestamp(),
    )


@dataclass(frozen=True, slots=True)
class RecordKeys:
    """An export record as one source would key it: ``key`` is None for an id-only record
    of a source with versions, which only ``base`` (the id's key) can match."""

    key: bytes | None
    base: bytes
    when: float | None


def record_keys(record: ExportRecord, keying: Keying) -> RecordKeys:
    """The keys and time of an export record, derived as ``keying``'s source derives them."""
    if record.event is not None:
        item = api_event(record.event, keying)
        return RecordKeys(item.key, item.base, item.event_time)
    base, _ = dedupe_key(record.event_id, {})
    return RecordKeys(base if keying.update_field is None else None, base, None)


@dataclass(slots=True)
class SiemSide:
    """What the export holds of one source: whole keys, and id keys of id-only records."""

    keys: set[bytes] = field(default_factory=set)
    bases: set[bytes] = field(default_factory=set)

    def add(self, keys: RecordKeys) -> None:
        if keys.key is not None:
            self.keys.add(keys.key)
        else:
            self.bases.add(keys.base)

    def holds(self, event: ApiEvent) -> bool:
        return event.key in self.keys or event.base in self.bases

    def __len__(self) -> int:
        return len(self.keys) + len(self.bases)


@dataclass(frozen=True, slots=True)
class Known:
    """What the API and the ledger hold of one source for the stretch: the keys a record
    without a MSGID is recognised by."""

    keys: frozenset[bytes]
    bases: frozenset[bytes]

    def recognises(self, keys: RecordKeys) -> bool:
        return keys.key in self.keys if keys.key is not None else keys.base in self.bases


def attribute(
    records: Iterable[ExportRecord],
    keyings: Sequence[Keying],
    known: dict[str, Known],
    stretch: Stretch,
) -> tuple[dict[str, SiemSide], int]:
    """Each source's share of the export's records in the stretch, and how many were not.

    The second number counts records of other sources (their MSGID), outside the stretch,
    or that no rule places.
    """
    sides = {k.source: SiemSide() for k in keyings}
    by_name = {k.source: k for k in keyings}
    elsewhere = 0
    for record in records:
        if record.msgid is not None:
            keying = by_name.get(record.msgid)
            if keying is None:
                elsewhere += 1
                continue
            keys = record_keys(record, keying)
            if stretch.holds(keys.when) or known[keying.source].recognises(keys):
                sides[keying.source].add(keys)
            else:
                elsewhere += 1
            continue
        placed = _place_unlabelled(record, keyings, known, stretch)
        if not placed:
            elsewhere += 1
        for source, keys in placed:
            sides[source].add(keys)
    return sides, elsewhere


def _place_unlabelled(
    record: ExportRecord, keyings: Sequence[Keying], known: dict[str, Known], stretch: Stretch
) -> list[tuple[str, RecordKeys]]:
    """The sources a record without a MSGID belongs to: every one that knows its key (two
    sources may overlap, such as all sign-ins and the non-interactive ones), else the only
    one whose time field dates it inside the stretch."""
    candidates = [(k.source, record_keys(record, k)) for k in keyings]
    recognised = [(source, keys) for source, keys in candidates if known[source].recognises(keys)]
    if recognised:
        return recognised
    dated = [(source, keys) for source, keys in candidates if stretch.holds(keys.when)]
    return dated if len(dated) == 1 else []


@dataclass(frozen=True, slots=True)
class LateArrivals:
    """Of one source's deliveries in the stretch, per the ledger: how many arrived late, and
    how many it cannot tell (recorded before the ledger kept delivery times, layout 2)."""

    late: int
    unknown: int
    late_after: float  # seconds: the source's poll interval


def late_arrivals(
    deliveries: Iterable[tuple[bytes, float, float | None]], late_after: float
) -> LateArrivals:
    """How many (key, event time, recorded time) deliveries were recorded more than
    ``late_after`` after their event time; an unknown recorded time is counted apart, never
    as on time.

    ``late_after`` is the source's ``poll_interval``: late means more than one poll interval
    late, as in the demo's "late arrivals caught", which a non-overlapping poller at that
    interval loses whatever its phase. The recorded time is when the collector fetched the
    page, so the difference is the event's arrival lag (``event_arrival_lag_seconds``): it
    includes the wait for the next query, which plays the part of that poller's phase. With
    the fresh query every ``late_after``, an event ``L < late_after`` late counts with
    a chance of about ``L / late_after``, the chance that the poller loses it; a fresh query the
    budget runs less often makes more count.
    """
    late = unknown = 0
    for _, when, recorded in deliveries:
        if recorded is None:
            unknown += 1
        elif recorded - when > late_after:
            late += 1
    return LateArrivals(late, unknown, late_after)


@dataclass(frozen=True, slots=True)
class SourceResult:
    """One source's row of the report. None: that side was not compared (no ledger, no export)."""

    source: str
    in_api: int
    in_ledger: int | None
    not_in_ledger: int | None
    in_siem: int | None
    siem_not_in_api: int | None
    missing: tuple[ApiEvent, ...]  # from the SIEM export when given, else from the ledger
    late: LateArrivals | None = None  # from the ledger, when there is one


def compare(
    source: str,
    api: Sequence[ApiEvent],
    ledger: set[bytes] | None,
    siem: SiemSide | None,
    late: LateArrivals | None = None,
) -> SourceResult:
    """The three sets of one source side by side; what the SIEM lacks decides ``missing``."""
    not_in_ledger = None if ledger is None else [e for e in api if e.key not in ledger]
    if siem is not None:
        missing = [e for e in api if not siem.holds(e)]
        api_keys = {e.key for e in api}
        api_bases = {e.base for e in api}
        extra = len(siem.keys - api_keys) + len(siem.bases - api_bases)
    else:
        missing = not_in_ledger or []
        extra = None
    return SourceResult(
        source=source,
        in_api=len(api),
        in_ledger=None if ledger is None else len(ledger),
        not_in_ledger=None if not_in_ledger is None else len(not_in_ledger),
        in_siem=None if siem is None else len(siem),
        siem_not_in_api=extra,
        missing=tuple(sorted(missing, key=lambda e: (e.event_time or 0.0, e.event_id or ""))),
        late=late,
    )

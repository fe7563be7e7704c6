"""Pure parsing of the Graph query options the simulator accepts, and its page cursor.

Only what the collector is meant to send is accepted (`<field> ge <ISO>` optionally
`and <field> le <ISO>`, or `gt`/`lt` where a collection accepts only those, on beta sign-ins
optionally `and signInEventTypes/any(t: t eq '<type>' or ...)`, `$top` 1..the collection's
maximum, the `$skiptoken` it was given); anything else is a `QueryError`, answered as
Graph's 400, so a collector bug shows up as a failing request rather than as silently
different results.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import datetime as dt
import json
import math
import re
from collections.abc import Collection
from dataclasses import asdict, dataclass
from fractions import Fraction

from exporter.sim.timeline import TICKS_PER_SECOND

MAX_TOP = 1000
INCLUSIVE = ("ge", "le")  # what most collections accept for "from" and "to"
EXCLUSIVE = ("gt", "lt")  # all that auditLogs/provisioning accepts

_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
_FILTER = re.compile(
    rf"(?P<f1>\w+) (?P<op1>[gl][et]) (?P<ge>{_ISO})"
    rf"(?: and (?P<f2>\w+) (?P<op2>[gl][et]) (?P<le>{_ISO}))?"
    r"(?: and signInEventTypes/any\((?P<var>\w+): (?P<types>[^()]*)\))?",
    re.ASCII,
)
_ISO_PARTS = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z", re.ASCII)


class QueryError(ValueError):
    """A query option the simulated Graph API rejects with HTTP 400."""


@dataclass(frozen=True)
class Bounds:
    """An event-time range in ticks (None: unbounded on that side), and the sign-in event
    types a `signInEventTypes/any(...)` clause selects (None: the query had none)."""

    ge: int | None
    le: int | None
    types: frozenset[str] | None = None


@dataclass(frozen=True)
class Cursor:
    """State of a paged query, fixed at its first page (`asof`), resumed before `before`.

    `before` is the tick of the last event already served (None on the first page); event
    times are unique within a stream, so "strictly older than it" resumes exactly, at
    O(page) cost. A query over several `streams` serves them merged, newest first and at
    equal ticks the later stream first; ticks may repeat across streams, so the position
    is (`before`, `rank`), the rank being the index in `streams` of the last event's stream.
    A single-stream cursor leaves both None, and its token is what it was before merging.
    """

    source: str
    asof: float
    ge: int | None
    le: int | None
    before: int | None
    top: int
    streams: tuple[str, ...] | None = None
    rank: int | None = None

    def upper(self, rank: int = 0) -> int | None:
        """The inclusive upper tick bound of what the stream of `rank` still has to serve.

        A stream ordered before the last one served at its tick still owes that tick.
        """
        if self.before is None:
            return self.le
        last = self.before if rank < (self.rank or 0) else self.before - 1
        return last if self.le is None else min(self.le, last)


def iso_to_fraction(text: str) -> Fraction:
    """Exact epoch seconds of a `...Z` ISO-8601 literal with any fractional precision."""
    match = _ISO_PARTS.fullmatch(text)
    if match is None:
        raise QueryError(f"'{text}' is not a valid DateTimeOffset literal")
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
        stamp = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError as exc:
        raise QueryError(f"'{text}' is not a valid DateTimeOffset literal") from exc
    whole = calendar.timegm(stamp.utctimetuple())
    digits = match.group(7) or ""
    return whole + (Fraction(int(digits), 10 ** len(digits)) if digits else Fraction(0))


def parse_filter(
    text: str | None,
    time_field: str,
    event_types: Collection[str] = (),
    operators: tuple[str, str] = INCLUSIVE,
) -> Bounds:
    """Turn `$filter` into inclusive tick bounds, exactly: `ge` rounds up, `le` down, `gt`
    is the tick after and `lt` the tick before.

    `operators` are the "from" and "to" operators the collection accepts; Graph answers a
    query using the other pair (`ge` on provisioning, `gt` on sign-ins) with a 400. A
    `signInEventTypes/any(...)` clause is accepted where `event_types` names what it may
    select (the beta sign-ins), and nowhere else.
    """
    if text is None:
        return Bounds(None, None)
    after, before = operators
    match = _FILTER.fullmatch(text)
    if match is None or (match["types"] is not None and not event_types):
        raise _malformed(text, time_field, event_types, operators)
    for operator, expected in ((match["op1"], after), (match["op2"], before)):
        if operator is None or operator == expected:
            continue
        if operators == INCLUSIVE or operator not in INCLUSIVE:
            raise _malformed(text, time_field, event_types, operators)
        raise QueryError(
            f"Invalid filter clause: operator '{operator}' is not supported on property "
            f"'{time_field}'; use '{after}' and '{before}'"
        )
    for field in (match["f1"], match["f2"]):
        if field is not None and field != time_field:
            raise QueryError(f"Invalid filter clause: property '{field}' cannot be filtered")
    low = iso_to_fraction(match["ge"]) * TICKS_PER_SECOND
    ge = math.ceil(low) if after == "ge" else math.floor(low) + 1
    le = None
    if match["le"] is not None:
        high = iso_to_fraction(match["le"]) * TICKS_PER_SECOND
        le = math.floor(high) if before == "le" else math.ceil(high) - 1
    types = (
        None if match["types"] is None else _event_types(match["var"], match["types"], event_types)
    )
    return Bounds(ge, le, types)


def _malformed(
    text: str, time_field: str, event_types: Collection[str], operators: tuple[str, str]
) -> QueryError:
    after, before = operators
    types_clause = (
        " and optionally 'and signInEventTypes/any(t: t eq '<type>' or ...)'" if event_types else ""
    )
    return QueryError(
        f"Invalid filter clause: expected '{time_field} {after} <DateTimeOffset>' optionally "
        f"followed by 'and {time_field} {before} <DateTimeOffset>'{types_clause}, got '{text}'"
    )


def _event_types(var: str, text: str, known: Collection[str]) -> frozenset[str]:
    """The types of `t eq 'a' or t eq 'b'` (the lambda's variable is `var`), all known."""
    term = re.compile(rf"{re.escape(var)} eq '(\w+)'", re.ASCII)
    types = set()
    for part in text.split(" or "):
        match = term.fullmatch(part)
        if match is None:
            raise QueryError(
                f"Invalid filter clause: expected '{var} eq '<type>'' joined by ' or ' inside "
                f"signInEventTypes/any(), got '{part}'"
            )
        if match[1] not in known:
            raise QueryError(
                f"Invalid filter clause: '{match[1]}' is not a signInEventType "
                f"(one of {', '.join(known)})"
            )
        types.add(match[1])
    return frozenset(types)


def parse_top(text: str | None, largest: int = MAX_TOP) -> int:
    """`$top` as Graph validates it: 1..`largest` (1000 for the audit-log reports, 500 for
    risk detections), `largest` when absent."""
    if text is None:
        return largest
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= largest:
        raise QueryError(
            f"Invalid page size specified: '{text}'. Must be between 1 and {largest} inclusive."
        )
    return int(text)


_MERGE_FIELDS = ("streams", "rank")


def encode_cursor(cursor: Cursor) -> str:
    """An opaque `$skiptoken`: urlsafe base64 of the cursor's JSON (merge fields if set)."""
    fields = {k: v for k, v in asdict(cursor).items() if v is not None or k not in _MERGE_FIELDS}
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, source: str, streams: Collection[str] = ()) -> Cursor:
    """Read back a `$skiptoken`; tokens that were not ours or belong elsewhere are a 400.

    A merged cursor may name only `streams`, the sources of its collection.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = Cursor(**json.loads(raw))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise QueryError("The $skiptoken is invalid.") from exc
    optional = (cursor.ge, cursor.le, cursor.before, cursor.rank)
    ints = (cursor.top, *(b for b in optional if b is not None))
    valid = all(type(v) is int for v in ints) and type(cursor.asof) in (int, float)
    if cursor.streams is not None:
        named = cursor.streams
        valid = valid and isinstance(named, list) and 0 < len(named) == len(set(named))
        valid = valid and all(isinstance(n, str) and n in streams for n in named)
        valid = valid and 0 <= (cursor.rank or 0) < len(named)
    elif cursor.rank is not None:
        valid = False
    if not valid or not 1 <= cursor.top <= MAX_TOP:
        raise QueryError("The $skiptoken is invalid.")
    if cursor.source != source:
        raise QueryError("The $skiptoken belongs to a different resource.")
    if cursor.streams is None:
        return cursor
    return dataclasses.replace(cursor, streams=tuple(cursor.streams))

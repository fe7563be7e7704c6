"""Pure parsing of the Graph query options the simulator accepts, and its page cursor.

Only what the collector is meant to send is accepted (`<field> ge <ISO>` optionally
`and <field> le <ISO>`, `$top` 1..1000, the `$skiptoken` it was given); anything else is
a `QueryError`, answered as Graph's 400, so a collector bug shows up as a failing request
rather than as silently different results.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as dt
import json
import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction

from exporter.sim.timeline import TICKS_PER_SECOND

MAX_TOP = 1000

_ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z"
_FILTER = re.compile(
    rf"(?P<f1>\w+) ge (?P<ge>{_ISO})(?: and (?P<f2>\w+) le (?P<le>{_ISO}))?", re.ASCII
)
_ISO_PARTS = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z", re.ASCII)


class QueryError(ValueError):
    """A query option the simulated Graph API rejects with HTTP 400."""


@dataclass(frozen=True)
class Bounds:
    """An event-time range in ticks; None means unbounded on that side."""

    ge: int | None
    le: int | None


@dataclass(frozen=True)
class Cursor:
    """State of a paged query, fixed at its first page (`asof`), resumed before `before`.

    `before` is the tick of the last event already served (None on the first page); event
    times are unique, so "strictly older than it" resumes exactly, at O(page) cost.
    """

    source: str
    asof: float
    ge: int | None
    le: int | None
    before: int | None
    top: int

    def upper(self) -> int | None:
        """The inclusive upper tick bound of the events still to serve."""
        if self.before is None:
            return self.le
        return self.before - 1 if self.le is None else min(self.le, self.before - 1)


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


def parse_filter(text: str | None, time_field: str) -> Bounds:
    """Turn `$filter` into tick bounds: `ge` rounds up and `le` rounds down, exactly."""
    if text is None:
        return Bounds(None, None)
    match = _FILTER.fullmatch(text)
    if match is None:
        raise QueryError(
            f"Invalid filter clause: expected '{time_field} ge <DateTimeOffset>' optionally "
            f"followed by 'and {time_field} le <DateTimeOffset>', got '{text}'"
        )
    for field in (match["f1"], match["f2"]):
        if field is not None and field != time_field:
            raise QueryError(f"Invalid filter clause: property '{field}' cannot be filtered")
    ge = math.ceil(iso_to_fraction(match["ge"]) * TICKS_PER_SECOND)
    le = (
        None if match["le"] is None else math.floor(iso_to_fraction(match["le"]) * TICKS_PER_SECOND)
    )
    return Bounds(ge, le)


def parse_top(text: str | None) -> int:
    """`$top` as Graph validates it for the audit-log reports: 1..1000, default 1000."""
    if text is None:
        return MAX_TOP
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_TOP:
        raise QueryError(
            f"Invalid page size specified: '{text}'. Must be between 1 and {MAX_TOP} inclusive."
        )
    return int(text)


def encode_cursor(cursor: Cursor) -> str:
    """An opaque `$skiptoken`: urlsafe base64 of the cursor's JSON."""
    raw = json.dumps(asdict(cursor), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, source: str) -> Cursor:
    """Read back a `$skiptoken`; tokens that were not ours or belong elsewhere are a 400."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = Cursor(**json.loads(raw))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise QueryError("The $skiptoken is invalid.") from exc
    optional = (cursor.ge, cursor.le, cursor.before)
    ints = (cursor.top, *(b for b in optional if b is not None))
    valid = all(type(v) is int for v in ints) and type(cursor.asof) in (int, float)
    if not valid or not 1 <= cursor.top <= MAX_TOP:
        raise QueryError("The $skiptoken is invalid.")
    if cursor.source != source:
        raise QueryError("The $skiptoken belongs to a different resource.")
    return cursor

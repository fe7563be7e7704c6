"""Event times as Graph writes them, read into aware UTC datetimes.

Every source keys, dates and orders its events by one timestamp field; the ledger, the lag
metrics and the syslog TIMESTAMP all read it through here, once per event.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_GRAPH_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:(?P<zulu>[Zz])|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def parse_event_time(value: object) -> datetime | None:
    """Read a Graph timestamp into an aware UTC datetime, or None if it is not one.

    Graph sends 0 to 7 fractional digits (``2020-03-13T19:15:41.6195833Z``); up to 9 are
    accepted and digits past the sixth truncated, never rounded, so an event never seems
    to come from the future. The shape is checked first because ``fromisoformat`` also
    takes bare dates and zone-less times, which would be silently misread as local time.
    Never raises: a malformed time must not stop the pipeline.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return None
        return value.astimezone(UTC)
    if not isinstance(value, str):
        return None
    match = _GRAPH_TIME.fullmatch(value)
    if match is None:
        return None
    zulu = match.group("zulu")
    if zulu == "Z" and value[10] == "T":
        normalized = value  # Graph's own form, read as is: the hot path, once per event
    elif zulu is None:
        normalized = value.upper()
    else:
        normalized = value[:-1].upper() + "+00:00"
    try:
        parsed = datetime.fromisoformat(normalized)
        return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None

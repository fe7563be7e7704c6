"""Reading a file exported from a SIEM: which events (or which ids) it holds, and whose.

Pure code over lines of text. SIEMs export what they stored in a few shapes, and an audit
must read the one it is given without a conversion step the user could get wrong:

- ``jsonl``: one JSON object a line. The object is the event itself (its ``id`` and every
  field), or a record that wraps it: ``_raw`` or ``message`` holding the RFC 5424 line the
  exporter sent, or the event's JSON (Splunk and Elastic keep the received text there), or
  a record whose id is at ``--id-field`` (a dotted path such as ``event.id``).
- ``syslog``: one RFC 5424 message a line, as rsyslog or syslog-ng write a file.
- ``csv``: a header line, then an id column (``id``, or ``--id-field``) or a ``_raw`` or
  ``message`` column holding the line or the JSON.

A record that holds the whole event lets the comparison key it exactly as the collector
did (including the version of a record that changes, see ``update_field``); an id alone
is keyed by the id. The MSGID, when the record has one (the RFC 5424 header, or a
``msgid`` field), says which source the event came from, so an export of everything the
SIEM holds can be audited one source at a time.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

FORMATS = ("auto", "jsonl", "syslog", "csv")
WRAPPER_FIELDS = ("_raw", "message")
MSGID_PATHS = ("msgid", "MSGID", "syslog.msgid", "log.syslog.msgid")

# <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]; SD is '-' or bracketed elements.
_RFC5424 = re.compile(
    r"<\d{1,3}>1 \S+ \S+ \S+ \S+ (?P<msgid>\S+) (?:-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?",
    re.DOTALL,
)
_BOM = "\ufeff"


class ExportFormatError(ValueError):
    """The export cannot be read as the format asked for or detected; the message says why."""


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """One event as the export holds it: the whole event when it has one, else its id.

    ``msgid`` is the syslog MSGID the record carries (the source's name), or None.
    """

    msgid: str | None
    event_id: str | None
    event: dict[str, Any] | None


@dataclass(slots=True)
class Export:
    """What a file held: its format, its records, and the lines that held no event."""

    format: str
    records: list[ExportRecord] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)


def detect_format(first_line: str) -> str:
    """The format the first non-blank line of a file is written in."""
    text = first_line.lstrip(_BOM).lstrip()
    if text.startswith("["):
        raise ExportFormatError(
            "a JSON array, not JSON lines: convert it with jq -c '.[]' FILE > FILE.jsonl"
        )
    if text.startswith("{"):
        return "jsonl"
    if _RFC5424.match(text):
        return "syslog"
    return "csv"


def parse_export(
    lines: Iterable[str],
    fmt: str = "auto",
    id_field: str | None = None,
    keep: frozenset[str] | None = None,
) -> Export:
    """Every record of an export; ``fmt`` ``auto`` detects it from the first non-blank line.

    Lines are read one at a time. With ``keep``, an event that has an id keeps only those
    fields (its id, and the time and version fields the comparison reads): an export of
    sign-ins is about 10 kB an event, and a day of them need not sit in memory whole. An
    event without an id is compared by its whole content, so it is kept whole.
    """
    if fmt not in FORMATS:
        raise ExportFormatError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    numbered = (
        (n, (line.lstrip(_BOM) if n == 1 else line).rstrip("\r\n"))
        for n, line in enumerate(lines, start=1)
    )
    content: Iterator[tuple[int, str]] = ((n, line) for n, line in numbered if line.strip())
    first = next(content, None)
    if first is None:
        return Export("jsonl" if fmt == "auto" else fmt)
    if fmt == "auto":
        fmt = detect_format(first[1])
    content = itertools.chain([first], content)
    export = Export(fmt)
    if fmt == "csv":
        rows: Iterator[tuple[int, Mapping[str, Any] | None]] = _csv_rows(content, id_field)
    elif fmt == "jsonl":
        rows = ((n, _json_object(line)) for n, line in content)
    else:
        rows = ((n, {"_raw": line}) for n, line in content)
    for number, row in rows:
        record = (
            None if row is None else record_from_mapping(row, id_field, holds_event=fmt != "csv")
        )
        if record is None:
            export.unreadable.append(number)
        else:
            export.records.append(record if keep is None else _slim(record, keep))
    return export


def _slim(record: ExportRecord, keep: frozenset[str]) -> ExportRecord:
    """``record`` with only the ``keep`` fields of its event, when its id makes them enough."""
    event = record.event
    if event is None or not isinstance(event.get("id"), str) or not event["id"]:
        return record
    return ExportRecord(record.msgid, None, {name: event[name] for name in keep if name in event})


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _csv_rows(
    content: Iterator[tuple[int, str]], id_field: str | None
) -> Iterator[tuple[int, Mapping[str, Any] | None]]:
    """Each data row as a mapping of its header's columns (an id or a wrapper column needed)."""
    header = next(csv.reader([next(content)[1]]))
    wanted = [id_field] if id_field else ["id", *WRAPPER_FIELDS]
    if not any(name in header for name in wanted):
        raise ExportFormatError(
            f"CSV header has no {' or '.join(repr(w) for w in wanted)} column"
            + ("" if id_field else "; name the id column with --id-field")
        )
    for number, line in content:
        values = next(csv.reader([line]), [])
        if len(values) != len(header):
            yield number, None
        else:
            yield number, dict(zip(header, values, strict=True))


def _at(record: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (or at the literal key, which ECS exports also use)."""
    if path in record:
        return record[path]
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _msgid(record: Mapping[str, Any]) -> str | None:
    for path in MSGID_PATHS:
        value = _at(record, path)
        if isinstance(value, str) and value and value != "-":
            return value
    return None


def record_from_mapping(
    record: Mapping[str, Any], id_field: str | None = None, *, holds_event: bool = True
) -> ExportRecord | None:
    """The event or id one JSON object or CSV row holds, or None when it holds neither.

    ``holds_event`` is False for a CSV row: its cells are text, so its ``id`` column names
    an id, never a whole event.
    """
    msgid = _msgid(record)
    if id_field is not None:
        value = _at(record, id_field)
        if isinstance(value, str) and value:
            return ExportRecord(msgid, value, None)
        return None
    for wrapper in WRAPPER_FIELDS:
        text = record.get(wrapper)
        if isinstance(text, str) and (inner := record_from_text(text, msgid)) is not None:
            return inner
    if not holds_event:
        value = record.get("id")
        return ExportRecord(msgid, value, None) if isinstance(value, str) and value else None
    return ExportRecord(msgid, None, dict(record))


def record_from_text(text: str, msgid: str | None = None) -> ExportRecord | None:
    """The event in an RFC 5424 line or a JSON text; the line's MSGID wins over ``msgid``."""
    text = text.strip().lstrip(_BOM)
    message = _RFC5424.fullmatch(text)
    if message is not None:
        msgid = message.group("msgid")
        text = (message.group("msg") or "").lstrip(_BOM)
    event = _json_object(text)
    if event is None:
        return None
    return ExportRecord(None if msgid == "-" else msgid, None, event)

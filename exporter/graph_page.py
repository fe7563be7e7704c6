"""A Graph page's body read into events: each event's own compact JSON, a few fields decoded.

This is the only code that reads what Graph sent, and the collector's hottest: a page of
1000 sign-ins is 12 MB.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

import msgspec

from exporter.errors import MalformedPageError
from exporter.pipeline import RawEvent


def _reject_constant(name: str) -> None:
    """NaN and Infinity are not JSON; re-serialised they would reach the SIEM as invalid JSON."""
    raise ValueError(f"{name} is not a JSON value")


class _GraphPage(msgspec.Struct, gc=False):
    """A page's envelope; each event stays the bytes it was sent as."""

    value: list[msgspec.Raw]
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")


_PAGE = msgspec.json.Decoder(_GraphPage)


_ESCAPE_FREE_STRING = rb'"[^"\\]*"'
_SCALAR = rb"[^\",{}\[\]]*"  # a number, true, false or null, in compact JSON


class _FieldReader:
    """Reads a few top-level fields of an event's compact JSON without skipping through it.

    Decoding the fields with msgspec skips through the whole event, and over a page of
    sign-ins that pass cost as much as cutting the page into events. Graph writes the
    fields a source needs (``id``, the time field) among an event's first members, so
    each is found by one anchored match: past leading members of plain values to the
    field's first appearance, whose value is a string without escapes or null. Any other
    case (the field after a nested member, a number, an escape in the way, no such field)
    is decoded by msgspec, which gives the same values. JSON leaves a name given twice in
    one object to the reader, and Graph never sends one; here the first is read.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._leads = tuple(self._first_appearance(name) for name in names)
        head = msgspec.defstruct(
            "EventFields",
            [
                (f"f{n}", Any, msgspec.field(default=None, name=name))
                for n, name in enumerate(names)
            ],
            gc=False,
        )
        self._decoder = msgspec.json.Decoder(head)

    @staticmethod
    def _first_appearance(name: str) -> re.Pattern[bytes]:
        key = re.escape(msgspec.json.encode(name)) + b":"
        plain_member = rb"(?!" + key + rb")" + _ESCAPE_FREE_STRING + rb":(?:"
        plain_member += _ESCAPE_FREE_STRING + rb"|" + _SCALAR + rb"),"
        return re.compile(rb"\{(?:" + plain_member + rb")*" + key + rb'(?:"([^"\\]*)"|null)[,}]')

    def __call__(self, event: msgspec.Raw) -> dict[str, Any]:
        found = {}
        for name, lead in zip(self.names, self._leads, strict=True):
            member = lead.match(event)
            if member is None:
                values = msgspec.structs.astuple(self._decoder.decode(event))
                return dict(zip(self.names, values, strict=True))
            text = member[1]
            found[name] = None if text is None else text.decode()
        return found


@functools.lru_cache(maxsize=64)
def field_reader(names: tuple[str, ...]) -> _FieldReader:
    """The reader of ``names``, built once per set of names a source asks for."""
    return _FieldReader(names)


def parse_page(
    body: bytes, fields: tuple[str, ...] = ("id",)
) -> tuple[list[Mapping[str, Any]], str | None]:
    """The events and the nextLink of a Graph page; MalformedPageError for anything else.

    A page of 1000 sign-ins is 12 MB, and building Python objects of it (800 per sign-in)
    cost more than the rest of the collector's work together. So a well-formed page is
    read without: msgspec compacts and checks it (strict JSON: no NaN, no control
    character in a string, no trailing data) and cuts it into each event's bytes, of which
    only ``fields`` are decoded, and Python checks the page is UTF-8 (msgspec does not).
    Whatever that path does not accept goes through the standard library, as every page
    did before: a lone surrogate escape (``"\\ud800"``) is valid JSON there, an integer
    longer than Python converts is not, and anything that is not a page is told apart and
    refused there, in one place.
    """
    if not _may_hold_a_huge_integer(body):
        try:
            return _parse_compact(body, fields)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass
    return _parse_objects(body)


_DIGIT_STRIDE = 256
_DIGIT_MASK = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))  # digit -> "0"


def _may_hold_a_huge_integer(body: bytes) -> bool:
    """Whether ``body`` may hold a run of more digits than ``int()`` converts (4300 by default).

    The standard library refuses such a number, so a page holding one is malformed, while
    msgspec would pass it through. A run of ``n`` digits covers at least ``n // 256`` of
    every 256th byte, so looking at those alone misses no such run (and touches a quarter
    of the page's cache lines, where every 64th byte touched them all);
    a page where they line up with digits by chance just takes the standard library's path.
    """
    limit = sys.get_int_max_str_digits()
    if not limit:
        return False
    sampled = body[::_DIGIT_STRIDE].translate(_DIGIT_MASK)
    return b"0" * ((limit + 1) // _DIGIT_STRIDE) in sampled


_UTF8_PIECE = 1 << 15


def _check_utf8(body: bytes) -> None:
    """Raise UnicodeDecodeError unless ``body`` is UTF-8, without keeping it as text.

    Decoding a 12 MB page in one piece builds a 12-million-character string that no one
    reads; decoding it 32 kB at a time checks the same bytes in a buffer that stays in the
    CPU's cache: a third of the cost or less. A piece that ends inside a character leaves
    it to the next (the decoder reports how much it took); the last piece must end whole.
    A pure-ASCII page is valid UTF-8 at a glance.
    """
    if body.isascii():
        return
    view = memoryview(body)
    decode = codecs.utf_8_decode
    start, end = 0, len(view)
    while start < end:
        stop = start + _UTF8_PIECE
        _, used = decode(view[start:stop], "strict", stop >= end)
        start += used


def _parse_compact(
    body: bytes, fields: tuple[str, ...]
) -> tuple[list[Mapping[str, Any]], str | None]:
    _check_utf8(body)
    compact = msgspec.json.format(body, indent=-1)
    page = _PAGE.decode(compact)
    read = field_reader(fields)
    events: list[Mapping[str, Any]] = [RawEvent(memoryview(raw), read(raw)) for raw in page.value]
    return events, page.next_link


def _parse_objects(body: bytes) -> tuple[list[Mapping[str, Any]], str | None]:
    try:
        page = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedPageError(f"page is not JSON ({type(exc).__name__})") from None
    if not isinstance(page, dict) or not isinstance(page.get("value"), list):
        raise MalformedPageError("page has no 'value' list")
    events = page["value"]
    if not all(isinstance(event, dict) for event in events):
        raise MalformedPageError("page 'value' holds something other than objects")
    next_link = page.get("@odata.nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise MalformedPageError("'@odata.nextLink' is not a string")
    return events, next_link

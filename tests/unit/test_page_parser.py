"""The Graph page parser and URL builders against hostile input.

``parse_page`` is the only code that reads what the API sent; ``same_origin`` alone decides
whether a bearer token may follow a nextLink; ``first_page_url`` and ``format_filter_time``
build the one URL the exporter invents. Each is checked as a property over generated input,
and ``same_origin`` differentially: whenever it says yes, the HTTP stack that would send the
token (requests and urllib3) must connect to exactly the Graph host and port.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest
import requests
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from exporter.components import COMPONENTS
from exporter.config import ConfigError, SourceConfig, parse_config
from exporter.errors import MalformedPageError
from exporter.graph import same_origin
from exporter.graph_page import _UTF8_PIECE as GRAPH_UTF8_PIECE
from exporter.graph_page import field_reader, parse_page
from exporter.graph_query import first_page_url, format_filter_time
from exporter.pipeline import RawEvent
from tests.strategies import json_events as events
from tests.strategies import json_values, text

GRAPH = "https://graph.microsoft.com"


def page_body(value: Any, next_link: Any = None, *, ascii_only: bool = False) -> bytes:
    page: dict[str, Any] = {"@odata.context": f"{GRAPH}/v1.0/$metadata#auditLogs/signIns"}
    page["value"] = value
    if next_link is not None:
        page["@odata.nextLink"] = next_link
    text = json.dumps(page, ensure_ascii=ascii_only, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass" if not ascii_only else "strict")


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=5), st.none() | st.text())
def test_a_page_parses_to_exactly_what_was_served(
    served: list[dict[str, Any]], next_link: str | None
) -> None:
    parsed, link = parse_page(page_body(served, next_link, ascii_only=True))
    assert parsed == served
    assert link == next_link


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=5), st.data())
def test_every_truncation_of_a_page_is_malformed(
    served: list[dict[str, Any]], data: st.DataObject
) -> None:
    body = page_body(served, f"{GRAPH}/v1.0/auditLogs/signIns?$skiptoken=x", ascii_only=True)
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MalformedPageError):
        parse_page(body[:cut])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'"value"',
        b'{"value": null}',
        b'{"value": {}}',
        b'{"value": [1]}',
        b'{"value": [[]]}',
        b'{"value": [null]}',
        b'{"value": [], "@odata.nextLink": 7}',
        b'{"value": [], "@odata.nextLink": ["x"]}',
        b'{"error": {"code": "InternalServerError"}}',
        b"\xff\xfe\x00garbage",
        b'{"value": [{"a": "\xff"}]}',
        b'{"value": [{"a": 1}]}{"value": []}',
        b"<html>502 Bad Gateway</html>",
        b'{"value": [{"n": 1' + b"0" * 5000 + b"}]}",
    ],
)
def test_what_is_not_a_page_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedPageError):
        parse_page(body)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "replace")))
def test_arbitrary_bytes_never_escape_as_another_error(body: bytes) -> None:
    with contextlib.suppress(MalformedPageError):
        parse_page(body)


@pytest.mark.parametrize("shift", range(-4, 5))
@pytest.mark.parametrize(
    ("character", "valid"),
    [
        ("é".encode(), True),
        ("€".encode(), True),
        ("😀".encode(), True),
        (b"\xc3\x28", False),
        (b"\xf0\x9f\x98", False),
        (b"\xff", False),
    ],
)
def test_a_page_larger_than_the_utf8_check_s_piece_is_checked_across_its_pieces(
    shift: int, character: bytes, valid: bool
) -> None:
    """The UTF-8 check reads a page piece by piece: a character split between two pieces is
    still one character, and a broken one anywhere (at a seam, or pieces later) refuses it."""
    prefix = b'{"value":[{"id":"a","pad":"'
    pad = b"x" * (GRAPH_UTF8_PIECE - len(prefix) + shift)
    tail = b"y" * (GRAPH_UTF8_PIECE + 5) + character + b'"}]}'
    body = prefix + pad + character + tail
    if valid:
        events, _ = parse_page(body)
        assert isinstance(events[0], RawEvent)  # read on the fast path, not the fallback
        assert events[0]["pad"].encode() == pad + character + tail[: -len(b'"}]}')]
    else:
        with pytest.raises(MalformedPageError):
            parse_page(body)


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedPageError):
        parse_page(b'{"value": [{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_literals_are_malformed(literal: bytes) -> None:
    with pytest.raises(MalformedPageError):
        parse_page(b'{"value": [{"id": "x", "risk": ' + literal + b"}]}")


def connects_to(url: str) -> tuple[str, str, int]:
    """Where requests/urllib3 would open the connection for ``url`` (scheme, host, port)."""
    prepared = requests.Request("GET", url).prepare()
    assert prepared.url is not None
    parsed = parse_url(prepared.url)
    scheme = parsed.scheme or ""
    return scheme, (parsed.host or "").lower(), parsed.port or (443 if scheme == "https" else 80)


URL_PIECES = [
    "https://",
    "http://",
    "HTTPS://",
    "//",
    "https:",
    "graph.microsoft.com",
    "GRAPH.microsoft.com",
    "graph.microsoft.com.evil.example",
    "evil.example",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "@",
    ":",
    ":443",
    ":8443",
    ":0",
    ":99999",
    "\\",
    "/",
    "?",
    "#",
    "%2F",
    "%40",
    "user:pass@",
    "\t",
    "\n",
    " ",
    "\x00",
    "v1.0/auditLogs/signIns?$skiptoken=abc",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(URL_PIECES) | st.text(max_size=4), min_size=1, max_size=8))
@example(["\x00", "https://", "graph.microsoft.com"])  # urlsplit strips it, urllib3 does not
@example(["https://", "graph.micro\tsoft.com"])
def test_same_origin_yes_means_the_token_goes_only_to_graph(pieces: list[str]) -> None:
    url = "".join(pieces)
    if not same_origin(url, GRAPH):
        return
    try:
        target = connects_to(url)
    except (requests.RequestException, ValueError):
        return  # requests refuses to send it at all: the token stays home
    assert target == ("https", "graph.microsoft.com", 443), url


@pytest.mark.parametrize(
    "url",
    [
        f"{GRAPH}/v1.0/auditLogs/signIns?$skiptoken=abc",
        "https://graph.microsoft.com:443/v1.0/x",
        "HTTPS://Graph.Microsoft.com/v1.0/x",
    ],
)
def test_same_origin_accepts_graphs_own_links(url: str) -> None:
    assert same_origin(url, GRAPH)


@pytest.mark.parametrize(
    "url",
    [
        "http://graph.microsoft.com/v1.0/x",
        "https://graph.microsoft.com:8443/v1.0/x",
        "https://graph.microsoft.com.evil.example/v1.0/x",
        "https://graph.microsoft.com@evil.example/v1.0/x",
        "https://user:pw@graph.microsoft.com/v1.0/x",
        "https://evil.example\\@graph.microsoft.com/",
        "https://graph.microsoft.com\\@evil.example/",
        "https://evil.example#@graph.microsoft.com",
        "//evil.example/v1.0/x",
        "/v1.0/relative",
        "https://graph.microsoft.com:99999/",
        "https://[::1/",
        "",
    ],
)
def test_same_origin_refuses_everything_else(url: str) -> None:
    assert not same_origin(url, GRAPH)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=0, max_value=253402300799, allow_nan=False))
def test_filter_time_rounds_outward_to_whole_seconds(epoch: float) -> None:
    down_text = format_filter_time(epoch)
    up_text = format_filter_time(epoch, round_up=True)
    down = datetime.strptime(down_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    up = datetime.strptime(up_text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert down.timestamp() == math.floor(epoch)
    assert up.timestamp() == math.ceil(epoch)
    assert len(down_text) == len(up_text) == 20


def configured_source(endpoint: str, time_field: str) -> SourceConfig | None:
    """The source the config loader makes of these values, or None if it refuses them."""
    document = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
        "sources": [{"name": "s", "endpoint": endpoint, "time_field": time_field, "page_size": 7}],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
    }
    try:
        return parse_config(document, {}, COMPONENTS).sources[0]
    except ConfigError:
        return None


@settings(max_examples=1000, deadline=None)
@given(
    st.from_regex(r"/(v1\.0|beta)/[A-Za-z][A-Za-z0-9/]{0,30}", fullmatch=True)
    | st.text(min_size=1).map(lambda t: "/" + t)
    | st.sampled_from(["/v1.0/a#frag", "/v1.0/%zz"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_/]{0,30}", fullmatch=True)
    | st.text(min_size=1)
    | st.sampled_from(["a&b=c", "x#y", "t le 2000", "é\n"]),
    st.floats(min_value=0, max_value=4e9),
    st.none() | st.floats(min_value=0, max_value=4e9),
)
def test_the_first_page_url_carries_exactly_the_configured_query(
    endpoint: str, time_field: str, start: float, end: float | None
) -> None:
    source = configured_source(endpoint, time_field)
    assume(source is not None)
    assert source is not None
    url = first_page_url(GRAPH, source, start, end)
    assert same_origin(url, GRAPH)
    assert connects_to(url) == ("https", "graph.microsoft.com", 443)
    parts = urlsplit(url)
    assert parts.fragment == ""
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=True)
    expected = f"{source.settings.time_field} ge {format_filter_time(start)}"
    if end is not None:
        expected += f" and {source.settings.time_field} le {format_filter_time(end, round_up=True)}"
    assert query == {"$filter": [expected], "$top": ["7"]}


@settings(max_examples=300, deadline=None)
@given(st.lists(events, min_size=1, max_size=5), st.sampled_from([None, 1, 2]))
def test_each_event_is_kept_as_its_compact_json_however_the_page_was_spaced(
    served: list[dict[str, Any]], indent: int | None
) -> None:
    """The bytes a sink sends are the page's own event, compact, and mean what was served."""
    body = json.dumps({"value": served}, ensure_ascii=False, indent=indent).encode(
        "utf-8", "surrogatepass"
    )
    parsed, _ = parse_page(body, ("id", "createdDateTime"))
    assert parsed == served
    for event, original in zip(parsed, served, strict=True):
        if isinstance(event, RawEvent):  # a lone surrogate takes the standard library's path
            compact = json.dumps(original, ensure_ascii=False, separators=(",", ":"))
            assert event.json == compact.encode()
            assert event.get("id") == original.get("id")


@pytest.mark.parametrize("offset", range(0, 600, 41))
def test_the_shortest_integer_python_refuses_is_malformed_wherever_it_lies(offset: int) -> None:
    """The page is only sampled for long runs of digits: one digit more than ``int()``
    converts must still be found at any alignment, and one digit fewer is a page."""
    limit = sys.get_int_max_str_digits()
    head = b'{"value": [{"id": "' + b"x" * offset + b'", "n": '
    with pytest.raises(MalformedPageError):
        parse_page(head + b"1" * (limit + 1) + b"}]}")
    assert parse_page(head + b"1" * limit + b"}]}")[0][0]["n"] == int("1" * limit)


def test_a_long_run_of_digits_in_a_string_is_still_a_page() -> None:
    """Only a number beyond int()'s digit limit makes a page malformed, not digits in text."""
    served = [{"id": "x", "note": "1" * 10_000}]
    parsed, _ = parse_page(json.dumps({"value": served}).encode())
    assert parsed == served


FIELDS = ("id", "createdDateTime", "lastUpdatedDateTime")
field_or_other = st.sampled_from(FIELDS) | text
members = st.lists(st.tuples(field_or_other, json_values | st.sampled_from(["", "x"])), max_size=8)


@settings(max_examples=500, deadline=None)
@given(members, st.sampled_from([FIELDS[:1], FIELDS[:2], FIELDS]), st.booleans())
@example([("id", "a"), ("createdDateTime", "t")], FIELDS[:2], False)
@example([("n", 1), ("a", "b"), ("id", "x"), ("createdDateTime", None)], FIELDS[:2], False)
@example([("n", {"id": "inner"}), ("id", "outer")], FIELDS[:1], False)
@example([("id", 'quote " backslash \\')], FIELDS[:1], False)
@example([("id", "a"), ("createdDateTime", "tab\t")], FIELDS[:2], True)
@example([("id", 7), ("createdDateTime", ["t"])], FIELDS[:2], False)
def test_the_fields_read_up_front_are_what_the_standard_library_reads(
    pairs: list[tuple[str, Any]], names: tuple[str, ...], ascii_only: bool
) -> None:
    """Each field a source needs is read from the event's compact JSON where it can be
    matched, and decoded otherwise: either way it is the value the whole event holds."""
    served = dict(pairs)
    decoded = json.dumps(served, ensure_ascii=False)
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in decoded))  # the standard library's path
    compact = json.dumps(served, ensure_ascii=ascii_only, separators=(",", ":"))
    read = field_reader(names)(msgspec.Raw(compact.encode()))
    assert read == {name: served.get(name) for name in names}

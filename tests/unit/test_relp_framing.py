"""RELP's wire format: frames round-trip, the parser is indifferent to how bytes are cut,
and anything that is not RELP is refused at once with a clear error, never waited on."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.relp import (
    MAX_TXNR,
    Frame,
    FrameParser,
    RelpProtocolError,
    client_offers,
    encode_frame,
    next_txnr,
    parse_offers,
    parse_response,
)

TXNRS = st.integers(0, MAX_TXNR)
COMMANDS = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    min_size=1,
    max_size=32,
).map(str.encode)
FRAMES = st.builds(Frame, TXNRS, COMMANDS, st.binary(max_size=300))
# rsyslog's answer to a message it took, which the parser reads by a shorter path.
OK_ANSWERS = st.builds(Frame, TXNRS, st.just(b"rsp"), st.just(b"200 OK"))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length), in order."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


def feed_all(parser: FrameParser, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(parser.feed(chunk))
    return frames


@given(
    st.lists(st.one_of(FRAMES, OK_ANSWERS), max_size=8),
    st.lists(st.integers(0, 10_000), max_size=20),
)
def test_frames_round_trip_however_the_bytes_are_cut(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f.txnr, f.command, f.data) for f in frames)
    parser = FrameParser()
    assert feed_all(parser, split(stream, cuts)) == frames
    assert parser.pending == 0


def is_taken(frame: Frame) -> bool:
    """Whether a sender reads ``frame`` as a bare number: a ``200 OK`` answer, not a hint."""
    return frame.command == b"rsp" and frame.data == b"200 OK" and frame.txnr != 0


def read_back(parser: FrameParser, data: bytes, reader: str) -> list[Frame]:
    """What ``reader`` makes of ``data``, as frames (answers read as numbers rebuilt)."""
    if reader == "feed":
        return parser.feed(data)
    answers = parser.read_answers(data)
    return [Frame(txnr, b"rsp", b"200 OK") for txnr in answers.taken] + answers.frames


@given(
    st.lists(st.one_of(FRAMES, OK_ANSWERS), max_size=8),
    st.lists(st.integers(0, 10_000), max_size=20),
)
def test_a_sender_reads_ok_answers_as_numbers_and_the_rest_as_frames(
    frames: list[Frame], cuts: list[int]
) -> None:
    """However the bytes are cut, each ``200 OK`` answer comes back as its number once, in
    order, and every other frame (hints numbered 0 among them) as itself, in order."""
    stream = b"".join(encode_frame(f.txnr, f.command, f.data) for f in frames)
    parser = FrameParser()
    taken: list[int] = []
    others: list[Frame] = []
    for chunk in split(stream, cuts):
        answers = parser.read_answers(chunk)
        taken += answers.taken
        others += answers.frames
    assert taken == [frame.txnr for frame in frames if is_taken(frame)]
    assert others == [frame for frame in frames if not is_taken(frame)]
    assert parser.pending == 0


@pytest.mark.parametrize("reader", ["feed", "read_answers"])
@given(frame=st.one_of(FRAMES, OK_ANSWERS))
def test_one_byte_at_a_time_yields_the_frame_only_at_its_last_byte(
    reader: str, frame: Frame
) -> None:
    encoded = encode_frame(frame.txnr, frame.command, frame.data)
    parser = FrameParser()
    for byte in encoded[:-1]:
        assert read_back(parser, bytes([byte]), reader) == []
    assert read_back(parser, encoded[-1:], reader) == [frame]


def test_the_wire_format_is_librelps() -> None:
    """As rsyslog's imrelp answers (seen on the wire): no space and no data after length 0."""
    assert (
        encode_frame(2, b"syslog", b"<134>1 - h a - m - x") == b"2 syslog 20 <134>1 - h a - m - x\n"
    )
    assert encode_frame(4, b"close") == b"4 close 0\n"
    stream = b"1 rsp 93 200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp"
    stream += b".adiscon.com\ncommands=syslog\n4 rsp 0\n0 serverclose 0\n"
    opened, closed, hint = FrameParser().feed(stream)
    response = parse_response(opened.data)
    assert (response.code, response.text, response.ok) == (200, "OK", True)
    assert parse_offers(response.data) == {
        "relp_version": ("0",),
        "relp_software": ("librelp", "1.11.0", "http://librelp.adiscon.com"),
        "commands": ("syslog",),
    }
    assert closed == Frame(4, b"rsp") and hint == Frame(0, b"serverclose")


def test_the_open_offers_name_the_version_the_software_and_syslog() -> None:
    offers = parse_offers(client_offers("siem-exporter", "1.2.3"))
    assert offers == {
        "relp_version": ("0",),
        "relp_software": ("siem-exporter", "1.2.3"),
        "commands": ("syslog",),
    }


def test_a_refusal_keeps_its_reason() -> None:
    response = parse_response(b"500 command disabled")
    assert (response.code, response.text, response.ok) == (500, "command disabled", False)


@pytest.mark.parametrize("data", [b"", b"OK", b"20 OK", b"200OK", b"abc def"])
def test_a_malformed_response_is_refused(data: bytes) -> None:
    with pytest.raises(RelpProtocolError, match="malformed RELP response"):
        parse_response(data)


def test_transaction_numbers_wrap_after_nine_digits() -> None:
    assert next_txnr(1) == 2
    assert next_txnr(MAX_TXNR) == 1


@pytest.mark.parametrize(
    ("txnr", "command", "data"),
    [
        (-1, b"rsp", b""),
        (MAX_TXNR + 1, b"rsp", b""),
        (1, b"", b""),
        (1, b"sys log", b""),
        (1, b"x" * 33, b""),
    ],
)
def test_what_relp_cannot_carry_is_refused_when_encoding(
    txnr: int, command: bytes, data: bytes
) -> None:
    with pytest.raises(ValueError, match="RELP"):
        encode_frame(txnr, command, data)


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (b"x rsp 0\n", "header"),
        (b"1 rsp 0 \n", "right after its length"),
        (b"1 rsp 5\n", "announces 5 bytes"),
        (b"1 rsp 3 abcX", "does not end with LF"),
        (b"1234567890 rsp 0\n", "header"),
        (b"1 r5p 0\n", "header"),
        (b"1 rsp 1234567890 ", "header"),
        (b"1 " + b"r" * 33 + b" 0\n", "header"),
        (b"1 rsp 70000 ", "exceeds 65536"),
        (b"\n", "header"),
    ],
)
def test_malformed_frames_are_named_at_once(stream: bytes, why: str) -> None:
    with pytest.raises(RelpProtocolError, match=why):
        FrameParser().feed(stream)


@given(st.binary(max_size=200), st.lists(st.integers(0, 1000), max_size=10))
def test_arbitrary_bytes_end_in_frames_an_error_or_a_short_wait(
    garbage: bytes, cuts: list[int]
) -> None:
    """Whatever arrives, the parser returns or raises RelpProtocolError; what it keeps
    waiting on is never more than a header's worth unless a declared length covers it."""
    parser = FrameParser()
    try:
        feed_all(parser, split(garbage, cuts))
    except RelpProtocolError:
        return
    assert parser.pending <= 53 or garbage[:1].isdigit()


@pytest.mark.parametrize("reader", ["feed", "read_answers"])
@given(
    frame=st.one_of(FRAMES, OK_ANSWERS),
    where=st.integers(0, 10_000),
    replacement=st.binary(min_size=1, max_size=1),
)
def test_a_corrupted_byte_never_goes_unnoticed_in_the_header(
    reader: str, frame: Frame, where: int, replacement: bytes
) -> None:
    """A frame whose header or trailer is damaged is refused or read differently; it never
    comes back as the original frame, and never leaves the parser waiting forever for
    more than its own declared length."""
    encoded = bytearray(encode_frame(frame.txnr, frame.command, frame.data))
    data_start = len(encoded) - len(frame.data) - 1
    position = where % len(encoded)
    if data_start <= position < len(encoded) - 1 or encoded[position : position + 1] == replacement:
        return  # a changed data byte is the payload's business, not the framing's
    encoded[position : position + 1] = replacement
    parser = FrameParser(max_data=10_000)
    try:
        frames = read_back(parser, bytes(encoded), reader)
    except RelpProtocolError:
        return
    assert frame not in frames
    assert parser.pending <= 10_000 + 64

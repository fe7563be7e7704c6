"""RELP, the Reliable Event Logging Protocol of rsyslog and librelp: pure framing and parsing.

Plain syslog over TCP has no acknowledgement, so a receiver that dies with our bytes unread
loses them silently. RELP wraps every syslog message in a numbered command, and the receiver
answers each number with ``200`` once it has taken the message; what was not answered was
not taken. This module holds only the wire format, with no I/O, so that property tests can
feed it anything; :mod:`exporter.relp_transport` moves the bytes.

The wire format, as librelp (rsyslog's ``imrelp``/``omrelp``) speaks it:

* Every message in either direction is a frame, ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``.
  TXNR is the transaction number, 1 to 9 decimal digits; COMMAND 1 to 32 ASCII letters;
  DATALEN the byte length of DATA in 1 to 9 digits. With DATALEN 0 there is neither the
  space nor DATA, the LF follows the length at once. The LF trailer is not a delimiter (DATA
  may hold LFs, DATALEN frames it) but a check: a frame that does not end in LF is broken.
* The client numbers its commands 1, 2, 3, ... from the start of each connection (after
  999,999,999 comes 1 again), and librelp's server refuses a number out of sequence.
* The client opens a session with ``open``, whose DATA is a list of offers, one a line,
  ``name=value[,value...]``: ``relp_version`` (librelp speaks 0), ``relp_software`` (name,
  version, URL) and ``commands`` (``syslog``, the one command we need).
* The server answers each command with an ``rsp`` frame carrying the command's TXNR; its
  DATA is three digits, a space, a short human text, and after an LF the command's reply
  data (for ``open``: the offers the server accepts). ``200`` is success, anything else
  (``500``) failure. Responses come in the order of the commands, but each names its
  command, so a client never has to rely on that.
* ``syslog`` carries one syslog message as DATA, exactly the bytes of the RFC 5424 line:
  DATALEN already frames it, so there is no octet count or LF of syslog's own inside.
* ``close`` (no data) ends the session; the server answers it and closes the connection.
* TXNR 0 is reserved for hints, which are never answered: the server sends ``serverclose``
  just before it closes a connection (shutting down or timing out an idle session).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TXNR = 999_999_999
MAX_DATALEN = 999_999_999
HINT_TXNR = 0

OPEN = b"open"
SYSLOG = b"syslog"
CLOSE = b"close"
RSP = b"rsp"
SERVERCLOSE = b"serverclose"

OK = 200
# librelp's protocol version; the spec's "version 1" was never released, rsyslog speaks 0.
RELP_VERSION = "0"

# A whole header with the byte after DATALEN; and what a header cut short may look like.
_HEADER = re.compile(rb"(\d{1,9}) ([A-Za-z]{1,32}) (\d{1,9})([ \n])")
_HEADER_PREFIX = re.compile(rb"\d{0,9}|\d{1,9} [A-Za-z]{0,32}|\d{1,9} [A-Za-z]{1,32} \d{0,9}")
_LONGEST_HEADER = 9 + 1 + 32 + 1 + 9 + 1
_COMMAND = re.compile(rb"[A-Za-z]{1,32}")
_KNOWN_COMMANDS = frozenset({OPEN, SYSLOG, CLOSE, RSP, SERVERCLOSE})  # valid: no regex per frame
# rsyslog's answer to a message it took, whole: what a sender reads a thousand times a page,
# and a run of them back to back.
_OK_ANSWER = re.compile(rb"([1-9]\d{0,8}) rsp 6 200 OK\n")  # never number 0, a hint's
_OK_ANSWER_RUN = re.compile(rb"(?:[1-9]\d{0,8} rsp 6 200 OK\n)+")
_RESPONSE_HEAD = re.compile(rb"(\d{3}) ([^\n]*)(?:\n|$)")


class RelpProtocolError(ValueError):
    """The peer sent something that is not RELP; the connection cannot be trusted any more."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One RELP frame: a numbered command and its data."""

    txnr: int
    command: bytes
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Answers:
    """What a sender read: the transaction numbers answered ``200 OK`` with no reply data
    (rsyslog's answer to a message it took), and every other frame, each in order."""

    taken: list[int]
    frames: list[Frame]

    def reply_to(self, txnr: int) -> bytes | None:
        """The data of the answer to ``txnr`` among these, or None."""
        if txnr in self.taken:
            return _OK_RESPONSE
        return next((frame.data for frame in self.frames if frame.txnr == txnr), None)


@dataclass(frozen=True, slots=True)
class Response:
    """The data of an ``rsp`` frame: status code, human text, and the reply data after LF."""

    code: int
    text: str
    data: bytes = b""

    @property
    def ok(self) -> bool:
        return self.code == OK


def next_txnr(txnr: int) -> int:
    """The transaction number after ``txnr``: one more, back to 1 after 999,999,999."""
    return 1 if txnr >= MAX_TXNR else txnr + 1


def frame_head(txnr: int, command: bytes, length: int) -> bytes:
    """What precedes a frame's data (``TXNR SP COMMAND SP DATALEN SP``); ValueError for a
    number, command or length RELP cannot carry.

    A sender writes it, the data and LF side by side, so an event of 12 kB is not copied
    into a frame of its own before it is copied into the connection's write.
    """
    if not 0 <= txnr <= MAX_TXNR:
        raise ValueError(f"RELP transaction number must be 0..{MAX_TXNR}, got {txnr}")
    if command not in _KNOWN_COMMANDS and not _COMMAND.fullmatch(command):
        raise ValueError(f"RELP command must be 1 to 32 ASCII letters, got {command!r}")
    if length > MAX_DATALEN:
        raise ValueError(f"RELP data of {length} bytes exceeds {MAX_DATALEN}")
    return b"%d %s %d " % (txnr, command, length)


def encode_frame(txnr: int, command: bytes, data: bytes = b"") -> bytes:
    """The bytes of one frame; ValueError for a number, command or length RELP cannot carry."""
    head = frame_head(txnr, command, len(data))
    if data:
        return head + data + b"\n"
    return head[:-1] + b"\n"  # no data: the length is followed by LF, not a space


def encode_offers(offers: dict[str, tuple[str, ...]]) -> bytes:
    """Offers as ``open`` and its response carry them: ``name=v1,v2`` lines joined by LF."""
    return "\n".join(f"{name}={','.join(values)}" for name, values in offers.items()).encode()


def client_offers(software: str, version: str) -> bytes:
    """What this client offers when it opens a session: RELP 0, who it is, and ``syslog``."""
    return encode_offers(
        {
            "relp_version": (RELP_VERSION,),
            "relp_software": (software, version),
            "commands": (SYSLOG.decode(),),
        }
    )


def parse_offers(data: bytes) -> dict[str, tuple[str, ...]]:
    """Offers back to names and values, as librelp reads them (an empty value is left out)."""
    offers: dict[str, tuple[str, ...]] = {}
    for line in data.decode("utf-8", errors="replace").split("\n"):
        if not line:
            continue
        name, _, values = line.partition("=")
        offers[name] = tuple(value for value in values.split(",") if value)
    return offers


_OK_RESPONSE = b"200 OK"
_OK = Response(200, "OK")


def parse_response(data: bytes) -> Response:
    """The DATA of an ``rsp`` frame: three digits, a space, text up to LF, then reply data."""
    if data == _OK_RESPONSE:  # rsyslog's answer to every message it took: read once per event
        return _OK
    match = _RESPONSE_HEAD.match(data)
    if match is None:
        raise RelpProtocolError(f"malformed RELP response {data[:40]!r}")
    text = match.group(2).decode("utf-8", errors="replace")
    return Response(int(match.group(1)), text, data[match.end() :])


class FrameParser:
    """Turns received bytes, cut anywhere, into frames; incremental and never blocking.

    ``feed`` returns the frames completed by the bytes given and keeps the remainder for
    the next call. Anything that cannot be the start of a frame raises ``RelpProtocolError``
    as soon as it is seen, so a garbled or hostile stream ends the connection instead of
    waiting for bytes that will never make sense. ``max_data`` bounds the DATALEN accepted,
    so a peer cannot make us buffer a gigabyte: our peer is a server that sends responses
    and hints, whose data is a few hundred bytes.
    """

    def __init__(self, max_data: int = 65_536) -> None:
        self._buffer = bytearray()
        self._max_data = max_data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """The frames ``data`` completes, in order."""
        self._buffer += data
        frames: list[Frame] = []
        self._take_frames(frames, None)
        return frames

    def read_answers(self, data: bytes) -> Answers:
        """As :meth:`feed`, but ``200 OK`` answers come back as their numbers alone.

        A sender reads a thousand such answers a page; rsyslog sends them back to back, and
        matching a run of them at once and keeping only their numbers costs a fraction of
        a frame object each. Their order among other frames is not kept: every answer names
        its command, so a sender never needs it.
        """
        self._buffer += data
        answers = Answers([], [])
        self._take_frames(answers.frames, answers.taken)
        return answers

    def _take_frames(self, frames: list[Frame], taken: list[int] | None) -> None:
        """Move the whole frames at the buffer's start into ``frames``, or, with ``taken``,
        runs of ``200 OK`` answers into ``taken`` as their transaction numbers."""
        buffer = self._buffer
        start = 0
        while start < len(buffer):
            if taken is not None and (run := _OK_ANSWER_RUN.match(buffer, start)):
                taken += map(int, _OK_ANSWER.findall(buffer, start, run.end()))
                start = run.end()
                continue
            frame, end = self._frame_at(start)
            if frame is None:
                break
            frames.append(frame)
            start = end
        del buffer[:start]

    def _frame_at(self, start: int) -> tuple[Frame | None, int]:
        """The frame starting at ``start`` and where it ends; (None, start) if incomplete."""
        buffer = self._buffer
        header = _HEADER.match(buffer, start)
        if header is None:
            rest = bytes(buffer[start : start + _LONGEST_HEADER])
            if len(rest) >= _LONGEST_HEADER or not _HEADER_PREFIX.fullmatch(rest):
                raise RelpProtocolError(f"malformed RELP frame header {rest[:40]!r}")
            return None, start
        txnr, command, length_text, separator = header.groups()
        length = int(length_text)
        if length > self._max_data:
            raise RelpProtocolError(f"RELP frame of {length} bytes exceeds {self._max_data}")
        if length == 0:
            if separator != b"\n":
                raise RelpProtocolError("RELP frame with no data must end right after its length")
            return Frame(int(txnr), bytes(command)), header.end()
        if separator != b" ":
            raise RelpProtocolError(f"RELP frame announces {length} bytes but carries none")
        data_end = header.end() + length
        if len(buffer) <= data_end:
            return None, start
        if buffer[data_end] != 0x0A:
            raise RelpProtocolError("RELP frame does not end with LF where its length says")
        return Frame(
            int(txnr), bytes(command), bytes(buffer[header.end() : data_end])
        ), data_end + 1

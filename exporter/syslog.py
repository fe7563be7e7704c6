"""RFC 5424 syslog output: pure framing, and a thin socket transport (TCP, TLS, UDP).

The framing half has no I/O, so property tests can hammer it. The transport half
only moves bytes and reports failures as ``exporter.errors.SinkUnavailable``; the caller
owns retry, backoff, metrics and the decision to mark events delivered.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from exporter.errors import SinkUnavailable
from exporter.pipeline import RawEvent, Refusal
from exporter.stream_write import write_parts

FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}

FRAMINGS: frozenset[str] = frozenset({"octet-counting", "lf"})
PROTOCOLS: frozenset[str] = frozenset({"tcp", "tls", "udp"})

# Largest UDP payload over IPv4 (65535 - 8 byte UDP header - 20 byte IP header).
MAX_UDP_DATAGRAM = 65507


class Message:
    """One RFC 5424 message as its two pieces: the header, and MSG after it.

    MSG is an event's JSON as it came, a view into its page; a writer puts the pieces side
    by side, so a 12 kB event is not copied into a message of its own before the kernel
    copies it into the connection (that copy was a twentieth of the collector's CPU).
    ``bytes(message)`` joins them (a copy that no longer holds the page).
    """

    __slots__ = ("body", "head")

    def __init__(self, head: bytes, body: bytes | memoryview) -> None:
        self.head = head
        self.body = body

    @property
    def size(self) -> int:
        """The message's length in bytes (``body`` is a byte view: its len counts bytes)."""
        return len(self.head) + len(self.body)

    def __bytes__(self) -> bytes:
        return self.head + self.body

    def __repr__(self) -> str:
        return f"Message({bytes(self)!r})"


NILVALUE = "-"
MAX_TIMESTAMP_YEAR = 2099
_HEADER_LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_ONE_LINE_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_NEWLINE = re.compile(b"\n")  # searches a memoryview too, where ``in`` looks for one byte
_RECV_PROBE_SIZE = 4096


def sanitize_header_field(value: str, max_length: int) -> str:
    """Make a header field legal RFC 5424 PRINTUSASCII, so a bad name cannot break parsing.

    Characters outside ``%d33-126`` become ``_`` (keeping the field recognisable, where
    dropping it would lose e.g. which source a message came from), the field is cut at
    ``max_length``, and an empty result becomes the NILVALUE ``-``.
    """
    cleaned = _NOT_PRINTUSASCII.sub("_", value)[:max_length]
    return cleaned or NILVALUE


def format_timestamp(timestamp: datetime | None) -> str:
    """RFC 5424 TIMESTAMP: UTC, ``Z``, exactly six fractional digits, or ``-`` when unknown.

    A naive datetime is refused: guessing its zone would silently shift event times. A year
    after 2099 becomes ``-``: rsyslog's RFC 5424 parser refuses it and would misread the
    whole message (the event itself still carries its time).
    """
    if timestamp is None:
        return NILVALUE
    utc = timestamp
    if utc.tzinfo is not UTC:  # every event time is read as UTC already: once per event
        if utc.tzinfo is None or utc.utcoffset() is None:
            raise ValueError("syslog timestamp must be timezone-aware")
        utc = utc.astimezone(UTC)
    if utc.year > MAX_TIMESTAMP_YEAR:
        return NILVALUE
    # isoformat pads the year to four digits and, with microseconds asked for, always
    # writes six fractional digits: the same text as formatting each field, in C; its
    # zone, "+00:00" in UTC, becomes "Z".
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def event_json(event: Mapping[str, Any]) -> bytes | memoryview:
    """Compact UTF-8 JSON as the SIEM's parser expects.

    orjson writes the same compact form as ``json.dumps(separators=(",", ":"),
    ensure_ascii=False)`` at a fifth of the cost, which is most of the collector's CPU per
    event. What it refuses (an integer beyond 64 bits, a lone surrogate that the API sent
    as ``"\\ud800"``) goes through the standard library, the surrogate written as its
    ``\\uXXXX`` escape, which means the same inside a JSON string. An event that came as
    compact JSON checked on arrival (:class:`~exporter.pipeline.RawEvent`) is sent as it came.
    """
    if isinstance(event, RawEvent):
        return event.json
    try:
        return orjson.dumps(event)
    except TypeError:
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text).encode()


def format_message(
    event: Mapping[str, Any],
    *,
    msgid: str,
    timestamp: datetime | None,
    hostname: str,
    procid: str,
    facility: int = 16,
    severity: int = 6,
    app_name: str = "siem-exporter",
) -> Message:
    """One event as one RFC 5424 message, MSG being the event's compact JSON on one line.

    No structured data and no BOM: the SIEM's JSON parser must read MSG exactly as sent,
    and JSON escapes every control character, so the message never contains a newline.
    """
    return _format(
        event_json(event),
        msgid=msgid,
        timestamp=timestamp,
        hostname=hostname,
        procid=procid,
        facility=facility,
        severity=severity,
        app_name=app_name,
    )


def format_text_message(
    text: str,
    *,
    msgid: str,
    timestamp: datetime | None,
    hostname: str,
    procid: str,
    facility: int = 16,
    severity: int = 6,
    app_name: str = "siem-exporter",
) -> Message:
    """An RFC 5424 message whose MSG is free ``text`` (the in-band WARNING lines).

    Control characters (and lone surrogates, which UTF-8 cannot hold) become spaces, so
    the text stays one encodable line whatever a condition's description contains.
    """
    return _format(
        _NOT_ONE_LINE_TEXT.sub(" ", text).encode(),
        msgid=msgid,
        timestamp=timestamp,
        hostname=hostname,
        procid=procid,
        facility=facility,
        severity=severity,
        app_name=app_name,
    )


def _format(
    body: bytes | memoryview,
    *,
    msgid: str,
    timestamp: datetime | None,
    hostname: str,
    procid: str,
    facility: int,
    severity: int,
    app_name: str,
) -> Message:
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be 0..23, got {facility}")
    if not 0 <= severity <= 7:
        raise ValueError(f"syslog severity must be 0..7, got {severity}")
    pri = facility * 8 + severity
    tail = _header_tail(hostname, app_name, procid, msgid)
    return Message(f"<{pri}>1 {format_timestamp(timestamp)} {tail} ".encode(), body)


@functools.lru_cache(maxsize=256)
def _header_tail(hostname: str, app_name: str, procid: str, msgid: str) -> str:
    """The header fields after TIMESTAMP, sanitised once per distinct combination."""
    return " ".join(
        (
            sanitize_header_field(hostname, _HEADER_LIMITS["hostname"]),
            sanitize_header_field(app_name, _HEADER_LIMITS["app_name"]),
            sanitize_header_field(procid, _HEADER_LIMITS["procid"]),
            sanitize_header_field(msgid, _HEADER_LIMITS["msgid"]),
            NILVALUE,
        )
    )


def frame_parts(message: Message, framing: str) -> tuple[bytes | memoryview, ...]:
    """Frame one message for a stream transport (RFC 6587), as the pieces a writer puts
    side by side (so the message is not copied into a frame of its own).

    Octet-counting prefixes the byte length, so receivers never have to guess where a
    message ends; LF framing relies on the message holding no newline, which is checked.
    """
    if framing == "octet-counting":
        return b"%d %s" % (message.size, message.head), message.body
    if framing == "lf":
        if b"\n" in message.head or _NEWLINE.search(message.body):
            raise ValueError("LF framing cannot carry a message containing a newline")
        return message.head, message.body, b"\n"
    raise ValueError(f"unknown syslog framing {framing!r}; expected octet-counting or lf")


class SyslogTransport:
    """Sends batches of formatted messages to one syslog receiver.

    TCP and TLS keep one connection and reconnect lazily after any failure. Plain TCP
    syslog has no acknowledgement, so "accepted" means: written completely to a
    connection whose peer had not closed it before or just after the write. That
    catches a restarted or stopped receiver (the usual outage) without claiming more;
    a peer that dies while our bytes sit unread in its buffer cannot be detected.
    UDP offers no delivery signal at all beyond ICMP errors on a connected socket.

    Every source thread sends through the same transport, and a batch of production-sized
    events is megabytes that the kernel takes in many writes: the transport owns its
    connection and lets one caller at a time use it (send, peer-closed probe, reconnect,
    close), so batches never interleave on the wire and a TLS socket never sees two threads.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        protocol: str,
        framing: str,
        ca_file: str | os.PathLike[str] | None = None,
        connect_timeout: float = 5.0,
        send_timeout: float = 10.0,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown syslog protocol {protocol!r}; expected tcp, tls or udp")
        if framing not in FRAMINGS:
            raise ValueError(f"unknown syslog framing {framing!r}; expected octet-counting or lf")
        self._host = host
        self._port = port
        self._protocol = protocol
        self._framing = framing
        self._ca_file = ca_file
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """``host:port`` as used in error messages and logs."""
        return endpoint_text(self._host, self._port)

    def deliver(self, messages: Sequence[Message]) -> Sequence[Refusal]:
        """Send formatted messages (from ``format_message``), framed as configured.

        Returns only when every message was handed over; on any failure the socket is
        closed, so the next call reconnects, and ``SinkUnavailable`` tells the caller to
        re-send the whole batch (a duplicate is better than a loss). No retries here.
        Concurrent callers wait for each other: the whole batch goes out in one turn.
        Plain syslog has no answer to refuse with, so nothing is ever refused.
        """
        if messages:
            stream = None if self._protocol == "udp" else self._frame_all(messages)
            with self._lock:
                self._deliver_locked(messages, stream)
        return ()

    def _deliver_locked(
        self, messages: Sequence[Message], stream: list[bytes | memoryview] | None
    ) -> None:
        try:
            if stream is None:
                self._send_datagrams(messages)
            else:
                self._send_stream(stream)
        except SinkUnavailable:
            self._drop_connection()
            raise
        except (OSError, UnicodeError) as error:
            self._drop_connection()
            raise SinkUnavailable(f"syslog {self.endpoint}: {describe_error(error)}") from error

    def _frame_all(self, messages: Sequence[Message]) -> list[bytes | memoryview]:
        """The batch as the pieces of one stream, in order, each message framed as configured."""
        framing = self._framing
        return [part for message in messages for part in frame_parts(message, framing)]

    def close(self) -> None:
        """Drop the connection; safe to call at any time, also twice and from any thread."""
        with self._lock:
            self._drop_connection()

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _send_stream(self, parts: list[bytes | memoryview]) -> None:
        if self._sock is not None and self._peer_closed(self._sock):
            self._drop_connection()
        if self._sock is None:
            self._sock = self._connect_stream()
        write_parts(self._sock, parts)
        if self._peer_closed(self._sock):
            raise SinkUnavailable(f"syslog {self.endpoint}: connection closed by peer")

    def _connect_stream(self) -> socket.socket:
        return connect_stream(
            self._host,
            self._port,
            tls=self._protocol == "tls",
            ca_file=self._ca_file,
            connect_timeout=self._connect_timeout,
            timeout=self._send_timeout,
        )

    def _send_datagrams(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if message.size > MAX_UDP_DATAGRAM:
                raise SinkUnavailable(
                    f"syslog {self.endpoint}: message of {message.size} bytes exceeds the "
                    f"UDP maximum of {MAX_UDP_DATAGRAM} bytes; use tcp or tls"
                )
        if self._sock is None:
            self._sock = self._connect_datagram()
        for message in messages:
            self._sock.sendmsg((message.head, message.body))

    def _connect_datagram(self) -> socket.socket:
        """A connected UDP socket, so ICMP "port unreachable" surfaces as an error."""
        family, kind, proto, _, address = socket.getaddrinfo(
            self._host, self._port, type=socket.SOCK_DGRAM
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(self._send_timeout)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """Non-blocking check whether the receiver has closed or reset the connection.

        Syslog receivers never send application data, so anything readable is either
        EOF, an error, or (with TLS 1.3) session tickets the TLS layer consumes itself.
        """
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            while True:
                if not sock.recv(_RECV_PROBE_SIZE):
                    return True
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)


def endpoint_text(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets, as error messages and logs name a receiver."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_stream(
    host: str,
    port: int,
    *,
    tls: bool,
    ca_file: str | os.PathLike[str] | None,
    connect_timeout: float,
    timeout: float,
) -> socket.socket:
    """A TCP connection to a stream receiver, wrapped in verified TLS when ``tls``.

    TLS trusts the system roots, or only ``ca_file`` when given, and checks that the
    certificate names ``host``: the SIEM's identity is proven before any event is sent.
    Every stream transport (syslog over TCP/TLS, RELP) connects here, so they verify alike.
    """
    sock = socket.create_connection((host, port), timeout=connect_timeout)
    try:
        if tls:
            context = ssl.create_default_context(cafile=ca_file)
            sock = context.wrap_socket(sock, server_hostname=host)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def describe_error(error: BaseException) -> str:
    """Name the cause without echoing payloads: a short, stable phrase per failure kind."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or "unknown reason"
        return f"TLS certificate verify failed ({detail})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error.__class__.__name__})"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host ({error.strerror})"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError):
        return error.strerror or error.__class__.__name__
    return str(error)

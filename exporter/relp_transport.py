"""A RELP client: sends batches of syslog messages and returns only once each was acknowledged.

The counterpart of :class:`exporter.syslog.SyslogTransport` for receivers that speak RELP
(rsyslog's ``imrelp``): the same ``deliver``/``close`` interface, the same TLS (verified
certificate and host name, from :func:`exporter.syslog.connect_stream`), and the same rule
that the caller (``Delivery``) owns retries. What changes is what "accepted" means: here
every message was answered ``200`` by the receiver, so a receiver that dies with messages
in flight cannot make us believe they arrived.

At most ``window`` messages are unacknowledged at any time (rsyslog's ``omrelp`` uses 128):
enough to keep the connection busy, and the bound on repeats. When a batch fails half way
(the connection breaks, the receiver closes the session, a message is answered ``500``) the
transport remembers which messages of it the receiver did acknowledge; when ``Delivery``
sends the same batch again, those are skipped (other batches may go in between: several
sources share the transport). So a retry repeats only messages that were in flight,
unanswered, when the connection broke: at most ``window`` of them, and only if the receiver
took them but its answer was lost. A message is recognised by its exact bytes, which a
batch formats identically each time; two different events never have the same bytes, as
the ledger keeps a second copy of an event from being sent at all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
from collections import deque
from collections.abc import Sequence

from exporter import __version__
from exporter.errors import SinkUnavailable
from exporter.logs import fields
from exporter.pipeline import Refusal
from exporter.relp import (
    CLOSE,
    HINT_TXNR,
    OPEN,
    RSP,
    SERVERCLOSE,
    SYSLOG,
    Answers,
    FrameParser,
    RelpProtocolError,
    client_offers,
    encode_frame,
    frame_head,
    next_txnr,
    parse_offers,
    parse_response,
)
from exporter.stream_write import write_parts
from exporter.syslog import Message, connect_stream, describe_error, endpoint_text

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 128
# A message answered 500 this many times in a row is refused for good, not retried again.
REJECT_AFTER = 3
SOFTWARE = "siem-exporter"
_RECV_SIZE = 65_536
_CLOSE_TIMEOUT = 2.0
_BURST_BYTES = 256 * 1024
# What the transport remembers of failed batches, in message bytes, before it forgets the
# oldest: forgetting costs at most a repeated message, never a lost one.
MEMORY_LIMIT = 64 * 1024 * 1024


class _Tally:
    """A count per message, bounded in bytes, the oldest message forgotten first.

    A message is kept as its own bytes: a :class:`Message` holds a view into its whole
    page, which would keep 12 MB alive for every 12 kB remembered.
    """

    def __init__(self, limit: int = MEMORY_LIMIT) -> None:
        self._counts: dict[bytes, int] = {}
        self._size = 0
        self._limit = limit

    def count(self, message: Message) -> int:
        return self._counts.get(bytes(message), 0) if self._counts else 0

    def add(self, message: Message | bytes) -> None:
        key = bytes(message)
        if key not in self._counts:
            self._size += len(key)
        self._counts[key] = self._counts.get(key, 0) + 1
        while self._size > self._limit:
            self._drop(next(iter(self._counts)))

    def take(self, message: Message) -> bool:
        """Count ``message`` down by one; False when it was not counted at all."""
        if not self._counts:  # the usual case; looking a 12 kB message up would copy it
            return False
        key = bytes(message)
        count = self._counts.get(key, 0)
        if count == 0:
            return False
        if count == 1:
            self._drop(key)
        else:
            self._counts[key] = count - 1
        return True

    def forget(self, message: Message) -> None:
        if self._counts:
            self._drop(bytes(message))

    def _drop(self, key: bytes) -> None:
        if self._counts.pop(key, None) is not None:
            self._size -= len(key)


def _answered(in_flight: dict[int, int], txnr: int) -> int:
    """The position of the message ``txnr`` answers, which is in flight no more."""
    position = in_flight.pop(txnr, -1)
    if position < 0:
        raise RelpProtocolError(f"answer to transaction {txnr}, not in flight")
    return position


class _Session:
    """One open RELP session: its connection, the frames half received, the last number used."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = FrameParser()
        self.txnr = 0
        self.server_closing = False

    def number(self) -> int:
        """The transaction number for the next command."""
        self.txnr = next_txnr(self.txnr)
        return self.txnr


class RelpTransport:
    """Delivers batches of formatted syslog messages to one RELP receiver.

    One connection, opened lazily and reopened after any failure; every source thread
    sends through it, so a lock gives one caller at a time the whole session (transaction
    numbers must reach the receiver in order, and a TLS socket must not see two threads).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        window: int = DEFAULT_WINDOW,
        connect_timeout: float = 5.0,
        ack_timeout: float = 10.0,
        reject_after: int = REJECT_AFTER,
    ) -> None:
        if window < 1:
            raise ValueError(f"RELP window must be at least 1, got {window}")
        self._host = host
        self._port = port
        self._tls = tls
        self._ca_file = ca_file
        self._window = window
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._reject_after = reject_after
        self._lock = threading.Lock()
        self._session: _Session | None = None
        # Of batches that failed: the messages the receiver acknowledged all the same (not
        # sent again when the batch is), and how often in a row it refused each refused one.
        self._acked = _Tally()
        self._refusals = _Tally()

    @property
    def endpoint(self) -> str:
        return endpoint_text(self._host, self._port)

    def deliver(self, messages: Sequence[Message]) -> Sequence[Refusal]:
        """Send the messages, each as one ``syslog`` command; return once all are answered.

        Returns the messages (by position) the receiver refused ``reject_after`` times in a
        row, which no retry will deliver, when every other message got ``200``.
        ``SinkUnavailable`` when the receiver could not be reached, broke the connection or
        refused a message fewer times than that (re-send the batch: what it acknowledged is
        not sent twice).
        """
        if not messages:
            return ()
        with self._lock:
            try:
                return self._deliver_locked(messages)
            except SinkUnavailable:
                self._drop_session()
                raise
            except (OSError, RelpProtocolError) as error:
                self._drop_session()
                raise SinkUnavailable(f"relp {self.endpoint}: {describe_error(error)}") from error

    def close(self) -> None:
        """End the session politely (``close``, wait briefly for its answer) and disconnect."""
        with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            try:
                session.sock.settimeout(_CLOSE_TIMEOUT)
                txnr = session.number()
                session.sock.sendall(encode_frame(txnr, CLOSE))
                while True:
                    answers = self._receive(session)
                    if session.server_closing or answers.reply_to(txnr) is not None:
                        break
            except (OSError, RelpProtocolError, SinkUnavailable):
                pass
            finally:
                with contextlib.suppress(OSError):
                    session.sock.close()

    def _deliver_locked(self, messages: Sequence[Message]) -> Sequence[Refusal]:
        acked: list[Message] = []
        todo: deque[int] = deque()
        for position, message in enumerate(messages):
            if self._acked.take(message):
                acked.append(message)
            else:
                todo.append(position)
        refused: dict[int, str] = {}
        try:
            self._exchange(messages, todo, acked, refused)
            return self._refuse(messages, refused) if refused else ()
        except BaseException:
            self._remember(acked)
            raise

    def _remember(self, acked: list[Message]) -> None:
        """The batch failed: keep what the receiver took, so its retry does not send it again."""
        for message in acked:
            self._acked.add(message)

    def _refuse(self, messages: Sequence[Message], refused: dict[int, str]) -> list[Refusal]:
        """A batch the receiver answered ``500`` in part: retry it (raise), or give up the
        refused messages once each has been refused ``reject_after`` times in a row."""
        for content in {bytes(messages[position]) for position in refused}:
            self._refusals.add(content)  # once a batch per message, however often it holds it
        answer = next(iter(refused.values()))
        permanent = tuple(
            position
            for position in refused
            if self._refusals.count(messages[position]) >= self._reject_after
        )
        if len(permanent) == len(refused):
            return [
                Refusal(
                    position,
                    "refused",
                    f"relp {self.endpoint}: receiver refused it {self._reject_after} times "
                    f"in a row ({refused[position]})",
                )
                for position in permanent
            ]
        raise SinkUnavailable(
            f"relp {self.endpoint}: receiver refused {len(refused)} of {len(messages)} "
            f"messages ({answer})"
        )

    def _exchange(
        self,
        messages: Sequence[Message],
        todo: deque[int],
        acked: list[Message],
        refused: dict[int, str],
    ) -> None:
        """Keep up to ``window`` messages in flight until every one of ``todo`` is answered."""
        session = self._usable_session()
        in_flight: dict[int, int] = {}
        while todo or in_flight:
            if todo and len(in_flight) < self._window:
                # Fill the window before waiting for answers, in writes of a bounded size:
                # the socket timeout covers each whole write, and the answers are a few
                # bytes each, so they wait in our receive buffer meanwhile.
                burst: list[bytes | memoryview] = []
                size = 0
                while todo and len(in_flight) < self._window and size < _BURST_BYTES:
                    position = todo.popleft()
                    txnr = session.number()
                    in_flight[txnr] = position
                    message = messages[position]
                    head = frame_head(txnr, SYSLOG, message.size) + message.head
                    burst += (head, message.body, b"\n")
                    size += message.size
                write_parts(session.sock, burst)
                continue
            answers = self._receive(session)
            taken = [_answered(in_flight, txnr) for txnr in answers.taken]
            for frame in answers.frames:
                position = _answered(in_flight, frame.txnr)
                response = parse_response(frame.data)
                if response.ok:
                    taken.append(position)
                else:
                    refused[position] = f"{response.code} {response.text}"
            for position in taken:
                acked.append(messages[position])
                self._refusals.forget(messages[position])
            if session.server_closing and (todo or in_flight):
                raise SinkUnavailable(
                    f"relp {self.endpoint}: receiver closed the session (serverclose) with "
                    f"{len(in_flight)} message(s) unacknowledged"
                )
        if session.server_closing:
            self._drop_session()

    def _receive(self, session: _Session) -> Answers:
        """The next answers from the receiver (blocking for at least one, or a serverclose)."""
        while True:
            try:
                data = session.sock.recv(_RECV_SIZE)
            except TimeoutError:
                raise SinkUnavailable(
                    f"relp {self.endpoint}: no answer within {self._ack_timeout:g}s"
                ) from None
            if not data:
                raise SinkUnavailable(f"relp {self.endpoint}: connection closed by receiver")
            received = session.parser.read_answers(data)
            answers = Answers(received.taken, [])
            for frame in received.frames:
                if frame.txnr == HINT_TXNR:
                    # Hints are advisory and unanswered; the one we act on is serverclose.
                    session.server_closing |= frame.command == SERVERCLOSE
                elif frame.command == RSP:
                    answers.frames.append(frame)
                else:
                    raise RelpProtocolError(f"server sent command {frame.command!r}")
            if answers.taken or answers.frames or session.server_closing:
                return answers

    def _usable_session(self) -> _Session:
        """The open session, or a new one when there is none or the receiver ended it."""
        session = self._session
        if session is not None and not self._still_open(session):
            log.info(
                "RELP receiver closed the idle session, reconnecting",
                extra=fields(receiver=self.endpoint),
            )
            self._drop_session()
            session = None
        if session is None:
            session = self._session = self._open()
        return session

    def _open(self) -> _Session:
        """Connect, send ``open`` with our offers, and check the receiver accepts ``syslog``."""
        sock = connect_stream(
            self._host,
            self._port,
            tls=self._tls,
            ca_file=self._ca_file,
            connect_timeout=self._connect_timeout,
            timeout=self._ack_timeout,
        )
        session = _Session(sock)
        try:
            txnr = session.number()
            sock.sendall(encode_frame(txnr, OPEN, client_offers(SOFTWARE, __version__)))
            reply = self._receive(session).reply_to(txnr)
            if reply is None:
                raise SinkUnavailable(f"relp {self.endpoint}: receiver did not answer open")
            response = parse_response(reply)
            if not response.ok:
                raise SinkUnavailable(
                    f"relp {self.endpoint}: receiver refused the session "
                    f"({response.code} {response.text})"
                )
            offers = parse_offers(response.data)
            if SYSLOG.decode() not in offers.get("commands", ()):
                raise SinkUnavailable(
                    f"relp {self.endpoint}: receiver does not offer the syslog command"
                )
        except BaseException:
            sock.close()
            raise
        log.info(
            "RELP session open",
            extra=fields(
                receiver=self.endpoint,
                tls=self._tls,
                receiver_software=",".join(offers.get("relp_software", ())),
            ),
        )
        return session

    @staticmethod
    def _still_open(session: _Session) -> bool:
        """Non-blocking: False when the receiver closed or reset the idle connection.

        Between batches nothing is in flight, so any frame that arrives (a ``serverclose``
        hint, or an answer to nothing) means the session cannot be used any more.
        """
        sock = session.sock
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            while True:
                data = sock.recv(_RECV_SIZE)
                if not data or session.parser.feed(data):
                    return False
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except (OSError, RelpProtocolError):
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(timeout)

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(OSError):
                session.sock.close()

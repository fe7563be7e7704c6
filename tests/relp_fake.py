"""A scriptable RELP receiver on a loopback port, for what a real rsyslogd will not do on cue.

rsyslog answers every well-formed ``syslog`` frame with ``200``; to see the client handle a
``500``, a connection cut mid-window, a ``serverclose`` or a silent receiver, this server
speaks the receiving side of RELP with :class:`exporter.relp.FrameParser` and lets a test
decide, per message, what happens. It records every message it answered ``200``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from exporter.relp import (
    CLOSE,
    OPEN,
    SERVERCLOSE,
    SYSLOG,
    FrameParser,
    encode_frame,
    parse_offers,
)

OPEN_OK = b"200 OK\nrelp_version=0\nrelp_software=fake,1\ncommands=syslog"


@dataclass
class Behaviour:
    """What the receiver does; each hook gets the message (or offers) it is about to answer.

    ``answer`` returns the rsp text for a message (``b"200 OK"``, ``b"500 no"``), ``b""`` to
    take it without answering (as if the answer were lost), or None to cut the connection; ``open_answer`` is the rsp data for ``open``.
    ``serverclose_after`` sends ``serverclose`` and closes after that many answers.
    """

    answer: Callable[[bytes], bytes | None] = lambda message: b"200 OK"
    open_answer: bytes = OPEN_OK
    serverclose_after: int | None = None
    silent: bool = False


@dataclass
class FakeRelpServer:
    behaviour: Behaviour = field(default_factory=Behaviour)
    accepted: list[bytes] = field(default_factory=list)
    offers: list[dict[str, tuple[str, ...]]] = field(default_factory=list)
    connections: int = 0
    max_in_flight: int = 0
    closes: int = 0

    def __post_init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        parser = FrameParser(max_data=10_000_000)
        answered = 0
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                frames = parser.feed(data)
                # Everything in one read was sent before any answer: a lower bound of the
                # client's unanswered frames at that moment.
                self.max_in_flight = max(self.max_in_flight, len(frames))
                for frame in frames:
                    if self.behaviour.silent:
                        continue
                    if frame.command == OPEN:
                        self.offers.append(parse_offers(frame.data))
                        conn.sendall(encode_frame(frame.txnr, b"rsp", self.behaviour.open_answer))
                    elif frame.command == CLOSE:
                        self.closes += 1
                        conn.sendall(
                            encode_frame(frame.txnr, b"rsp") + encode_frame(0, SERVERCLOSE)
                        )
                        return
                    elif frame.command == SYSLOG:
                        answer = self.behaviour.answer(frame.data)
                        if answer is None:
                            return
                        if answer.startswith(b"200") or not answer:
                            with self._lock:
                                self.accepted.append(frame.data)
                        if not answer:
                            continue
                        conn.sendall(encode_frame(frame.txnr, b"rsp", answer))
                        answered += 1
                        if answered == self.behaviour.serverclose_after:
                            conn.sendall(encode_frame(0, SERVERCLOSE))
                            _linger(conn)
                            return

    def close(self) -> None:
        self._server.close()


def _linger(conn: socket.socket) -> None:
    """Close our side but read until the client closes: closing with unread bytes would
    reset the connection, and a reset can discard the serverclose hint before it is read."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(2.0)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass

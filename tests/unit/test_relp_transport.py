"""The RELP client against a scripted receiver: a batch is accepted only when every message
was answered 200, a window bounds what is in flight and what a retry repeats, and a message
refused again and again is given up by position instead of blocking the batch forever."""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from exporter.errors import SinkUnavailable
from exporter.relp_transport import RelpTransport, _Tally
from exporter.syslog import Message
from tests.relp_fake import Behaviour, FakeRelpServer
from tests.stack import free_port


@pytest.fixture
def server() -> Iterator[FakeRelpServer]:
    fake = FakeRelpServer()
    yield fake
    fake.close()


def transport_to(server: FakeRelpServer, **options: float) -> RelpTransport:
    return RelpTransport(host="127.0.0.1", port=server.port, ack_timeout=2.0, **options)  # type: ignore[arg-type]


def messages(count: int, start: int = 0) -> list[Message]:
    return [
        Message(b"<134>1 - h siem-exporter 1 signins - ", memoryview(b'{"id":%d}' % n))
        for n in range(start, start + count)
    ]


def wire(batch: list[Message]) -> list[bytes]:
    """The messages as the receiver sees them."""
    return [bytes(message) for message in batch]


def deliver_within(transport: RelpTransport, batch: list[Message], seconds: float = 10.0) -> None:
    """``deliver``, but a transport that never returns fails the test instead of hanging it."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            transport.deliver(batch)
            outcome.append(None)
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"deliver did not return within {seconds}s"
    if outcome[0] is not None:
        raise outcome[0]


def test_a_batch_is_delivered_in_order_and_the_session_is_reused(server: FakeRelpServer) -> None:
    transport = transport_to(server)
    batch = messages(300)
    transport.deliver(batch[:100])
    transport.deliver(batch[100:])
    transport.close()
    assert server.accepted == wire(batch)
    assert server.connections == 1 and server.closes == 1
    assert server.offers[0]["commands"] == ("syslog",)
    assert server.offers[0]["relp_software"][0] == "siem-exporter"


def test_never_more_than_the_window_is_in_flight(server: FakeRelpServer) -> None:
    transport = transport_to(server, window=4)
    transport.deliver(messages(200))
    transport.close()
    assert len(server.accepted) == 200
    assert 1 <= server.max_in_flight <= 4


def test_a_broken_connection_fails_the_batch_and_the_retry_repeats_only_the_window(
    server: FakeRelpServer,
) -> None:
    """The receiver takes 50 messages, then dies before answering the 51st: the batch is not
    accepted, and its retry sends only what was not acknowledged."""
    answered = Counter[bytes]()
    cut = threading.Event()

    def answer(message: bytes) -> bytes | None:
        if len(answered) == 50 and not cut.is_set():
            cut.set()
            return None
        answered[message] += 1
        return b"200 OK"

    server.behaviour = Behaviour(answer=answer)
    transport = transport_to(server, window=8)
    batch = messages(200)
    with pytest.raises(SinkUnavailable, match=r"closed by receiver|reset|Broken pipe"):
        deliver_within(transport, batch)
    transport.deliver(batch)
    arrived = Counter(server.accepted)
    assert set(arrived) == set(wire(batch))
    # Usually nothing repeats; but the cut may discard an answer already sent (a reset
    # drops what the client had not read yet), and that message is then sent again.
    assert sum(count - 1 for count in arrived.values()) <= 8, "at most the window repeats"
    assert server.connections == 2


def test_what_a_retry_repeats_is_at_most_the_window(server: FakeRelpServer) -> None:
    """The worst case: the receiver took a whole window of messages and every answer was
    lost. Those, and only those, arrive twice."""
    calls = Counter[str]()

    def answer(message: bytes) -> bytes:
        calls["n"] += 1
        return b"" if 50 < calls["n"] <= 58 else b"200 OK"

    server.behaviour = Behaviour(answer=answer)
    transport = RelpTransport(host="127.0.0.1", port=server.port, window=8, ack_timeout=0.5)
    batch = messages(200)
    with pytest.raises(SinkUnavailable, match="no answer"):
        transport.deliver(batch)
    transport.deliver(batch)
    repeats = Counter(server.accepted)
    assert set(repeats) == set(wire(batch))
    assert sum(n - 1 for n in repeats.values()) == 8


def test_another_sources_batch_in_between_does_not_make_the_retry_repeat_more(
    server: FakeRelpServer,
) -> None:
    """Sources share the transport: a batch that failed may be retried after others."""
    calls = Counter[str]()

    def answer(message: bytes) -> bytes | None:
        calls["n"] += 1
        return None if calls["n"] in (10, 11) else b"200 OK"

    server.behaviour = Behaviour(answer=answer)
    transport = transport_to(server)
    first, other = messages(20), messages(5, start=100)
    with pytest.raises(SinkUnavailable):
        transport.deliver(first)
    with pytest.raises(SinkUnavailable):
        transport.deliver(other)  # the receiver refused a connection meanwhile, say
    transport.deliver(other)
    transport.deliver(first)
    assert sorted(server.accepted) == sorted(wire(first + other))


def test_a_500_is_not_accepted_and_only_the_refused_message_is_sent_again(
    server: FakeRelpServer,
) -> None:
    refused_once = threading.Event()

    def answer(message: bytes) -> bytes:
        if message.endswith(b'{"id":7}') and not refused_once.is_set():
            refused_once.set()
            return b"500 try later"
        return b"200 OK"

    server.behaviour = Behaviour(answer=answer)
    transport = transport_to(server)
    batch = messages(20)
    with pytest.raises(SinkUnavailable, match=r"refused 1 of 20 messages \(500 try later\)"):
        transport.deliver(batch)
    transport.deliver(batch)
    assert sorted(server.accepted) == sorted(wire(batch))
    assert server.connections == 2  # a refusal ends the session: the retry starts afresh


def test_a_message_refused_again_and_again_is_rejected_by_position(
    server: FakeRelpServer,
) -> None:
    server.behaviour = Behaviour(
        answer=lambda m: b"500 too big" if m.endswith(b'{"id":3}') else b"200 OK"
    )
    transport = transport_to(server, reject_after=3)
    batch = messages(10)
    for _ in range(2):
        with pytest.raises(SinkUnavailable):
            transport.deliver(batch)
    (refusal,) = transport.deliver(batch)
    assert refusal.index == 3
    assert refusal.reason == "refused"
    assert "500 too big" in refusal.detail
    assert sorted(server.accepted) == sorted(wire(batch[:3] + batch[4:]))


def test_a_message_twice_in_a_batch_counts_one_refusal_per_batch(
    server: FakeRelpServer,
) -> None:
    """The count is of a message's content: two copies refused in one batch are one
    refusal of it, so it takes ``reject_after`` batches, not half as many, to give up."""
    server.behaviour = Behaviour(
        answer=lambda m: b"500 too big" if m.endswith(b'{"id":3}') else b"200 OK"
    )
    transport = transport_to(server, reject_after=2)
    twice = messages(5) + messages(1, start=3)
    with pytest.raises(SinkUnavailable):
        transport.deliver(twice)
    refusals = transport.deliver(twice)
    assert sorted(refusal.index for refusal in refusals) == [3, 5]


def test_serverclose_mid_batch_fails_it_and_the_next_attempt_reconnects(
    server: FakeRelpServer,
) -> None:
    server.behaviour = Behaviour(serverclose_after=5)
    transport = transport_to(server, window=2)
    batch = messages(12)
    with pytest.raises(SinkUnavailable, match="serverclose"):
        transport.deliver(batch)
    server.behaviour = Behaviour()
    transport.deliver(batch)
    assert sorted(server.accepted) == sorted(wire(batch))
    assert len(server.accepted) == len(batch)


def test_an_idle_session_the_receiver_closed_is_reopened_without_an_error(
    server: FakeRelpServer,
) -> None:
    server.behaviour = Behaviour(serverclose_after=3)
    transport = transport_to(server)
    transport.deliver(messages(3))
    server.behaviour = Behaviour()
    transport.deliver(messages(3, start=3))
    assert server.accepted == wire(messages(6))
    assert server.connections == 2


def test_a_receiver_that_never_answers_times_out(server: FakeRelpServer) -> None:
    server.behaviour = Behaviour(silent=True)
    transport = RelpTransport(host="127.0.0.1", port=server.port, ack_timeout=0.3)
    with pytest.raises(SinkUnavailable, match=r"no answer within 0.3s"):
        transport.deliver(messages(1))


@pytest.mark.parametrize(
    ("open_answer", "why"),
    [
        (b"500 required command not supported by client", "refused the session"),
        (b"200 OK\nrelp_version=0\ncommands=", "does not offer the syslog command"),
    ],
)
def test_a_session_the_receiver_will_not_open_says_why(
    server: FakeRelpServer, open_answer: bytes, why: str
) -> None:
    server.behaviour = Behaviour(open_answer=open_answer)
    with pytest.raises(SinkUnavailable, match=why):
        transport_to(server).deliver(messages(1))
    assert server.accepted == []


def test_nothing_listening_is_unavailable() -> None:
    port = free_port()
    with pytest.raises(SinkUnavailable, match=f"relp 127.0.0.1:{port}"):
        RelpTransport(host="127.0.0.1", port=port).deliver(messages(1))


def test_concurrent_batches_never_interleave_their_sessions(server: FakeRelpServer) -> None:
    transport = transport_to(server, window=3)
    batches = [messages(50, start=1000 * n) for n in range(4)]
    threads = [threading.Thread(target=transport.deliver, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(server.accepted) == sorted(bytes(m) for b in batches for m in b)
    assert server.connections == 1


def test_what_a_failed_batch_leaves_remembered_is_bounded_and_pins_no_page() -> None:
    """The transport remembers acknowledged messages of failed batches by their own bytes:
    a message is a view into its 12 MB page, which must not stay alive for it."""
    page = bytes(n % 251 for n in range(100_000))  # each 100-byte slice differs
    before = sys.getrefcount(page)
    tally = _Tally(limit=250)
    batch = [Message(b"h ", memoryview(page)[n * 100 : (n + 1) * 100]) for n in range(3)]
    for message in batch:
        tally.add(message)

    assert [tally.count(message) for message in batch] == [0, 1, 1], "the oldest forgotten"
    assert tally.take(batch[1]) and not tally.take(batch[1])
    del batch, message
    assert sys.getrefcount(page) == before

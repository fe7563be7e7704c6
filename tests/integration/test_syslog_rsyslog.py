"""The syslog transport against a real rsyslogd: what a SIEM actually receives, byte for byte."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from exporter.sim.ca import write_test_pki
from exporter.syslog import Message, SinkUnavailable, SyslogTransport, format_message
from tests.rsyslog import RsyslogReceiver
from tests.strategies import HOSTILE_TEXT


def sign_in(number: int, **extra: Any) -> dict[str, Any]:
    """A sign-in shaped like Graph's, with a unique id so arrivals can be matched."""
    return {
        "id": f"00000000-0000-0000-0000-{number:012d}",
        "createdDateTime": "2020-03-13T19:15:41.6195833Z",
        "userDisplayName": HOSTILE_TEXT[number % len(HOSTILE_TEXT)],
        "status": {"errorCode": 0, "additionalDetails": None},
        "location": {"city": "Zürich", "geoCoordinates": {"latitude": 47.37, "longitude": 8.54}},
        **extra,
    }


def encode(event: dict[str, Any], msgid: str = "signins") -> Message:
    return format_message(event, msgid=msgid, timestamp=None, hostname="collector-1", procid="4242")


def msg_part(message: Message) -> bytes:
    return bytes(message).split(b" ", 7)[7]


def transport_for(
    receiver: RsyslogReceiver, protocol: str, framing: str, ca_file: Path | None = None
) -> SyslogTransport:
    if ca_file is None and receiver.ca_file is not None:
        ca_file = receiver.ca_file
    return SyslogTransport(
        host=receiver.host,
        port=receiver.port,
        protocol=protocol,
        framing=framing,
        ca_file=str(ca_file) if ca_file else None,
        connect_timeout=5.0,
        send_timeout=10.0,
    )


def assert_received_exactly(
    received: Sequence[tuple[str, str]], sent: Sequence[Message], *, ordered: bool
) -> None:
    """What rsyslog wrote is byte-identical to MSG as sent, and parses back to the event."""
    got = [(msgid, msg.encode("utf-8")) for msgid, msg in received]
    want = [("signins", msg_part(message)) for message in sent]
    if not ordered:
        got, want = sorted(got), sorted(want)
    assert got == want
    for _, msg in received:
        assert json.loads(msg)["id"].startswith("00000000-")


@pytest.fixture
def tcp_receiver() -> Iterator[RsyslogReceiver]:
    with RsyslogReceiver(protocol="tcp") as receiver:
        yield receiver


@pytest.mark.parametrize("framing", ["octet-counting", "lf"])
def test_tcp_delivers_hostile_events_byte_exact(
    tcp_receiver: RsyslogReceiver, framing: str
) -> None:
    messages = [encode(sign_in(number)) for number in range(3 * len(HOSTILE_TEXT))]
    transport = transport_for(tcp_receiver, "tcp", framing)
    try:
        transport.deliver(messages[:5])
        transport.deliver(messages[5:])
    finally:
        transport.close()
    received = tcp_receiver.wait_for(len(messages))
    time.sleep(0.2)
    assert_received_exactly(tcp_receiver.messages(), messages, ordered=True)
    assert [json.loads(msg) for _, msg in received] == [
        sign_in(number) for number in range(len(messages))
    ]


@pytest.mark.parametrize("framing", ["octet-counting", "lf"])
def test_tcp_carries_a_100_kb_event(tcp_receiver: RsyslogReceiver, framing: str) -> None:
    big = sign_in(1, blob='é\n"' * 35_000)
    messages = [encode(sign_in(0)), encode(big), encode(sign_in(2))]
    assert messages[1].size > 100_000
    transport = transport_for(tcp_receiver, "tcp", framing)
    try:
        transport.deliver(messages)
    finally:
        transport.close()
    assert_received_exactly(tcp_receiver.wait_for(3), messages, ordered=True)


def test_udp_sends_one_bare_message_per_datagram() -> None:
    with RsyslogReceiver(protocol="udp") as receiver:
        messages = [encode(sign_in(number)) for number in range(len(HOSTILE_TEXT))]
        messages.append(encode(sign_in(99, blob="x" * 50_000)))
        transport = transport_for(receiver, "udp", "octet-counting")
        try:
            transport.deliver(messages)
        finally:
            transport.close()
        assert_received_exactly(receiver.wait_for(len(messages)), messages, ordered=False)


@pytest.mark.parametrize("framing", ["octet-counting", "lf"])
def test_tls_delivers_when_the_ca_is_trusted(framing: str) -> None:
    with RsyslogReceiver(protocol="tcp", tls=True) as receiver:
        messages = [encode(sign_in(number)) for number in range(len(HOSTILE_TEXT))]
        messages.append(encode(sign_in(50, blob="ü" * 60_000)))
        transport = transport_for(receiver, "tls", framing)
        try:
            transport.deliver(messages[:3])
            transport.deliver(messages[3:])
        finally:
            transport.close()
        assert_received_exactly(receiver.wait_for(len(messages)), messages, ordered=True)


def test_tls_with_the_wrong_ca_fails_verification_and_sends_nothing(tmp_path: Path) -> None:
    wrong_ca = write_test_pki(tmp_path / "other").ca_file
    with RsyslogReceiver(protocol="tcp", tls=True) as receiver:
        for ca_file in (wrong_ca, None):
            transport = SyslogTransport(
                host=receiver.host,
                port=receiver.port,
                protocol="tls",
                framing="octet-counting",
                ca_file=str(ca_file) if ca_file else None,
            )
            with pytest.raises(SinkUnavailable) as failure:
                transport.deliver([encode(sign_in(1))])
            reason = str(failure.value)
            assert "certificate verify failed" in reason
            assert f"127.0.0.1:{receiver.port}" in reason
            assert "siem-exporter" not in reason, "the reason must not echo the payload"
        # The same receiver does work with the right CA, so its silence above means something.
        good = encode(sign_in(2))
        transport = transport_for(receiver, "tls", "octet-counting")
        try:
            transport.deliver([good])
        finally:
            transport.close()
        assert_received_exactly(receiver.wait_for(1), [good], ordered=True)
        time.sleep(0.3)
        assert len(receiver.messages()) == 1


def test_tls_refuses_a_certificate_issued_for_another_host() -> None:
    """A trusted CA is not enough: the certificate must name the host that was configured."""
    with RsyslogReceiver(
        protocol="tcp", tls=True, cert_hostnames=("siem.example.test",)
    ) as receiver:
        transport = transport_for(receiver, "tls", "octet-counting")
        with pytest.raises(SinkUnavailable, match="certificate verify failed"):
            transport.deliver([encode(sign_in(1))])
        time.sleep(0.3)
        assert receiver.messages() == []


def test_unreachable_sink_names_the_endpoint_and_cause(tcp_receiver: RsyslogReceiver) -> None:
    tcp_receiver.stop()
    transport = transport_for(tcp_receiver, "tcp", "octet-counting")
    with pytest.raises(SinkUnavailable, match=rf"127\.0\.0\.1:{tcp_receiver.port}: .*refused"):
        transport.deliver([encode(sign_in(1))])


@pytest.mark.parametrize(("protocol", "tls"), [("tcp", False), ("tls", True)])
def test_outage_is_reported_and_recovered(protocol: str, tls: bool) -> None:
    """A stopped receiver is never reported as having accepted a batch.

    Plain syslog has no acknowledgement, so what is provable is this: once rsyslogd has
    exited, its end of the connection is closed and nothing listens on the port, so every
    deliver must fail until it is back; and a connection the daemon closed while idle
    (restart between two batches) is noticed and replaced before the next write.
    """
    with RsyslogReceiver(protocol="tcp", tls=tls) as receiver:
        transport = transport_for(receiver, protocol, "octet-counting")
        try:
            before = encode(sign_in(1))
            transport.deliver([before])
            assert_received_exactly(receiver.wait_for(1), [before], ordered=True)

            receiver.stop()
            for attempt in range(5):
                with pytest.raises(SinkUnavailable):
                    transport.deliver([encode(sign_in(100 + attempt))])

            receiver.start()
            after = encode(sign_in(2))
            transport.deliver([after])
            assert_received_exactly(receiver.wait_for(2), [before, after], ordered=True)

            # Restart while the connection is idle: the stale connection must be replaced,
            # not written into (where the batch would vanish without an error).
            receiver.stop()
            receiver.start()
            restarted = encode(sign_in(3))
            transport.deliver([restarted])
            assert_received_exactly(receiver.wait_for(3), [before, after, restarted], ordered=True)
        finally:
            transport.close()


def test_udp_surfaces_port_unreachable_but_cannot_promise_delivery() -> None:
    """UDP has no delivery signal; the most it can do is report ICMP "port unreachable".

    On a connected socket, the error from one datagram shows up on the next send, so a
    stopped receiver is reported within two attempts; datagrams before that are lost,
    which is why tcp or tls is the protocol to use when nothing may be lost.
    """
    with RsyslogReceiver(protocol="udp") as receiver:
        transport = transport_for(receiver, "udp", "lf")
        try:
            first = encode(sign_in(1))
            transport.deliver([first])
            receiver.wait_for(1)
            receiver.stop()
            outcomes = []
            for attempt in range(2):
                try:
                    transport.deliver([encode(sign_in(100 + attempt))])
                except SinkUnavailable as error:
                    outcomes.append(str(error))
            assert any(f"127.0.0.1:{receiver.port}" in reason for reason in outcomes), outcomes
            receiver.start()
            again = encode(sign_in(2))
            transport.deliver([again])
            assert_received_exactly(receiver.wait_for(2), [first, again], ordered=True)
        finally:
            transport.close()

"""The syslog sink: events as RFC 5424 messages over TCP, TLS, UDP or RELP to one receiver.

An adapter behind :class:`exporter.pipeline.Sink`: it formats (this sink's facility,
hostname and the collector's PID in the header) and hands the bytes to its transport
(:class:`exporter.syslog.SyslogTransport`, or :class:`exporter.relp_transport.RelpTransport`
for ``protocol: relp``, the same message inside RELP's acknowledged frames); retries, backoff, metrics and health are :class:`exporter.delivery.Delivery`'s. Its keys
(``host``, ``port``, ``protocol``, ...) are declared here, as :data:`SYSLOG_SINK`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from exporter.errors import ConfigError
from exporter.pipeline import KeyedEvent, Refusal
from exporter.relp_transport import RelpTransport
from exporter.syslog import (
    FACILITIES,
    MAX_UDP_DATAGRAM,
    Message,
    SyslogTransport,
    format_message,
    format_text_message,
)
from exporter.yamlconf import (
    Keys,
    Kind,
    Values,
    choice_key,
    file_key,
    flag_key,
    int_key,
    join_key,
    table_key,
    text_key,
)

WARNING_MSGID = "warning"
WARNING_SEVERITY = 4


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    """A syslog receiver's own keys: where it listens and what the messages' headers say."""

    host: str
    port: int
    protocol: str
    framing: str
    ca_file: str | None
    facility: int
    hostname: str
    max_message_size: int | None = None
    relp_tls: bool = False

    @property
    def message_limit(self) -> int | None:
        """The largest message this receiver takes whole: the configured size, and for UDP
        never more than one datagram holds."""
        if self.protocol == "udp":
            return min(self.max_message_size or MAX_UDP_DATAGRAM, MAX_UDP_DATAGRAM)
        return self.max_message_size


def _settings(values: Values, path: str) -> SyslogSettings:
    """Refuse keys that would be silently ignored with the chosen protocol.

    ``framing`` is syslog-over-TCP's; RELP frames each message by its own length, so the
    default is ignored for ``relp`` but an explicit ``lf`` is refused, since it would not
    do what it says.
    """
    protocol = values["protocol"]
    if values["relp_tls"] and protocol != "relp":
        raise ConfigError(join_key(path, "relp_tls"), "only applies to protocol: relp")
    if values["ca_file"] and not (protocol == "tls" or values["relp_tls"]):
        raise ConfigError(
            join_key(path, "ca_file"), "only applies to protocol: tls or relp with relp_tls"
        )
    if protocol == "relp" and values["framing"] == "lf":
        raise ConfigError(
            join_key(path, "framing"), "does not apply to protocol: relp (RELP frames messages)"
        )
    return SyslogSettings(**values)


SYSLOG_SINK = Kind(
    Keys(
        text_key("host", required=True),
        int_key("port", low=1, high=65535, required=True),
        choice_key("protocol", ("tcp", "tls", "udp", "relp"), "tcp"),
        choice_key("framing", ("octet-counting", "lf"), "octet-counting"),
        file_key("ca_file"),
        flag_key("relp_tls", False),
        table_key("facility", FACILITIES, "local0"),
        text_key("hostname", lambda values: socket.gethostname(), required=True),
        int_key("max_message_size", low=480, high=1 << 30),
    ),
    _settings,
)


class Transport(Protocol):
    """Puts formatted messages on the wire; raises ``SinkError`` when it could not."""

    def deliver(self, messages: Sequence[Message]) -> Sequence[Refusal]:
        """Send; return the messages (by position) refused for good, which no retry sends."""
        ...

    def close(self) -> None: ...


def _transport(config: SyslogSettings) -> Transport:
    """The transport the protocol names: RELP's acknowledged client, or plain syslog's."""
    if config.protocol == "relp":
        return RelpTransport(
            host=config.host, port=config.port, tls=config.relp_tls, ca_file=config.ca_file
        )
    return SyslogTransport(
        host=config.host,
        port=config.port,
        protocol=config.protocol,
        framing=config.framing,
        ca_file=config.ca_file,
    )


class SyslogSink:
    """One syslog receiver: its settings, formatting and transport."""

    def __init__(
        self, name: str, config: SyslogSettings, transport: Transport | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.procid = str(os.getpid())
        self.transport: Transport = transport or _transport(config)

    def format(self, msgid: str, item: KeyedEvent) -> Message:
        """The RFC 5424 message for one event, with this sink's facility and hostname."""
        return format_message(
            item.event,
            msgid=msgid,
            timestamp=item.header_time,
            hostname=self.config.hostname,
            procid=self.procid,
            facility=self.config.facility,
        )

    def format_warning(self, text: str, timestamp: datetime) -> Message:
        """An in-band WARNING line (MSGID ``warning``, severity warning) for this sink."""
        return format_text_message(
            text,
            msgid=WARNING_MSGID,
            timestamp=timestamp,
            hostname=self.config.hostname,
            procid=self.procid,
            facility=self.config.facility,
            severity=WARNING_SEVERITY,
        )

    def send_batch(self, source: str, batch: Sequence[KeyedEvent]) -> list[Refusal]:
        """Send the batch, MSGID the source's name; raises ``SinkError`` unless all went
        that can go.

        A message above :attr:`SyslogSettings.message_limit` is refused, not sent: a
        receiver would truncate or split it (rsyslog does, and still takes it), and a UDP
        datagram that large cannot be sent at all. The transport may refuse others for
        good (a RELP receiver answering ``500`` again and again).
        """
        limit = self.config.message_limit
        messages = [self.format(source, item) for item in batch]
        refused = [
            Refusal(i, "too_large", f"message of {m.size} bytes exceeds the limit of {limit}")
            for i, m in enumerate(messages)
            if limit is not None and m.size > limit
        ]
        too_large = {refusal.index for refusal in refused}
        sent = [i for i in range(len(messages)) if i not in too_large]
        for refusal in self.transport.deliver([messages[i] for i in sent]):
            refused.append(Refusal(sent[refusal.index], refusal.reason, refusal.detail))
        return refused

    def send_warning(self, text: str, timestamp: datetime) -> None:
        self.transport.deliver([self.format_warning(text, timestamp)])

    def close(self) -> None:
        self.transport.close()

"""The syslog sink: events as RFC 5424 messages over TCP, TLS or UDP to one receiver.

An adapter behind :class:`exporter.pipeline.Sink`: it formats (this sink's facility,
hostname and the collector's PID in the header) and hands the bytes to its transport;
retries, backoff, metrics and health are :class:`exporter.delivery.Delivery`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from exporter.config import SyslogSinkConfig
from exporter.pipeline import KeyedEvent
from exporter.syslog import SyslogTransport, format_message, format_text_message

WARNING_MSGID = "warning"
WARNING_SEVERITY = 4


class Transport(Protocol):
    """Puts formatted messages on the wire; raises ``SinkError`` when it could not."""

    def deliver(self, messages: Sequence[bytes]) -> None: ...

    def close(self) -> None: ...


class SyslogSink:
    """One syslog receiver: its config, formatting and transport."""

    def __init__(self, config: SyslogSinkConfig, transport: Transport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.procid = str(os.getpid())
        self.transport: Transport = transport or SyslogTransport(
            host=config.host,
            port=config.port,
            protocol=config.protocol,
            framing=config.framing,
            ca_file=config.ca_file,
        )

    def format(self, msgid: str, item: KeyedEvent) -> bytes:
        """The RFC 5424 message for one event, with this sink's facility and hostname."""
        return format_message(
            item.event,
            msgid=msgid,
            timestamp=item.header_time,
            hostname=self.config.hostname,
            procid=self.procid,
            facility=self.config.facility,
        )

    def format_warning(self, text: str, timestamp: datetime) -> bytes:
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

    def send_batch(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        """Send the batch, MSGID the source's name; raises ``SinkError`` unless all went."""
        self.transport.deliver([self.format(source, item) for item in batch])

    def send_warning(self, text: str, timestamp: datetime) -> None:
        self.transport.deliver([self.format_warning(text, timestamp)])

    def close(self) -> None:
        self.transport.close()

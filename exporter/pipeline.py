"""The types every stage speaks: a source yields pages of keyed events, sinks take batches.

Data flows one way: a :class:`Source` (Graph over HTTPS, or a model in simulated time)
yields :class:`Page` objects of :class:`KeyedEvent`; the loop drops what the ledger holds
and hands the rest to an :class:`Outlet` (``Delivery``, which fans out to each
:class:`Sink`), and only then records them. Each source keys and dates its own events, so
the loop never names an id field or a time format, and a new source or sink is one adapter
that implements a protocol here.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

_CANONICAL_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)


class RawEvent(Mapping[str, Any]):
    """An event as the API sent it: its compact JSON, decoded only if someone looks inside.

    Parsing a sign-in of 11.5 kB into Python objects (about 800 of them) and serialising it
    again cost more than everything else the collector does with it, and nothing but its
    id and times is ever read. So the source hands over the event's own bytes, already
    compact and checked to be valid JSON and UTF-8, with the few ``fields`` it needs
    decoded; a sink sends :attr:`json` as it is. The bytes may be a view into the page they
    came in (not copied out of it: a copy of every event was a tenth of the delivery cost),
    which then lives as long as any of its events. Any other access (a test, the content hash
    of an event without an id) decodes the whole event once, as the standard library reads
    it, so it is the same mapping a parsed page would have held.
    """

    __slots__ = ("_decoded", "_fields", "json")

    def __init__(self, json_bytes: bytes | memoryview, fields: Mapping[str, Any]) -> None:
        self.json = json_bytes
        self._fields = fields
        self._decoded: dict[str, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A field the source decoded up front without decoding the event; others decode it."""
        value = self._fields.get(key)
        if value is not None:
            return value
        return self._mapping().get(key, default)

    def _mapping(self) -> dict[str, Any]:
        if self._decoded is None:
            self._decoded = json.loads(bytes(self.json))
        return self._decoded

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def __repr__(self) -> str:
        return f"RawEvent({bytes(self.json)!r})"


@dataclass(frozen=True, slots=True)
class KeyedEvent:
    """An event with what the pipeline needs to know about it, worked out once by its source.

    ``key`` is the dedupe key (16 bytes); ``has_id`` says whether it came from the event's
    own id rather than a hash of its content. ``event_time`` (epoch seconds) is the time the
    query windows run on and the ledger dates the key by; ``header_time`` is the timestamp a
    sink's header carries. Every event passes through several lists per page, so both are
    computed once, by the source that knows its format.
    """

    key: bytes
    has_id: bool
    event_time: float | None
    header_time: datetime | None
    event: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a query's events and what fetching it cost.

    ``requests`` counts every request sent for it (retries included), ``throttle_retries``
    those answered with a throttle, and ``budget_wait`` the seconds spent waiting for the
    request budget first. A query's cost is then the sum over its own pages, even while
    other queries of the same source interleave with it.

    A source whose listings hold something other than its events (the Management Activity
    API lists content blobs by contentCreated and hands on only the records of blobs not
    fetched before) says on the first page of each listing page how many entries it held
    (``listed``) and the newest time on the window's axis it has listed so far
    (``window_newest``): a window is empty, and drifts, by what the API listed, not by what
    was new. None (Graph) means the events are the listing, dated on the window's axis.
    """

    events: list[KeyedEvent]
    requests: int = 1
    throttle_retries: int = 0
    budget_wait: float = 0.0
    listed: int | None = None
    window_newest: float | None = None


class Source(Protocol):
    """Where one configured source's events come from."""

    def pages(self, start: float, end: float | None = None) -> Iterator[Page]:
        """Every page of events with ``start <= event time (<= end)``, newest first.

        Raises ``Interrupted`` on shutdown and an ``ExporterError`` when a page cannot
        be had; the loop then retries the query later.
        """
        ...


class Outlet(Protocol):
    """What a source loop hands new events and warnings to: the set of sinks as a whole."""

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        """Deliver ``batch`` everywhere; raises ``Interrupted`` when shutdown came first."""
        ...

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """Send one in-band warning line, once, without retrying."""
        ...


# Why a sink refuses a message for good: the bounded ``reason`` of events_rejected_total.
# too_large: above the receiver's size limit or a UDP datagram's; refused: the receiver
# answered it with a refusal every time it was offered.
REJECTION_REASONS = ("too_large", "refused")


@dataclass(frozen=True, slots=True)
class Refusal:
    """One message of a batch that a sink refused for good: retrying cannot change it.

    ``index`` is its place in the batch; ``reason`` is a bounded label value (the
    ``reason`` of ``events_rejected_total``), ``detail`` a sentence for the log and the
    dead-letter file.
    """

    index: int
    reason: str
    detail: str


class Sink(Protocol):
    """One SIEM receiver. It formats and transmits; ``Delivery`` owns retries and metrics."""

    name: str

    def send_batch(self, source: str, batch: Sequence[KeyedEvent]) -> Sequence[Refusal]:
        """Hand over ``batch``, or raise ``SinkError``: then none of it counts.

        Returns the messages refused for good; the sink took all the others.
        """
        ...

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """Hand over one in-band warning line, or raise ``SinkError``."""
        ...

    def close(self) -> None: ...


def dedupe_key(event_id: object, event: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The 16-byte dedupe key of an event from its id, and whether the id gave it.

    A GUID id is its 16 bytes in any spelling; another non-empty string id is hashed; an
    event without a usable id is keyed by a hash of its canonical JSON (sorted keys), which
    is stable however the API orders the fields. A lone surrogate (JSON's ``"\\ud800"``,
    which UTF-8 cannot hold) is hashed as its surrogate-escaped bytes rather than crash the
    poll; any other text encodes exactly as before, so keys already in a ledger still match.
    """
    if isinstance(event_id, str) and event_id:
        if _CANONICAL_GUID.fullmatch(event_id):
            # What uuid.UUID(event_id).bytes gives for the usual form, ten times faster.
            return bytes.fromhex(event_id.replace("-", "")), True
        try:
            return uuid.UUID(event_id).bytes, True
        except ValueError:
            return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).digest()[:16], True
    content = event if isinstance(event, dict) else dict(event)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(b"\0no-id\0" + canonical.encode("utf-8", "surrogatepass")).digest()
    return digest[:16], False

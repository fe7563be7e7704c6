"""What a Management Activity API source asks for: its keys, its budget, its URLs, its windows.

Pure code, the counterpart of :mod:`exporter.graph_query` for ``api: management_activity``
(the Office 365 Management Activity API at ``management_url``, ``manage.office.com`` by
default). A source reads one ``content_type``. The API's rules, from Microsoft's reference
and troubleshooting pages, live here once:

- content is listed by ``contentCreated`` (when a blob became available), in windows of at
  most 24 hours that start at most 7 days back (else AF20055); a window is cut into pieces
  of :data:`MAX_LISTING_WINDOW` (23 h: collectors report exactly 24 h refused) and its start
  is clamped to :data:`LISTABLE_AGE` (a little under 7 days, for clock skew);
- every request carries ``PublisherIdentifier`` (the tenant GUID), blob downloads too, so
  that the tenant's own quota is used and not the pool shared by every tenant;
- the API allows about 2,000 requests a minute per tenant: its own budget family;
- record times are UTC without a zone suffix (``2026-12-04T23:31:05``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from exporter.config import SourceConfig
from exporter.eventtime import parse_event_time
from exporter.yamlconf import Key, Keys, Kind, Section, Values

MANAGEMENT_API = "management_activity"
MANAGEMENT_ACTIVITY = "management_activity"  # the budget family
BUDGET_FAMILIES = {MANAGEMENT_ACTIVITY: (2000, 60.0)}  # per tenant, with PublisherIdentifier
CONTENT_TYPES = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
)
MAX_RECORDS_PER_PAGE = 1000  # a blob is handed on in pages of at most this many records
MAX_LISTING_WINDOW = 23 * 3600.0
LISTABLE_AGE = 7 * 86400.0 - 600.0
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_ZONELESS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """A Management Activity source's own keys."""

    content_type: str

    @property
    def budget_family(self) -> str:
        return MANAGEMENT_ACTIVITY

    @property
    def max_page_size(self) -> int:
        return MAX_RECORDS_PER_PAGE


def _content_type(section: Section, values: Values) -> str:
    return section.choice("content_type", CONTENT_TYPES, "")


MANAGEMENT_SOURCE = Kind(
    Keys(Key("content_type", _content_type)),
    lambda values, path: ManagementSettings(**values),
    budgets=BUDGET_FAMILIES,
)


def is_tenant_guid(tenant_id: str) -> bool:
    """Whether ``tenant_id`` is a GUID, which the API's paths and PublisherIdentifier need."""
    return bool(_GUID.match(tenant_id))


def management_settings(source: SourceConfig) -> ManagementSettings:
    """The keys of ``source``; a TypeError names a source of another API wired here."""
    if not isinstance(source.settings, ManagementSettings):
        raise TypeError(f"source {source.name!r} is not a Management Activity source")
    return source.settings


def feed_url(management_url: str, tenant: str, operation: str, **params: str) -> str:
    """``{management_url}/api/v1.0/{tenant}/activity/feed/{operation}?...&PublisherIdentifier``."""
    query = urlencode({**params, "PublisherIdentifier": tenant})
    return f"{management_url}/api/v1.0/{tenant}/activity/feed/{operation}?{query}"


def with_publisher(url: str, tenant: str) -> str:
    """``url`` with ``PublisherIdentifier`` added unless it has one (NextPageUri, contentUri)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() == "publisheridentifier" for name, _ in pairs):
        return url
    query = urlencode([*pairs, ("PublisherIdentifier", tenant)])
    return urlunsplit(parts._replace(query=query))


def format_time(epoch: float, round_up: bool = False) -> str:
    """The API's form for startTime and endTime, whole seconds, rounded to widen the window."""
    seconds = -int(-epoch // 1) if round_up else int(epoch // 1)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def listing_windows(start: float, end: float, now: float) -> Iterator[tuple[float, float]]:
    """``[start, end]`` as the API can be asked for it: pieces of at most 23 h, newest first,
    none starting more than :data:`LISTABLE_AGE` back (older content cannot be listed)."""
    start = max(start, now - LISTABLE_AGE)
    while end > start:
        piece = max(start, end - MAX_LISTING_WINDOW)
        yield piece, end
        end = piece


def parse_time(value: object) -> datetime | None:
    """A record's CreationTime or a blob's contentCreated as an aware UTC datetime, or None.

    Records say UTC without a zone (``2026-12-04T23:31:05``); listings add ``Z``. Both read.
    """
    if isinstance(value, str) and _ZONELESS.match(value):
        value += "Z"
    return parse_event_time(value)

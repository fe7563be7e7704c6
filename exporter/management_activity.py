"""The Office 365 Management Activity API as a :class:`~exporter.pipeline.Source`.

The API is not a query of events by their time: it lists *content blobs* by
``contentCreated`` (when a blob became available), and each blob holds records of any age,
some of which other blobs hold too. How that fits the loop and its tiers, which window on
one time axis:

- **The tiers window on contentCreated.** ``pages(start, end)`` lists the blobs created in
  ``[start, end]`` (pieces of at most 23 h, never older than the API's 7 days, see
  :mod:`exporter.management_query`). The listing lags, so the fresh tier's overlapping
  windows, the sweeps and the rescans re-list each stretch of contentCreated as they would
  re-query a stretch of Graph's event time: a blob that turns up late in the listing is
  found by the next query covering its contentCreated. Listing costs a request per piece
  and page; a blob already fetched costs nothing.
- **Each blob is fetched once.** Its contentId goes into the ledger (under the pseudo-source
  ``<name>/blobs``, dated by its contentCreated; no configured name holds a ``/``) once every
  record of it was delivered: the generator resumes after its last page only when the loop
  has sent and recorded that page. A crash in between fetches it again and the ledger drops
  what was delivered. Blob ids are forgotten once no listing can return them (7 days).
- **Records are deduped by ``Id``** (:func:`exporter.pipeline.dedupe_key`), never by a hash
  of their JSON, whose field order is not stable. Their keys go into the ledger undated
  (``event_time`` None): a record's copies sit in blobs of different contentCreated, so the
  key must be found whatever blob brings it, and an undated key is kept until the oldest
  sweep frontier (in contentCreated) passes the moment it was delivered, so a copy in any
  blob listed within ``max_lookback`` of that is suppressed.
- **Event time is CreationTime** (UTC, no zone suffix) for the syslog header; this module
  observes ``event_arrival_lag_seconds`` (first seen minus CreationTime) for new records and
  ``api_drift_seconds`` (now minus the newest CreationTime seen) itself, since the loop
  measures on the window's axis. ``window_drift_seconds``, which the drift alerts and the
  in-band drift warning hold against the window, is now minus the newest contentCreated
  listed: the axis the window runs on. The pages report it (``Page.window_newest``) and the
  loop measures it. CreationTime trails it by the API's normal 60-90 minutes, which says
  nothing about whether the listing windows still reach the blobs.
- **A window is empty when its listings hold no blob**, not when every blob listed was
  fetched before: the pages report how many blob entries each listing page held
  (``Page.listed``), which the loop's empty-window warning counts.
- **A blob that expired before it was fetched is lost**, the one loss nobody can prevent
  (a collector down for days): ``blob_fetch_failures_total{reason="expired"}``, an error
  line naming the blob, and the SiemExporterContentExpired alert.
- The subscription is started at first use and whenever the API says there is none
  (AF20022; AF20024 "already enabled" is success). One disabled by an administrator
  (AF20023) is an error the loop retries every minute, ``subscription_enabled`` 0 meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from exporter.clock import Clock
from exporter.config import SourceConfig
from exporter.errors import (
    ManagementError,
    ManagementMalformed,
    ManagementRefused,
    SubscriptionDisabled,
)
from exporter.ledger import Ledger
from exporter.logs import fields
from exporter.management_http import ManagementHttp, Reply
from exporter.management_query import (
    LISTABLE_AGE,
    feed_url,
    format_time,
    listing_windows,
    management_settings,
    parse_time,
    with_publisher,
)
from exporter.metrics import PREFIX, ExporterMetrics
from exporter.pipeline import KeyedEvent, Page, dedupe_key

log = logging.getLogger(__name__)

BLOB_LEDGER = "/blobs"
CHECKPOINT_NEWEST = "management:newest_record"
CHECKPOINT_NEWEST_LISTED = "management:newest_content_created"
EXPIRED = "expired"
BLOB_FAILURE_REASONS = (EXPIRED, "malformed_page", "foreign_next_link", "http_error", "network")
ALREADY_ENABLED, NO_SUBSCRIPTION, DISABLED, CONTENT_EXPIRED = (
    "AF20024",
    "AF20022",
    "AF20023",
    "AF20051",
)
CLAIM_TIMEOUT = 600.0
EVICT_EVERY = 3600.0


class ManagementMetrics:
    """The metrics this API adds to the registry (labels: the source name, a bounded reason)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.blobs_listed = Counter(
            f"{PREFIX}_blobs_listed",
            "Content blob entries returned by listings (re-listings included).",
            ["source"],
            registry=registry,
        )
        self.blobs_fetched = Counter(
            f"{PREFIX}_blobs_fetched", "Content blobs downloaded.", ["source"], registry=registry
        )
        self.blob_failures = Counter(
            f"{PREFIX}_blob_fetch_failures",
            "Content blobs not fetched, by reason; 'expired' blobs are lost for good.",
            ["source", "reason"],
            registry=registry,
        )
        self.subscription_enabled = Gauge(
            f"{PREFIX}_subscription_enabled",
            "1 while the source's Management Activity subscription answers, 0 while disabled.",
            ["source"],
            registry=registry,
        )

    def initialise(self, metrics: ExporterMetrics, sources: Sequence[SourceConfig]) -> None:
        """Every series of these sources at zero (the subscription counted as up)."""
        for source in sources:
            self.blobs_listed.labels(source.name)
            self.blobs_fetched.labels(source.name)
            for reason in BLOB_FAILURE_REASONS:
                self.blob_failures.labels(source.name, reason)
            self.subscription_enabled.labels(source.name).set(1)
            metrics.api_errors.labels(source.name, SubscriptionDisabled.reason)
            metrics.throttle_retries.labels(source.name, "AF429")


@dataclass(frozen=True, slots=True)
class Blob:
    """One entry of a listing."""

    content_id: str
    uri: str
    created: float
    expires: float | None

    @property
    def key(self) -> bytes:
        return dedupe_key(self.content_id, {})[0]


def parse_listing(body: bytes) -> list[Blob]:
    """The blob entries of a listing page; ManagementMalformed for anything else."""
    try:
        entries = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ManagementMalformed("listing is not JSON") from None
    if not isinstance(entries, list):
        raise ManagementMalformed("listing is not a JSON array")
    blobs = []
    for entry in entries:
        created = parse_time(entry.get("contentCreated")) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or created is None:
            raise ManagementMalformed("listing entry without a readable contentCreated")
        content_id, uri = entry.get("contentId"), entry.get("contentUri")
        if not (isinstance(content_id, str) and content_id and isinstance(uri, str)):
            raise ManagementMalformed("listing entry without contentId or contentUri")
        expires = parse_time(entry.get("contentExpiration"))
        blobs.append(
            Blob(
                content_id,
                uri,
                created.timestamp(),
                None if expires is None else expires.timestamp(),
            )
        )
    return blobs


def key_records(body: bytes) -> list[KeyedEvent]:
    """A blob's records keyed by ``Id`` and dated by CreationTime; ManagementMalformed if not."""
    try:
        records = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ManagementMalformed("blob is not JSON") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ManagementMalformed("blob is not a JSON array of records")
    keyed = []
    for record in records:
        key, has_id = dedupe_key(record.get("Id"), record)
        keyed.append(KeyedEvent(key, has_id, None, parse_time(record.get("CreationTime")), record))
    return keyed


class ManagementActivitySource:
    """One content type of one tenant: the :class:`~exporter.pipeline.Source` of its thread."""

    def __init__(
        self,
        management_url: str,
        tenant: str,
        source: SourceConfig,
        http: ManagementHttp,
        ledger: Ledger,
        metrics: ExporterMetrics,
        extra: ManagementMetrics,
        clock: Clock,
    ) -> None:
        self.management_url = management_url
        self.tenant = tenant
        self.source = source
        self.content_type = management_settings(source).content_type
        self.http = http
        self.ledger = ledger
        self.metrics = metrics
        self.extra = extra
        self.clock = clock
        self.blob_ledger = source.name + BLOB_LEDGER
        self._subscribed = False
        self._disabled = False
        self._claims: dict[str, float] = {}  # blobs a run is handing on: not fetched twice
        self._newest = ledger.checkpoint(source.name, CHECKPOINT_NEWEST)
        self._newest_listed = ledger.checkpoint(source.name, CHECKPOINT_NEWEST_LISTED)
        self._evicted_at = 0.0

    # -- the Source protocol --------------------------------------------------------------

    def pages(self, start: float, end: float | None = None) -> Generator[Page, None, None]:
        """The records of every blob created in ``[start, end]`` not fetched before.

        A generator on purpose: it resumes after a page only once the loop delivered and
        recorded it, which is when a blob's last page makes the blob's id safe to remember.
        """
        if not self._subscribed:
            self._start_subscription()
        now = self.clock.now()
        for piece_start, piece_end in listing_windows(start, now if end is None else end, now):
            url: str | None = self._url(
                "subscriptions/content",
                contentType=self.content_type,
                startTime=format_time(piece_start),
                endTime=format_time(piece_end, round_up=True),
            )
            while url is not None:
                blobs, next_uri = self._list(url)
                yield from self._blobs(blobs)
                url = None if next_uri is None else with_publisher(next_uri, self.tenant)
        if end is None:
            self._measure_drift()
        self._evict(now)

    def _measure_drift(self) -> None:
        """After a fresh listing: drift on CreationTime; the loop measures it on contentCreated
        from the pages' ``window_newest``. Both newest times survive a restart."""
        name, now, checkpoints = self.source.name, self.clock.now(), {}
        if self._newest is not None:
            self.metrics.api_drift.labels(name).set(now - self._newest)
            checkpoints[CHECKPOINT_NEWEST] = self._newest
        if self._newest_listed is not None:
            checkpoints[CHECKPOINT_NEWEST_LISTED] = self._newest_listed
        if checkpoints:
            self.ledger.set_checkpoints(name, checkpoints)

    # -- listing --------------------------------------------------------------------------

    def _url(self, operation: str, **params: str) -> str:
        return feed_url(self.management_url, self.tenant, operation, **params)

    def _list(self, url: str) -> tuple[list[Blob], str | None]:
        reply = self.http.send("GET", url)
        if reply.code == NO_SUBSCRIPTION:
            log.warning(
                "no subscription (it was stopped): starting it; content created while it was "
                "stopped is gone",
                extra=fields(source=self.source.name, content_type=self.content_type),
            )
            self._start_subscription()
            reply = self.http.send("GET", url)
        self._check(reply)
        blobs = parse_listing(reply.body)
        self.extra.blobs_listed.labels(self.source.name).inc(len(blobs))
        for blob in blobs:
            self._newest_listed = max(blob.created, self._newest_listed or blob.created)
        if self._disabled:
            self._disabled = False
            log.info("subscription enabled again", extra=fields(source=self.source.name))
        self.extra.subscription_enabled.labels(self.source.name).set(1)
        next_uri = reply.headers.get("NextPageUri")  # case-insensitive, as the header varies
        return blobs, next_uri if isinstance(next_uri, str) and next_uri else None

    def _start_subscription(self) -> None:
        reply = self.http.send(
            "POST", self._url("subscriptions/start", contentType=self.content_type)
        )
        if reply.code != ALREADY_ENABLED:
            self._check(reply)
            log.info(
                "subscription started",
                extra=fields(source=self.source.name, content_type=self.content_type),
            )
        self._subscribed = True

    def _check(self, reply: Reply) -> None:
        """Raise for anything but a 200, in words that say what to do."""
        if reply.status == 200:
            return
        name = self.source.name
        error: ManagementError
        if reply.code == DISABLED:
            self._disabled = True
            self.extra.subscription_enabled.labels(name).set(0)
            error = SubscriptionDisabled(
                f"the {self.content_type} subscription was disabled by an administrator: "
                "content created until it is enabled again is lost"
            )
        elif reply.status in (401, 403):
            error = ManagementRefused(reply.status, reply.code, reply.message, "forbidden")
        elif reply.status == 400:
            error = ManagementRefused(reply.status, reply.code, reply.message, "bad_request")
        else:
            error = ManagementRefused(reply.status, reply.code, reply.message)
        self.metrics.api_errors.labels(name, error.reason).inc()
        todo = {
            "forbidden": "grant the app registration ActivityFeed.Read (Office 365 Management "
            "APIs, application) and admin consent",
            "subscription_disabled": "enable the subscription again (an administrator)",
        }.get(error.reason, "see the API's message")
        log.error(
            f"management activity API refused source {name}: {todo}",
            extra=fields(source=name, status=reply.status, code=reply.code, message=reply.message),
        )
        raise error

    # -- blobs ----------------------------------------------------------------------------

    def _blobs(self, blobs: list[Blob]) -> Iterator[Page]:
        """The records of each blob not fetched before; an empty page when there is none.

        The first page also reports what the listing page held, so that a poll listing only
        blobs fetched before is not taken for an empty window.
        """
        now = self.clock.now()
        known = self.ledger.delivered(self.blob_ledger, [(b.key, b.created) for b in blobs])
        new = [
            b
            for b in blobs
            if b.key not in known
            and now - self._claims.get(b.content_id, -CLAIM_TIMEOUT) >= CLAIM_TIMEOUT
        ]
        reported = False
        for blob in new:
            self._claims[blob.content_id] = now
            try:
                for records in self._fetch(blob):
                    yield self._page(records, None if reported else blobs)
                    reported = True
            finally:
                self._claims.pop(blob.content_id, None)
        if not reported:  # nothing new, or every new blob expired: the listing still counts
            yield self._page([], blobs)

    def _fetch(self, blob: Blob) -> Iterator[list[KeyedEvent]]:
        name = self.source.name
        if blob.expires is not None and blob.expires <= self.clock.now():
            self._lost(blob)
            return
        try:
            reply = self.http.send("GET", with_publisher(blob.uri, self.tenant))
            if reply.code == CONTENT_EXPIRED:
                self._lost(blob)
                return
            self._check(reply)
            records = key_records(reply.body)
        except ManagementError as exc:
            if not isinstance(exc, SubscriptionDisabled):
                self.extra.blob_failures.labels(name, exc.reason).inc()
            raise
        self.extra.blobs_fetched.labels(name).inc()
        self._observe(records)
        size = self.source.page_size
        for offset in range(0, max(1, len(records)), size):
            yield records[offset : offset + size]
        # Resumed after the blob's last page: the loop delivered and recorded every record.
        self.ledger.record(self.blob_ledger, [(blob.key, blob.created)], self.clock.now())

    def _page(self, records: list[KeyedEvent], listing: list[Blob] | None = None) -> Page:
        """A page of records; the first of a listing page says what that listing held."""
        cost = self.http.cost.take()
        if listing is None:
            return Page(records, cost.requests, cost.throttles, cost.waited, listed=0)
        return Page(
            records,
            cost.requests,
            cost.throttles,
            cost.waited,
            listed=len(listing),
            window_newest=self._newest_listed,
        )

    def _lost(self, blob: Blob) -> None:
        """A blob that expired before it was fetched: its records are gone. Loudly."""
        name = self.source.name
        self.extra.blob_failures.labels(name, EXPIRED).inc()
        log.error(
            "content blob expired before it could be fetched: its records are lost",
            extra=fields(
                source=name,
                content_id=blob.content_id,
                content_created=format_time(blob.created),
                content_expiration=None if blob.expires is None else format_time(blob.expires),
            ),
        )
        self.ledger.record(self.blob_ledger, [(blob.key, blob.created)], self.clock.now())

    def _observe(self, records: list[KeyedEvent]) -> None:
        """Arrival lag (now minus CreationTime) of the records not delivered before."""
        now = self.clock.now()
        delivered = self.ledger.delivered(self.source.name, [(r.key, None) for r in records])
        lag = self.metrics.arrival_lag.labels(self.source.name)
        for record in records:
            if record.key in delivered or record.header_time is None:
                continue
            created = record.header_time.timestamp()
            lag.observe(max(0.0, now - created))
            self._newest = created if self._newest is None else max(self._newest, created)

    def _evict(self, now: float) -> None:
        """Forget blob ids no listing can return any more (created over 7 days ago)."""
        if now - self._evicted_at >= EVICT_EVERY:
            self._evicted_at = now
            self.ledger.evict(self.blob_ledger, now - LISTABLE_AGE - EVICT_EVERY)

"""An in-process model of the Office 365 Management Activity API, in virtual time.

The completeness benchmark asks of this API what it asks of Graph: does a collector deliver
every record once, and at what cost? The answer turns on how the API differs from Graph, so
the model keeps exactly those rules (issue 18, from Microsoft's reference and
troubleshooting pages) and nothing else:

- Records (``Id``, ``CreationTime``) are carried by *content blobs*, listed by their
  ``contentCreated``, not by the records' time. A record joins the blob of the period in
  which it became available, ``RECORD_LATENESS`` after its CreationTime (typically 60-90
  minutes, sometimes more than a day), so a later blob holds older records.
- The listing itself lags: a blob is listable ``LISTING_LAG`` after its contentCreated,
  mostly within minutes, sometimes a day and more. A record is *visible* once the first
  blob holding it is listable: between 30 minutes and 3 days after its CreationTime.
- ``DUPLICATE_SHARE`` of records also sit in a second blob up to ``DUPLICATE_SPREAD`` later
  (the service retries; de-duplication by ``Id`` is the consumer's job).
- Listing windows are at most 24 h and start at most 7 days back (else AF20055), pages of
  ``LISTING_PAGE`` entries follow a next-page offset (evaluated when each page is asked, as
  the simulator does); a blob expires 7 days after its contentCreated (AF20051).
- A budget of 2,000 requests per sliding minute per tenant, blob downloads included; a
  request over it is answered HTTP 403 with code AF429 and does not consume the budget.

Seeded, so every strategy sees the same records, blobs and lags. Records and blobs are
arrays and integers; only ours, which reads the API over (modelled) HTTP, sees JSON.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from bench.model import DAY, T0, Throttle
from exporter.sim.management_feed import Band, draw

CONTENT_TYPE = "Audit.AzureActiveDirectory"
BLOB_PERIOD = 300.0  # one blob per content type every 5 minutes
LISTING_PAGE = 200  # blob entries per listing page: not documented, assumed
MAX_WINDOW = DAY
RETENTION = 7 * DAY  # contentExpiration; also how far back a listing may start
BUDGET = (2000, 60.0)  # requests per sliding window, per tenant (PublisherIdentifier)
HOUR = 3600.0
RECORD_LATENESS: tuple[Band, ...] = (
    (0.80, 0.5 * HOUR, 1.5 * HOUR),
    (0.19, 1.5 * HOUR, 12 * HOUR),
    (0.01, 12 * HOUR, 36 * HOUR),
)
LISTING_LAG: tuple[Band, ...] = (
    (0.90, 0.0, 180.0),
    (0.09, 180.0, 2 * HOUR),
    (0.01, HOUR, 36 * HOUR),
)
DUPLICATE_SHARE = 0.02
DUPLICATE_SPREAD = 6 * HOUR


class Feed:
    """One content type's ground truth: records, the blobs that carry them, when each shows.

    Blob ``n`` has contentCreated ``start + (n + 1) * BLOB_PERIOD`` (the end of the period
    its records became available in). ``visible[i]`` is when record ``i`` can first be
    listed: the least ``listable`` of its blobs.
    """

    def __init__(
        self, per_day: float, days: float, seed: int, drain: float = 0.0, start: float = T0
    ) -> None:
        self.per_day = per_day
        self.start = start
        self.end = start + days * DAY  # the measured horizon
        self.stop = self.end + drain  # strategies keep running (and records coming) until here
        rng = random.Random(seed)
        self._id_prefix = f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4000-8000-"
        self.created: array[float] = array("d")  # CreationTime, whole seconds as the API has it
        self.blob_listable: array[float] = array("d")
        self.blob_records: list[array[int]] = []
        self._generate(per_day / DAY, rng)
        self.visible = array("d", [math.inf]) * len(self.created)
        for number, records in enumerate(self.blob_records):
            listable = self.blob_listable[number]
            for index in records:
                self.visible[index] = min(self.visible[index], listable)

    def _generate(self, rate: float, rng: random.Random) -> None:
        """A Poisson stream of records in [start, stop), each put into one or two blobs."""
        now = self.start
        while True:
            now += rng.expovariate(rate)
            if now >= self.stop:
                return
            index = len(self.created)
            self.created.append(float(math.floor(now)))
            available = now + draw(RECORD_LATENESS, rng)
            self._blob(available, rng).append(index)
            if rng.random() < DUPLICATE_SHARE:
                self._blob(available + rng.uniform(BLOB_PERIOD, DUPLICATE_SPREAD), rng).append(
                    index
                )

    def _blob(self, available: float, rng: random.Random) -> array[int]:
        number = int((available - self.start) // BLOB_PERIOD)
        while len(self.blob_records) <= number:  # lags drawn in blob order: seeded
            self.blob_records.append(array("i"))
            created = self.blob_created(len(self.blob_listable))
            self.blob_listable.append(created + draw(LISTING_LAG, rng))
        return self.blob_records[number]

    def __len__(self) -> int:
        return len(self.created)

    @property
    def blobs(self) -> int:
        return len(self.blob_records)

    def blob_created(self, number: int) -> float:
        return self.start + (number + 1) * BLOB_PERIOD

    def blob_expires(self, number: int) -> float:
        return self.blob_created(number) + RETENTION

    def content_id(self, number: int) -> str:
        return f"{self._id_prefix.replace('-', '')}{number:016x}${CONTENT_TYPE}"

    def blob_number(self, content_id: str) -> int:
        return int(content_id.partition("$")[0][-16:], 16)

    def record_id(self, index: int) -> str:
        """A GUID per record, stable for a seed; :meth:`record_index` inverts it."""
        return f"{self._id_prefix}{index:012x}"

    def record_index(self, record_id: str) -> int:
        return int(record_id[24:], 16)


@dataclass(frozen=True, slots=True)
class Listing:
    """One answer to a listing request: blob numbers, the offset of the next page or None;
    or an error (``status`` 400/403 with the service's ``code``)."""

    status: int
    code: str = ""
    blobs: tuple[int, ...] = ()
    next_offset: int | None = None


@dataclass(frozen=True, slots=True)
class Content:
    """One answer to a blob download: its record indices, or an error."""

    status: int
    code: str = ""
    records: tuple[int, ...] = ()


THROTTLED = "AF429"
BAD_WINDOW = "AF20055"
EXPIRED = "AF20051"


class ManagementModel:
    """The API of one tenant's content type: listing by contentCreated, blobs, the budget.

    ``listings``, ``fetches``, ``other`` and ``throttled`` count what this source sent.
    """

    def __init__(self, feed: Feed, clock: Callable[[], float]) -> None:
        self.feed = feed
        self.clock = clock
        self.throttle = Throttle(clock, *BUDGET)
        self.listings = self.fetches = self.other = self.throttled = 0

    @property
    def requests(self) -> int:
        return self.listings + self.fetches + self.other + self.throttled

    def admit(self) -> bool:
        """Whether a request fits the budget; an AF429 is counted but consumes nothing."""
        if self.throttle.admit():
            self.throttled += 1
            return False
        return True

    def subscribe(self) -> bool:
        """``subscriptions/start``: False when throttled (the subscription is always on)."""
        if not self.admit():
            return False
        self.other += 1
        return True

    def list(self, start: float, end: float, offset: int = 0) -> Listing:
        """Blobs with ``start <= contentCreated < end`` listable now, oldest first, paged."""
        if not self.admit():
            return Listing(403, THROTTLED)
        self.listings += 1
        now, feed = self.clock(), self.feed
        if end - start > MAX_WINDOW or start < now - RETENTION or end <= start:
            return Listing(400, BAD_WINDOW)
        first = max(0, math.ceil((start - feed.start) / BLOB_PERIOD) - 1)
        last = min(feed.blobs, math.ceil((end - feed.start) / BLOB_PERIOD) - 1)
        listable, expiry = feed.blob_listable, now - RETENTION
        found = [
            n
            for n in range(first, max(first, last))
            if start <= feed.blob_created(n) < end
            and listable[n] <= now
            and feed.blob_created(n) > expiry
        ]
        page = tuple(found[offset : offset + LISTING_PAGE])
        more = offset + LISTING_PAGE < len(found)
        return Listing(200, blobs=page, next_offset=offset + LISTING_PAGE if more else None)

    def fetch(self, number: int) -> Content:
        """A blob's records (every copy it holds), or AF20051 once it expired."""
        if not self.admit():
            return Content(403, THROTTLED)
        self.fetches += 1
        if self.feed.blob_expires(number) <= self.clock():
            return Content(400, EXPIRED)
        return Content(200, records=tuple(self.feed.blob_records[number]))

"""The Management Activity collectors under test: ours (the real source and loop) and two peers.

Each runs against the same :class:`bench.o365_model.ManagementModel` on its own virtual clock
until the run's end and reports what it delivered to a :class:`bench.model.DeliveryLog`.
Every request takes ``REQUEST_SECONDS`` of virtual time, blob downloads included.

- ``ours``: the real :class:`exporter.collector.SourceLoop` over the real
  :class:`exporter.management_activity.ManagementActivitySource` and
  :class:`exporter.management_http.ManagementHttp`, with a real ledger: its tiers, their
  contentCreated windows (23 h pieces, never past 7 days), the blob ids in the ledger and
  the dedupe by ``Id`` are the shipped code. Only the HTTP session is modelled
  (:class:`ModelSession`: the model's answers as ``requests`` responses, in the API's JSON).
- ``lookback24h``: every minute, the last 24 h of contentCreated listed again; blobs not in
  its blob-id file (kept for the 24 h a window can reach) fetched, every record sent.
- ``cursor``: every minute, ``[cursor, now)`` listed (in 24 h pieces); every listed blob
  fetched and sent; the cursor moves to the newest contentCreated listed plus 1 s.

The peers run every minute, as ours polls, so the table compares designs, not intervals.
They are plain clients: no pacing, a fixed 5 s pause after an AF429.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from prometheus_client import CollectorRegistry
from requests.structures import CaseInsensitiveDict

from bench.model import BenchClock, DeliveryLog
from bench.o365_model import BUDGET, CONTENT_TYPE, Content, Feed, Listing, ManagementModel
from bench.strategies import REQUEST_SECONDS, requests_by_tier
from exporter.budget import BudgetShares, RequestBudget
from exporter.collector import SourceLoop
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import Interrupted
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger
from exporter.management_activity import ManagementActivitySource, ManagementMetrics
from exporter.management_http import ManagementHttp
from exporter.management_query import MANAGEMENT_API, ManagementSettings
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent
from exporter.sim.management_feed import management_time

MANAGEMENT_URL = "https://manage.office.com"
TENANT = "72f988bf-0000-4000-8000-00000000b365"
POLL = 60.0
THROTTLE_PAUSE = 5.0
OURS_BUDGET = BudgetConfig(requests=BUDGET[0], per=BUDGET[1])
OURS = SourceConfig(
    name="o365-aad",
    api=MANAGEMENT_API,
    settings=ManagementSettings(CONTENT_TYPE),
    page_size=1000,
    poll_interval=POLL,
    lookback=2 * 3600.0,  # README's example for this API
    max_lookback=7 * 86400.0,  # the default: as far back as the API lists
)
Reply = TypeVar("Reply", Listing, Content)


class RunOver(Exception):
    """The virtual clock reached the end of the run."""


class World:
    """One strategy's run: the records, the API over them, what reached the SIEM; the clock."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.stop = threading.Event()
        self.clock = BenchClock(feed.start, feed.stop, self.stop)
        self.api = ManagementModel(feed, self.clock.now)
        self.log = DeliveryLog(len(feed))
        self.blocked = 0.0

    def wait_until(self, when: float) -> None:
        """Sleep until ``when``; RunOver when the run ends first."""
        if self.clock.sleep(when - self.clock.now()):
            raise RunOver

    def deliver(self, indices: Sequence[int]) -> None:
        if indices:
            self.log.deliver(list(indices), self.clock.now())


@dataclass(frozen=True, slots=True)
class RunStats:
    """What a run cost; what it delivered is in ``World.log``."""

    requests: int
    listings: int
    fetches: int
    throttled: int
    blocked: float
    requests_by_tier: tuple[tuple[str, int], ...] = ()


def _stats(world: World, by_tier: tuple[tuple[str, int], ...] = ()) -> RunStats:
    api = world.api
    return RunStats(api.requests, api.listings, api.fetches, api.throttled, world.blocked, by_tier)


# -- ours: the shipped source over a modelled HTTP session ------------------------------


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> Any:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body, separators=(",", ":")).encode()
    response.headers = CaseInsensitiveDict(headers or {})
    return response


def _error(status: int, code: str) -> Any:
    return _response(status, {"error": {"code": code, "message": code}})


def _parse(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()


class ModelSession:
    """The API as :class:`exporter.management_http.ManagementHttp` sees it over HTTPS.

    Speaks the documented wire format: listing entries with contentId, contentUri,
    contentCreated and contentExpiration, a ``NextPageUri`` header (``/api/v1/``, no
    PublisherIdentifier, as Microsoft's reference shows it), blobs as JSON arrays of records,
    errors as ``{"error": {"code": ...}}`` with AF429 on HTTP 403 (no Retry-After).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.started = False

    def post(self, url: str, **kwargs: Any) -> Any:
        api = self.world.api
        answer = _error(403, "AF429") if not api.subscribe() else None
        if answer is None:
            answer = _error(400, "AF20024") if self.started else _response(200, {})
            self.started = True
        return self._after_request(answer)

    def get(self, url: str, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        operation = parts.path.partition("/activity/feed/")[2]
        if operation.startswith("audit/"):
            answer = self._blob(operation.removeprefix("audit/"))
        else:
            query = {name.lower(): values[0] for name, values in parse_qs(parts.query).items()}
            answer = self._listing(query)
        return self._after_request(answer)

    def _after_request(self, answer: Any) -> Any:
        if self.world.clock.sleep(REQUEST_SECONDS):
            raise Interrupted
        return answer

    def _listing(self, query: dict[str, str]) -> Any:
        feed = self.world.feed
        offset = int(query.get("nextpage", "0"))
        reply = self.world.api.list(_parse(query["starttime"]), _parse(query["endtime"]), offset)
        if reply.status != 200:
            return _error(reply.status, reply.code)
        entries = []
        for number in reply.blobs:
            content_id = feed.content_id(number)
            entries.append(
                {
                    "contentType": CONTENT_TYPE,
                    "contentId": content_id,
                    "contentUri": f"{MANAGEMENT_URL}/api/v1.0/{TENANT}/activity/feed/audit/"
                    + content_id,
                    "contentCreated": management_time(feed.blob_created(number)) + ".000Z",
                    "contentExpiration": management_time(feed.blob_expires(number)) + ".000Z",
                }
            )
        headers = {}
        if reply.next_offset is not None:
            params = {
                "contentType": CONTENT_TYPE,
                "startTime": query["starttime"],
                "endTime": query["endtime"],
                "nextPage": str(reply.next_offset),
            }
            headers["NextPageUri"] = (
                f"{MANAGEMENT_URL}/api/v1/{TENANT}/activity/feed/subscriptions/content?"
                + urlencode(params)
            )
        return _response(200, entries, headers)

    def _blob(self, content_id: str) -> Any:
        feed = self.world.feed
        reply = self.world.api.fetch(feed.blob_number(content_id))
        if reply.status != 200:
            return _error(reply.status, reply.code)
        return _response(
            200,
            [
                {
                    "CreationTime": management_time(feed.created[index]),
                    "Id": feed.record_id(index),
                    "Operation": "UserLoggedIn",
                    "RecordType": 15,
                    "Workload": "AzureActiveDirectory",
                }
                for index in reply.records
            ],
        )


class StaticTokens:
    """Tokens are not what this benchmark measures."""

    def token(self) -> str:
        return "bench-token"

    def invalidate(self) -> None:
        """Never asked: the model answers no 401."""


class RecordingDelivery:
    """The SIEM stand-in: accepts every batch and records which records arrived when."""

    def __init__(self, world: World) -> None:
        self.world = world

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        index = self.world.feed.record_index
        self.world.deliver([index(item.event["Id"]) for item in batch])

    def send_warning(self, text: str, timestamp: datetime) -> None:
        """In-band warnings are off in the benchmark."""


def run_ours(world: World, seed: int = 0) -> RunStats:
    """The real loop, source, HTTP retries and ledger (in a temporary directory)."""
    clock, source = world.clock, OURS
    registry = CollectorRegistry()
    metrics = ExporterMetrics(registry)
    extra = ManagementMetrics(registry)
    extra.initialise(metrics, [source])
    budget = RequestBudget(OURS_BUDGET.requests, OURS_BUDGET.per, clock)
    delivery = RecordingDelivery(world)
    http = ManagementHttp(
        MANAGEMENT_URL,
        source.name,
        StaticTokens(),
        budget,
        metrics,
        clock,
        ModelSession(world),
        random.Random(seed),  # backoff jitter: seeded, so a run is reproducible
    )
    with tempfile.TemporaryDirectory(prefix="bench-o365-ledger-") as tmp:
        ledger = Ledger(Path(tmp) / "state.db")
        try:
            api = ManagementActivitySource(
                MANAGEMENT_URL, TENANT, source, http, ledger, metrics, extra, clock
            )
            SourceLoop(
                source,
                api,
                ledger,
                delivery,
                metrics,
                Health({source.name: source.poll_interval}, clock=clock.now),
                clock,
                world.stop,
                InbandWarnings(False, delivery, clock),
                OURS_BUDGET,
                BudgetShares(OURS_BUDGET.usable, 1),
            ).run()
        finally:
            ledger.close()
    return _stats(world, requests_by_tier(registry, source.name))


# -- the peers ---------------------------------------------------------------------------


class Client:
    """A peer's HTTP client: every listing page, each blob, a fixed pause on AF429."""

    def __init__(self, world: World) -> None:
        self.world = world

    def _call(self, send: Callable[[], Reply]) -> Reply:
        world = self.world
        while True:
            reply = send()
            world.wait_until(world.clock.now() + REQUEST_SECONDS)
            if reply.status != 403:
                return reply
            world.blocked += THROTTLE_PAUSE
            world.wait_until(world.clock.now() + THROTTLE_PAUSE)

    def listing(self, start: float, end: float) -> Iterator[int]:
        """The blob numbers of ``[start, end)``, every page; nothing for a refused window."""
        offset: int | None = 0
        while offset is not None:
            reply = self._call(partial(self.world.api.list, start, end, offset))
            if reply.status != 200:
                return
            yield from reply.blobs
            offset = reply.next_offset

    def fetch(self, number: int) -> tuple[int, ...]:
        """A blob's records; none when it expired."""
        return self._call(partial(self.world.api.fetch, number)).records


def run_lookback24h(world: World, window: float = 86_400.0) -> RunStats:
    """The last ``window`` listed every minute; a blob-id file keeps blobs from being fetched
    twice, but nothing keeps a record in two blobs from being sent twice."""
    client, feed = Client(world), world.feed
    fetched: dict[int, float] = {}  # the blob-id file: blob -> contentCreated
    try:
        while True:
            started = world.clock.now()
            for number in client.listing(started - window, started):
                if number not in fetched:
                    world.deliver(client.fetch(number))
                    fetched[number] = feed.blob_created(number)
            fetched = {n: c for n, c in fetched.items() if c >= started - window}
            world.wait_until(started + POLL)
    except RunOver:
        return _stats(world)


def run_cursor(world: World, piece: float = 86_400.0) -> RunStats:
    """``[cursor, now)`` every minute; cursor = newest contentCreated listed + 1 s."""
    client, feed = Client(world), world.feed
    cursor = feed.start
    try:
        while True:
            started = world.clock.now()
            newest = None
            low = cursor
            while low < started:
                high = min(started, low + piece)
                for number in client.listing(low, high):
                    world.deliver(client.fetch(number))
                    created = feed.blob_created(number)
                    newest = created if newest is None else max(newest, created)
                low = high
            if newest is not None:
                cursor = newest + 1.0
            world.wait_until(started + POLL)
    except RunOver:
        return _stats(world)


STRATEGIES: dict[str, Callable[[World], RunStats]] = {
    "ours": run_ours,
    "lookback24h": run_lookback24h,
    "cursor": run_cursor,
}

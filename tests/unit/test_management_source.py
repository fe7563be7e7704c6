"""The Management Activity source against the simulated API in process, on a manual clock:
each blob fetched once and remembered only after its records were delivered, records deduped
by Id across blobs, the listing's rules, PublisherIdentifier everywhere, the bearer token
kept on the management host, AF429 backed off, subscriptions, expired blobs counted."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client import CollectorRegistry
from requests.structures import CaseInsensitiveDict

from exporter.budget import RequestBudget
from exporter.clock import ManualClock
from exporter.collector import SourceLoop
from exporter.config import BudgetConfig, SourceConfig
from exporter.errors import ForeignUriError, SubscriptionDisabled
from exporter.inband import InbandWarnings
from exporter.ledger import Ledger
from exporter.management_activity import (
    BLOB_LEDGER,
    ManagementActivitySource,
    ManagementMetrics,
)
from exporter.management_http import ManagementHttp
from exporter.management_query import (
    LISTABLE_AGE,
    MAX_LISTING_WINDOW,
    ManagementSettings,
    listing_windows,
    parse_time,
    with_publisher,
)
from exporter.metrics import ExporterMetrics, Health
from exporter.pipeline import KeyedEvent
from exporter.sim.management_api import FEEDS, ManagementApi
from exporter.sim.messages import Request
from exporter.sim.state import TokenStore

GUID = "6f4b5b8e-9d3a-4c1e-8a2b-0c1d2e3f4a5b"
HOST = "https://manage.test"
AAD = "Audit.AzureActiveDirectory"


class SimSession:
    """requests' get/post, answered by the simulated API; remembers every URL and its token."""

    def __init__(self, api: ManagementApi) -> None:
        self.api = api
        self.sent: list[tuple[str, str]] = []

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, kwargs["headers"])

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, kwargs["headers"])

    def _send(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        self.sent.append((url, headers["Authorization"]))
        parts = urlsplit(url)
        target = f"{parts.path}?{parts.query}"
        request = Request(method, target, {k.lower(): v for k, v in headers.items()})
        answer = self.api.serve(request, parts.path, parse_qs(parts.query))
        response = requests.Response()
        response.status_code = answer.status
        response._content = answer.body
        response.headers = CaseInsensitiveDict({k.lower(): v for k, v in answer.headers.items()})
        return response


class Tokens:
    def __init__(self, store: TokenStore) -> None:
        self.value = store.issue()[0]

    def token(self) -> str:
        return self.value

    def invalidate(self) -> None:
        pass


class Rig:
    """The simulated API, the source over it, and a ledger: what one test drives."""

    def __init__(
        self, tmp_path: Path, page_size: int = 1000, clock: ManualClock | None = None
    ) -> None:
        self.clock = clock or ManualClock(1_780_000_000.0)
        store = TokenStore(threading.RLock(), self.clock.now, 10**8)
        self.base = HOST
        self.api = ManagementApi(
            (GUID,), GUID, lambda: self.base, self.clock.now, store, FEEDS["test"], 1
        )
        self.session = SimSession(self.api)
        self.metrics = ExporterMetrics(CollectorRegistry())
        self.extra = ManagementMetrics(self.metrics.registry)
        self.ledger = Ledger(tmp_path / "state.db")
        self.config = config = SourceConfig(
            "aad", "management_activity", ManagementSettings(AAD), page_size, 1.0, 30.0, 600.0
        )
        self.extra.initialise(self.metrics, [config])
        budget = RequestBudget(2000, 60.0, self.clock)
        http = ManagementHttp(
            HOST, "aad", Tokens(store), budget, self.metrics, self.clock, self.session
        )
        self.source = ManagementActivitySource(
            HOST, GUID, config, http, self.ledger, self.metrics, self.extra, self.clock
        )

    def deliver(self, start: float) -> list[KeyedEvent]:
        """What the loop does with each page: drop what was delivered, record the rest."""
        sent: list[KeyedEvent] = []
        for page in self.source.pages(start):
            sent += self.record(page.events)
        return sent

    def record(self, events: list[KeyedEvent]) -> list[KeyedEvent]:
        done = self.ledger.delivered("aad", [(e.key, e.event_time) for e in events])
        new = list({e.key: e for e in events if e.key not in done}.values())
        self.ledger.record("aad", [(e.key, e.event_time) for e in new], self.clock.now())
        return new

    def value(self, metric: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    made.ledger.close()


def ids(events: list[KeyedEvent]) -> list[str]:
    return [str(e.event["Id"]) for e in events]


def listable_ids(rig: Rig) -> set[str]:
    truth = rig.api.control(Request("GET", "", {}), "truth", {"contentType": [AAD]})
    return {
        r["Id"]
        for r in json.loads(truth.body)
        if any(b["exists"] and b["listable_at"] <= rig.clock.now() for b in r["blobs"])
    }


def test_every_record_once_and_every_blob_fetched_once(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)  # starts the subscription
    rig.clock.advance(90)
    first = rig.deliver(start)
    again = rig.deliver(start)

    assert len(ids(first)) == len(set(ids(first)))
    assert set(ids(first)) == listable_ids(rig)
    assert again == []
    fetches = rig.api.stats()["blob_fetches"]
    assert fetches and max(fetches.values()) == 1
    assert rig.value("siem_exporter_blobs_fetched_total", source="aad") == len(fetches)


def test_records_are_keyed_by_id_and_dated_by_creation_time(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(30)
    sent = rig.deliver(start)
    assert sent
    for event in sent:
        assert event.has_id and event.event_time is None
        assert event.header_time == parse_time(event.event["CreationTime"])
    assert rig.value("siem_exporter_event_arrival_lag_seconds_count", source="aad") == len(sent)


def test_drift_against_the_window_is_measured_on_content_created(rig: Rig) -> None:
    # The listing windows run on contentCreated; CreationTime trails it by the API's
    # latency, so only contentCreated says whether the windows still reach the blobs.
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(90)
    sent: list[KeyedEvent] = []
    reported: list[float] = []
    for page in rig.source.pages(start):
        sent += rig.record(page.events)
        reported += [page.window_newest] if page.window_newest is not None else []
    now = rig.clock.now()
    truth = rig.api.control(Request("GET", "", {}), "truth", {"contentType": [AAD]})
    listed = [
        blob["content_created"]
        for record in json.loads(truth.body)
        for blob in record["blobs"]
        if blob["exists"] and blob["listable_at"] <= now
    ]
    newest_record = max(parse_time(e.event["CreationTime"]) for e in sent)
    window_drift = now - max(reported)  # what the loop sets window_drift_seconds to
    api_drift = rig.value("siem_exporter_api_drift_seconds", source="aad")
    assert max(reported) == pytest.approx(max(listed))
    assert api_drift == pytest.approx(now - newest_record.timestamp())
    assert window_drift < api_drift


def test_a_blob_is_remembered_only_after_its_last_page_was_delivered(tmp_path: Path) -> None:
    rig = Rig(tmp_path, page_size=1)
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(30)
    pages = rig.source.pages(start)
    first = next(page for page in pages if page.events)
    rig.record(first.events)
    pages.close()  # a crash or a failed send: the rest of the blob was never delivered

    assert rig.ledger.count("aad" + BLOB_LEDGER) == 0
    rest = rig.deliver(start)
    assert set(ids(first.events)).isdisjoint(ids(rest))
    assert set(ids(first.events)) | set(ids(rest)) == listable_ids(rig)
    rig.ledger.close()


def test_every_request_carries_the_publisher_identifier(rig: Rig) -> None:
    rig.deliver(rig.clock.now())
    rig.clock.advance(60)
    rig.deliver(rig.clock.now() - 60)
    assert rig.session.sent
    for url, _ in rig.session.sent:
        assert parse_qs(urlsplit(url).query)["PublisherIdentifier"] == [GUID]


def test_a_foreign_next_page_uri_is_refused_before_the_token_leaves(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(60)
    rig.api.set_faults(foreign_next_page=1)
    with pytest.raises(ForeignUriError):
        rig.deliver(start)
    assert all(urlsplit(url).hostname == "manage.test" for url, _ in rig.session.sent)
    assert rig.value("siem_exporter_api_errors_total", source="aad", reason="foreign_next_link")


def test_a_foreign_content_uri_is_refused_and_counted(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(30)
    rig.base = "https://manage.example.invalid"  # the listing now points blobs elsewhere
    with pytest.raises(ForeignUriError):
        rig.deliver(start)
    assert all(urlsplit(url).hostname == "manage.test" for url, _ in rig.session.sent)
    assert rig.value(
        "siem_exporter_blob_fetch_failures_total", source="aad", reason="foreign_next_link"
    )


def test_af429_is_backed_off_like_a_429(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(30)
    rig.api.set_faults(af429=3)
    before = rig.clock.now()
    sent = rig.deliver(start)
    assert sent
    assert rig.value("siem_exporter_throttle_retries_total", source="aad", code="AF429") == 3
    assert rig.clock.now() - before >= 0.5 + 1 + 2  # backoff doubles, at least half each time


def test_an_expired_blob_is_counted_as_lost_once(rig: Rig, caplog: Any) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.clock.advance(30)
    rig.api.set_faults(expire_fetches=1)
    rig.deliver(start)
    rig.deliver(start)

    assert rig.value("siem_exporter_blob_fetch_failures_total", source="aad", reason="expired") == 1
    assert "content blob expired before it could be fetched" in caplog.text


def test_a_stopped_subscription_is_started_again(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.api._feeds[AAD].stop(rig.clock.now())
    rig.clock.advance(30)
    rig.deliver(start)
    rig.clock.advance(30)
    assert rig.deliver(start)
    assert rig.api.stats()["requests"]["subscriptions/start"] == 2


def test_an_admin_disabled_subscription_raises_and_recovers(rig: Rig) -> None:
    start = rig.clock.now()
    rig.deliver(start)
    rig.api.admin(AAD, disabled=True)
    rig.clock.advance(10)
    with pytest.raises(SubscriptionDisabled) as raised:
        rig.deliver(start)
    assert raised.value.retry_after is not None
    assert rig.value("siem_exporter_subscription_enabled", source="aad") == 0
    rig.api.admin(AAD, disabled=False)
    rig.clock.advance(30)
    assert rig.deliver(start)
    assert rig.value("siem_exporter_subscription_enabled", source="aad") == 1


def test_listing_windows_are_at_most_23_hours_and_never_older_than_7_days() -> None:
    now = 1_780_000_000.0
    pieces = list(listing_windows(now - 30 * 86400, now, now))
    assert pieces[0][1] == now and pieces[-1][0] == now - LISTABLE_AGE
    assert all(0 < end - start <= MAX_LISTING_WINDOW for start, end in pieces)
    assert all(a[0] == b[1] for a, b in itertools.pairwise(pieces))
    assert list(listing_windows(now - 9 * 86400, now - 8 * 86400, now)) == []


def test_the_publisher_identifier_is_added_once_whatever_its_case() -> None:
    url = "https://manage.test/api/v1/x/activity/feed/subscriptions/content?nextPage=2"
    added = with_publisher(url, GUID)
    assert parse_qs(urlsplit(added).query) == {"nextPage": ["2"], "PublisherIdentifier": [GUID]}
    kept = url + "&publisheridentifier=" + GUID
    assert with_publisher(kept, GUID) == kept


def test_creation_time_without_a_zone_is_utc() -> None:
    parsed = parse_time("2026-12-04T23:31:05")
    assert parsed is not None and parsed.isoformat() == "2026-12-04T23:31:05+00:00"
    assert parse_time("2026-12-04") is None


class StoppingClock(ManualClock):
    """A manual clock that stops the loop once time passes ``end``."""

    def __init__(self, start: float, stop: threading.Event) -> None:
        super().__init__(start)
        self.end = start
        self.stop = stop

    def sleep(self, seconds: float) -> bool:
        super().sleep(seconds)
        if self.now() >= self.end:
            self.stop.set()
        return self.stop.is_set()


class RecordingOutlet:
    """The sinks as the loop sees them: counts records, keeps warning lines."""

    def __init__(self) -> None:
        self.sent = 0
        self.warnings: list[str] = []

    def send(self, source: str, batch: Sequence[KeyedEvent]) -> None:
        self.sent += len(batch)

    def send_warning(self, text: str, timestamp: datetime) -> None:
        self.warnings.append(text)


def test_in_band_warnings_judge_the_listing_not_the_records_new(tmp_path: Path) -> None:
    """A quiet poll lists blobs fetched before: not an empty window. Only a listing with no
    blob at all is, and drift on contentCreated (the window's axis) then warns too."""
    stop = threading.Event()
    clock = StoppingClock(1_780_000_000.0, stop)
    rig = Rig(tmp_path, clock=clock)
    rig.deliver(clock.now())  # subscribed: content exists from here on, none before
    clock.advance(60)
    outlet = RecordingOutlet()
    loop = SourceLoop(
        rig.config,
        rig.source,
        rig.ledger,
        outlet,
        rig.metrics,
        Health({"aad": 1.0}, clock=clock.now),
        clock,
        stop,
        InbandWarnings(True, outlet, clock),
        BudgetConfig(2000, 60.0),
    )

    def run_for(seconds: float) -> None:
        clock.end = clock.now() + seconds
        stop.clear()
        loop.run()

    def warned(condition: str) -> list[str]:
        return [w for w in outlet.warnings if condition in w]

    listed = "siem_exporter_blobs_listed_total"
    try:
        run_for(120)
        assert outlet.sent and not outlet.warnings
        rig.api.freeze()  # nothing becomes listable any more: quiet polls from here on
        run_for(5)
        sent, blobs = outlet.sent, rig.value(listed, source="aad")
        run_for(10)
        assert outlet.sent == sent, "the quiet polls found nothing new"
        assert rig.value(listed, source="aad") > blobs, "they listed blobs fetched before"
        assert not warned("returned no events"), outlet.warnings
        run_for(900)  # the windows pass the newest blob: listings hold none
        assert warned("source aad returned no events"), outlet.warnings
        assert warned("API drift of"), outlet.warnings
    finally:
        rig.ledger.close()

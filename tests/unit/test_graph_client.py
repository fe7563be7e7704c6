"""GraphClient's retry decisions against a scripted session, in manual time.

Each test scripts the HTTP answers Graph gives (401, 429 with an HTTP-date, a cut-off page,
403, 500s, nextLinks) and checks what the client sends next, what it costs, and what it
counts. The same client meets the simulated tenant over real HTTPS in tests/integration.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.budget import RequestBudget
from exporter.clock import ManualClock
from exporter.config import SourceConfig
from exporter.errors import ForeignNextLinkError, GraphHTTPError, MalformedPageError
from exporter.graph import MAX_ATTEMPTS, MAX_THROTTLE_RETRIES, GraphClient
from exporter.graph_query import GraphSettings
from exporter.metrics import ExporterMetrics
from exporter.pipeline import Page

GRAPH = "https://graph.example"
START = 1_800_000_000.0
GUID = "4a1b2c3d-0000-4000-8000-00000000abcd"
PAGE = b'{"value": [{"id": "%s", "createdDateTime": "2027-01-15T08:00:00Z"}]}' % GUID.encode()
SOURCE = SourceConfig(
    "signins",
    "graph",
    GraphSettings("/v1.0/auditLogs/signIns", "createdDateTime"),
    page_size=50,
    poll_interval=60.0,
    lookback=120.0,
    max_lookback=3600.0,
)


def answer(status: int, body: bytes = b"{}", **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers)
    return response


class ScriptedSession:
    """Answers each GET with the next scripted response (or raises it), recording the call."""

    def __init__(self, clock: ManualClock, *script: requests.Response | Exception) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[float, str, str]] = []  # (when, url, bearer token)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append((self.clock.now(), url, kwargs["headers"]["Authorization"]))
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class CountingTokens:
    def __init__(self) -> None:
        self.issued = 0

    def token(self) -> str:
        return f"token-{self.issued}"

    def invalidate(self) -> None:
        self.issued += 1


def client_for(
    session: ScriptedSession, clock: ManualClock
) -> tuple[GraphClient, CountingTokens, CollectorRegistry]:
    registry = CollectorRegistry()
    tokens = CountingTokens()
    client = GraphClient(
        GRAPH,
        SOURCE,
        tokens,
        RequestBudget(5, 10.0, clock),
        ExporterMetrics(registry),
        clock,
        session,
        random.Random(1),
    )
    return client, tokens, registry


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"siem_exporter_{name}_total", labels) or 0.0


def first(pages: Iterator[Page]) -> Page:
    return next(pages)


def test_the_first_page_asks_for_the_window_and_its_events_come_keyed_and_dated() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(200, PAGE))
    client, _, _ = client_for(session, clock)
    page = first(client.pages(START - 120.5, START - 60.25))
    (_, url, bearer) = session.calls[0]
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == GRAPH + SOURCE.settings.endpoint
    assert parse_qs(parts.query) == {
        "$filter": [
            # whole seconds, widened outwards: the start floored, the end rounded up
            "createdDateTime ge 2027-01-15T07:57:59Z and createdDateTime le 2027-01-15T07:59:00Z"
        ],
        "$top": ["50"],
    }
    assert bearer == "Bearer token-0"
    (event,) = page.events
    assert event.key == bytes.fromhex(GUID.replace("-", "")) and event.has_id
    assert event.event_time == START, "2027-01-15T08:00:00Z"
    assert event.header_time is not None and event.header_time.timestamp() == event.event_time
    assert (page.requests, page.throttle_retries, page.budget_wait) == (1, 0, 0.0)


def test_a_401_gets_one_fresh_token_then_the_request_is_sent_again() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(401), answer(200, PAGE))
    client, tokens, _ = client_for(session, clock)
    page = first(client.pages(START - 60))
    assert [bearer for _, _, bearer in session.calls] == ["Bearer token-0", "Bearer token-1"]
    assert tokens.issued == 1 and page.requests == 2 and len(page.events) == 1


def test_a_second_401_in_a_row_fails_the_query_without_a_third_request() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(401), answer(401), answer(200, PAGE))
    client, tokens, registry = client_for(session, clock)
    with pytest.raises(GraphHTTPError) as failed:
        first(client.pages(START - 60))
    assert failed.value.status == 401 and len(session.calls) == 2 and tokens.issued == 1
    assert count(registry, "api_errors", source="signins", reason="http_error") == 1


def test_a_429_with_an_http_date_holds_the_budget_until_that_date() -> None:
    clock = ManualClock(START)
    until = formatdate(START + 30, usegmt=True)
    session = ScriptedSession(clock, answer(429, **{"Retry-After": until}), answer(200, PAGE))
    client, _, registry = client_for(session, clock)
    page = first(client.pages(START - 60))
    (sent, _, _), (retried, _, _) = session.calls
    assert retried - sent == pytest.approx(30.0), "the retry went before the stated date"
    assert (page.requests, page.throttle_retries) == (2, 1)
    assert page.budget_wait == pytest.approx(30.0), "the page's cost holds the wait"
    assert count(registry, "throttle_retries", source="signins", code="429") == 1


def test_every_wait_of_a_page_counts_in_its_cost() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(429, **{"Retry-After": "30"}), answer(200, PAGE))
    client, _, _ = client_for(session, clock)
    client.budget = RequestBudget(1, 10.0, clock)
    client.budget.acquire()  # another source took the only slot: the first request waits 10 s
    page = first(client.pages(START - 60))
    assert page.budget_wait == pytest.approx(40.0), "10 s for the slot, then 30 s held"


def test_a_throttle_without_retry_after_backs_off_exponentially_and_gives_up_at_last() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(429), answer(503), answer(200, PAGE))
    client, _, registry = client_for(session, clock)
    page = first(client.pages(START - 60))
    sent = [when for when, _, _ in session.calls]
    assert 0.5 <= sent[1] - sent[0] <= 1.0 and 1.0 <= sent[2] - sent[1] <= 2.0
    assert (page.requests, page.throttle_retries) == (3, 2)
    assert count(registry, "throttle_retries", source="signins", code="503") == 1

    clock = ManualClock(START)
    throttled = [answer(429, **{"Retry-After": "1"})] * MAX_THROTTLE_RETRIES
    session = ScriptedSession(clock, *throttled, answer(200, PAGE))
    client, _, _ = client_for(session, clock)
    assert first(client.pages(START - 60)).throttle_retries == MAX_THROTTLE_RETRIES
    session = ScriptedSession(clock, *throttled, answer(429), answer(200, PAGE))
    client, _, _ = client_for(session, clock)
    with pytest.raises(GraphHTTPError) as failed:
        first(client.pages(START - 60))
    assert (failed.value.status, failed.value.code) == (429, "throttled")
    assert len(session.calls) == MAX_THROTTLE_RETRIES + 1


def test_a_cut_off_page_is_counted_and_fetched_again_after_a_backoff() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(200, PAGE[:40]), answer(200, PAGE))
    client, _, registry = client_for(session, clock)
    page = first(client.pages(START - 60))
    (sent, _, _), (retried, _, _) = session.calls
    assert 0.5 <= retried - sent <= 1.0, "one backoff step (1 s, jittered down to half)"
    assert len(page.events) == 1 and page.requests == 2
    assert count(registry, "api_errors", source="signins", reason="malformed_page") == 1


def test_a_page_that_stays_malformed_fails_the_query_after_the_last_attempt() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, *[answer(200, b'{"value": 3}')] * MAX_ATTEMPTS)
    client, _, _ = client_for(session, clock)
    with pytest.raises(MalformedPageError):
        first(client.pages(START - 60))
    assert len(session.calls) == MAX_ATTEMPTS


def test_a_403_fails_at_once() -> None:
    clock = ManualClock(START)
    body = b'{"error": {"code": "Authorization_RequestDenied", "message": "Insufficient"}}'
    session = ScriptedSession(clock, answer(403, body), answer(200, PAGE))
    client, _, registry = client_for(session, clock)
    with pytest.raises(GraphHTTPError) as failed:
        first(client.pages(START - 60))
    assert (failed.value.status, failed.value.code) == (403, "Authorization_RequestDenied")
    assert len(session.calls) == 1
    assert count(registry, "api_errors", source="signins", reason="forbidden") == 1


def test_server_errors_and_network_failures_are_retried_up_to_the_attempt_limit() -> None:
    clock = ManualClock(START)
    failures: list[requests.Response | Exception] = [
        answer(500),
        requests.ConnectionError("reset"),
        answer(502),
    ]
    session = ScriptedSession(clock, *failures, answer(200, PAGE))
    client, _, registry = client_for(session, clock)
    page = first(client.pages(START - 60))
    assert page.requests == 4 and len(page.events) == 1
    assert count(registry, "api_errors", source="signins", reason="network") == 1
    assert count(registry, "api_requests", source="signins", code="network") == 1

    clock = ManualClock(START)
    body = b'{"error": {"code": "UnknownError", "message": "try later"}}'
    session = ScriptedSession(clock, *[answer(500, body)] * MAX_ATTEMPTS)
    client, _, _ = client_for(session, clock)
    with pytest.raises(GraphHTTPError) as failed:
        first(client.pages(START - 60))
    assert (failed.value.status, failed.value.code) == (500, "UnknownError")
    assert len(session.calls) == MAX_ATTEMPTS


def test_next_links_are_followed_on_graph_and_refused_anywhere_else() -> None:
    clock = ManualClock(START)
    second = f"{GRAPH}/v1.0/auditLogs/signIns?$skiptoken=abc"
    foreign = "https://graph.example.evil/v1.0/auditLogs/signIns?$skiptoken=def"
    session = ScriptedSession(
        clock,
        answer(200, b'{"value": [], "@odata.nextLink": "%s"}' % second.encode()),
        answer(200, b'{"value": [], "@odata.nextLink": "%s"}' % foreign.encode()),
    )
    client, _, registry = client_for(session, clock)
    pages = client.pages(START - 60)
    assert next(pages).events == [] and next(pages).events == []
    with pytest.raises(ForeignNextLinkError):
        next(pages)
    assert [url for _, url, _ in session.calls][1] == second
    assert len(session.calls) == 2, "a request went to the foreign host"
    assert count(registry, "api_errors", source="signins", reason="foreign_next_link") == 1


def test_every_request_asks_for_json_the_only_body_the_client_reads() -> None:
    """Header names and media types are case-insensitive; what is asked for is JSON."""
    clock = ManualClock(START)
    sent: list[dict[str, str]] = []

    class RecordingSession(ScriptedSession):
        def get(self, url: str, **kwargs: Any) -> requests.Response:
            sent.append({k.lower(): v.lower() for k, v in kwargs["headers"].items()})
            return super().get(url, **kwargs)

    session = RecordingSession(clock, answer(429, b"{}", **{"Retry-After": "1"}), answer(200, PAGE))
    client, _, _ = client_for(session, clock)
    first(client.pages(START - 120.0))
    assert [headers.get("accept") for headers in sent] == ["application/json"] * 2

"""The Graph source: one audit-log query, page by page, with every retry the API calls for.

- Each request first takes a slot of the tenant's request budget.
- 429, 503 and 504 wait ``Retry-After`` (seconds, fractional, or an HTTP-date) and hold the
  whole tenant's budget until then; without the header, capped exponential backoff with
  jitter. Counted in ``throttle_retries_total{code}``.
- 401 gets a fresh token once, then retries.
- A 200 whose body is not a complete page (cut off by an inline error) is retried and counted.
- ``@odata.nextLink`` is followed only when its scheme, host and port are ``graph_url``'s:
  anything else is refused before a request is sent, so the bearer token never leaves.

Each event is keyed by its ``id`` and dated by the source's time field here, so what leaves
this module is the pipeline's :class:`~exporter.pipeline.Page` of keyed events. What to
ask for (the source's keys, the endpoints' facts, the first URL) is :mod:`graph_query`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import requests

from exporter.budget import RequestBudget
from exporter.clock import Clock
from exporter.config import SourceConfig
from exporter.errors import (
    ForeignNextLinkError,
    GraphAccessDenied,
    GraphBadRequest,
    GraphError,
    GraphHTTPError,
    GraphNetworkError,
    Interrupted,
    MalformedPageError,
)
from exporter.eventtime import parse_event_time
from exporter.graph_page import parse_page
from exporter.graph_query import first_page_url, graph_settings
from exporter.https import error_envelope
from exporter.logs import fields
from exporter.metrics import ExporterMetrics
from exporter.pipeline import KeyedEvent, Page, dedupe_key
from exporter.retry import backoff, parse_retry_after

log = logging.getLogger(__name__)
_NOT_URL_TEXT = re.compile(r"[\x00-\x20\x7f]")

THROTTLE_STATUSES = frozenset({429, 503, 504})
SERVER_ERROR_STATUSES = frozenset({500, 502})
MAX_ATTEMPTS = 6
MAX_THROTTLE_RETRIES = 30


def same_origin(url: str, graph_url: str) -> bool:
    """True when ``url`` has the scheme, host and port of ``graph_url`` (default ports filled in).

    A URL holding a control character or a space is never the same origin: ``urlsplit``
    strips or drops such characters while urllib3 keeps them, so the two parsers could
    disagree on where the bearer token goes. Graph's nextLinks never hold one.
    """
    if _NOT_URL_TEXT.search(url):
        return False
    try:
        link, base = urlsplit(url), urlsplit(graph_url)
        link_port = link.port or (443 if link.scheme == "https" else 80)
        base_port = base.port or 443
    except ValueError:
        return False
    return (
        link.scheme == base.scheme
        and (link.hostname or "").lower() == (base.hostname or "").lower()
        and link_port == base_port
        and not link.username
        and not link.password
    )


def event_key(event: Mapping[str, Any], update_field: str | None = None) -> tuple[bytes, bool]:
    """The dedupe key of a Graph event (from its ``id``), and whether the id gave it.

    With ``update_field`` (records that change: risk detections, alerts) the key is of the
    id and that field's value together, so each version is delivered once and an unchanged
    record is never re-sent. An event without an id is keyed by its whole content anyway.
    """
    key, has_id = dedupe_key(event.get("id"), event)
    if update_field is None or not has_id:
        return key, has_id
    version = json.dumps(event.get(update_field), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    return hashlib.sha256(b"\0version\0" + key + version).digest()[:16], True


def key_events(
    events: Iterable[Mapping[str, Any]], time_field: str, update_field: str | None = None
) -> list[KeyedEvent]:
    """Graph's events keyed by ``id`` and dated by ``time_field`` (header and window alike).

    With ``update_field`` the window runs on that field instead, and each version of a
    record gets its own key (:func:`event_key`); the header still carries ``time_field``.
    """
    keyed = []
    for event in events:
        key, has_id = event_key(event, update_field)
        when = parse_event_time(event.get(time_field))
        window = when if update_field is None else parse_event_time(event.get(update_field))
        seconds = None if window is None else window.timestamp()
        keyed.append(KeyedEvent(key, has_id, seconds, when, event))
    return keyed


class BearerTokens(Protocol):
    """Access tokens for Graph: :class:`exporter.auth.TokenProvider` (MSAL) in production."""

    def token(self) -> str: ...

    def invalidate(self) -> None:
        """Forget the cached token: Graph answered 401 with it."""
        ...


class HttpGet(Protocol):
    """Sends one GET: :class:`exporter.https.VerifiedSession` (verify pinned, no redirects)."""

    def get(self, url: str, **kwargs: Any) -> requests.Response: ...


class GraphClient:
    """Runs one source's queries against ``graph_url``: the :class:`Source` of its thread."""

    def __init__(
        self,
        graph_url: str,
        source: SourceConfig,
        tokens: BearerTokens,
        budget: RequestBudget,
        metrics: ExporterMetrics,
        clock: Clock,
        http: HttpGet,
        rng: random.Random | None = None,
    ) -> None:
        self.graph_url = graph_url
        self.source = source
        self.settings = graph_settings(source)
        update = () if self.settings.update_field is None else (self.settings.update_field,)
        self._fields = tuple(dict.fromkeys(("id", self.settings.time_field, *update)))
        self.tokens = tokens
        self.budget = budget
        self.metrics = metrics
        self.clock = clock
        self.http = http
        self.rng = rng or random.Random()

    def pages(self, start: float, end: float | None = None) -> Iterator[Page]:
        """Every page of the query from ``start`` (to ``end``), newest first, until no nextLink."""
        source = self.source
        url: str | None = first_page_url(self.graph_url, source, start, end)
        while url is not None:
            page, next_link = self._fetch_page(url)
            yield page
            del page  # the caller has it; held here, it would live on beside the next page
            if next_link is not None and not same_origin(next_link, self.graph_url):
                self.metrics.api_errors.labels(source.name, ForeignNextLinkError.reason).inc()
                raise ForeignNextLinkError(
                    f"nextLink points to {urlsplit(next_link).netloc or 'an unparsable URL'}, "
                    f"not {urlsplit(self.graph_url).netloc}; refused without sending the token"
                )
            url = next_link

    def _fetch_page(self, url: str) -> tuple[Page, str | None]:
        """One page with retries, and what it cost; raises GraphError when retries run out."""
        source = self.source.name
        failures = throttles = requests_sent = 0
        waited = 0.0
        token_refreshed = False
        while True:
            response, slot_wait = self._send(url)
            requests_sent += 1
            waited += slot_wait
            now = self.clock.now()
            if response is None:
                failure: GraphError = GraphNetworkError(f"cannot reach {urlsplit(url).netloc}")
            elif response.status_code == 200:
                try:
                    events, next_link = parse_page(response.content, self._fields)
                except MalformedPageError as exc:
                    failure = exc
                else:
                    settings = self.settings
                    keyed = key_events(events, settings.time_field, settings.update_field)
                    return Page(keyed, requests_sent, throttles, waited), next_link
            elif response.status_code in THROTTLE_STATUSES:
                throttles += 1
                self.metrics.throttle_retries.labels(source, str(response.status_code)).inc()
                if throttles > MAX_THROTTLE_RETRIES:
                    raise GraphHTTPError(
                        response.status_code, "throttled", "still throttled after many retries"
                    )
                delay = parse_retry_after(response.headers.get("Retry-After"), now)
                if delay is None:
                    delay = backoff(throttles - 1, rng=self.rng)
                self.budget.block_until(now + delay)
                log.info(
                    "throttled",
                    extra=fields(source=source, status=response.status_code, wait=delay),
                )
                continue
            elif response.status_code == 401 and not token_refreshed:
                token_refreshed = True
                self.tokens.invalidate()
                continue
            elif response.status_code in SERVER_ERROR_STATUSES:
                code, message = error_envelope(response.content)
                failure = GraphHTTPError(response.status_code, code, message)
            else:
                raise self._refused(response, url)
            failures += 1
            self.metrics.api_errors.labels(source, failure.reason).inc()
            log.warning(
                "graph request failed",
                extra=fields(source=source, error=str(failure), attempt=failures),
            )
            if failures >= MAX_ATTEMPTS:
                raise failure
            if self.clock.sleep(backoff(failures - 1, rng=self.rng)):
                raise Interrupted

    def _refused(self, response: requests.Response, url: str) -> GraphHTTPError:
        """A status retrying will not fix, logged once in words that say what to do.

        A 403 names the permission or the licence the endpoint needs (an administrator can
        grant it while the collector keeps retrying, slowly); a 400 names the query's
        ``$filter``, which is what Graph refused; anything else keeps Graph's own words.
        """
        source, status = self.source.name, response.status_code
        code, message = error_envelope(response.content)
        facts = self.settings.facts
        error: GraphHTTPError
        if status == 403:
            unlicensed = "premium" in (code + message).lower() or "licen" in message.lower()
            error = GraphAccessDenied(status, code, message, unlicensed=unlicensed)
            todo = (
                f"the tenant needs {facts.licence} for {self.settings.endpoint}"
                if unlicensed
                else f"grant the app registration {facts.permission} (application) "
                "and admin consent"
            )
        elif status == 400:
            error = GraphBadRequest(status, code, message)
            clause = parse_qs(urlsplit(url).query).get("$filter", ["(none)"])[0]
            todo = f"Graph refused the query's $filter: {clause}"
        else:
            error = GraphHTTPError(status, code, message)
            todo = "see Graph's message"
        self.metrics.api_errors.labels(source, error.reason).inc()
        log.error(
            f"graph refused source {source}: {todo}",
            extra=fields(source=source, status=status, code=code, message=message),
        )
        return error

    def _send(self, url: str) -> tuple[requests.Response | None, float]:
        """One request after a budget slot, and the wait for it; None when the network failed."""
        source = self.source.name
        waited = self.budget.acquire()
        self.metrics.budget_wait.labels(source).inc(waited)
        headers = {
            "Authorization": f"Bearer {self.tokens.token()}",
            "Accept": "application/json",
            # Graph compresses a page tenfold or more when asked (as its own SDKs ask): a
            # tenth of the bytes to carry and decrypt, for an inflate (libdeflate) that costs
            # less than the decryption it saves.
            "Accept-Encoding": "gzip",
        }
        try:
            response = self.http.get(url, headers=headers)
        except requests.RequestException as exc:
            self.metrics.api_requests.labels(source, "network").inc()
            log.warning("graph unreachable", extra=fields(source=source, error=type(exc).__name__))
            return None, waited
        self.metrics.api_requests.labels(source, str(response.status_code)).inc()
        return response, waited

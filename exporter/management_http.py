"""One request to the Management Activity API, with every retry the API calls for.

- Each request first takes a slot of the tenant's Management budget (about 2,000 a minute)
  and carries ``PublisherIdentifier``.
- A throttle comes back as HTTP 403 with code AF429, not 429: it is treated like a 429
  (and 429, 503 and 504 too): ``Retry-After`` when given, else capped exponential backoff
  with jitter, holding the whole tenant's budget meanwhile; counted in
  ``throttle_retries_total{code}`` with the code (``AF429``, ``429``, ...).
- 401 gets a fresh token once; 500, 502 and AF50000 are retried with backoff.
- The bearer token goes only to ``management_url``'s scheme, host and port: a NextPageUri or
  contentUri anywhere else is refused before a request is sent.

Anything else is the caller's to judge (:class:`Reply` carries the service's ``AF`` code):
an AF20022 means "start the subscription", AF20024 "it already is", AF20051 "expired".
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from exporter.budget import RequestBudget
from exporter.clock import Clock
from exporter.errors import ForeignUriError, Interrupted, ManagementError, ManagementNetworkError
from exporter.graph import BearerTokens, same_origin
from exporter.https import error_envelope
from exporter.logs import fields
from exporter.metrics import ExporterMetrics
from exporter.retry import backoff, parse_retry_after

log = logging.getLogger(__name__)

THROTTLE_CODE = "AF429"
RETRY_CODE = "AF50000"
THROTTLE_STATUSES = frozenset({429, 503, 504})
SERVER_ERROR_STATUSES = frozenset({500, 502})
MAX_ATTEMPTS = 6
MAX_THROTTLE_RETRIES = 30


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer the caller judges: a 200, or an error with the service's code."""

    status: int
    code: str
    message: str
    body: bytes
    headers: Any  # requests' case-insensitive headers: NextPageUri comes in any case


@dataclass
class Cost:
    """What the requests since the last page cost; the source hands it on with that page."""

    requests: int = 0
    throttles: int = 0
    waited: float = 0.0

    def take(self) -> Cost:
        taken = Cost(self.requests, self.throttles, self.waited)
        self.requests, self.throttles, self.waited = 0, 0, 0.0
        return taken


class HttpSession(Protocol):
    """:class:`exporter.https.VerifiedSession`: verify pinned, no redirects."""

    def get(self, url: str, **kwargs: Any) -> requests.Response: ...

    def post(self, url: str, **kwargs: Any) -> requests.Response: ...


class ManagementHttp:
    """Sends one source's requests to ``management_url`` within the budget, retrying."""

    def __init__(
        self,
        management_url: str,
        source: str,
        tokens: BearerTokens,
        budget: RequestBudget,
        metrics: ExporterMetrics,
        clock: Clock,
        http: HttpSession,
        rng: random.Random | None = None,
    ) -> None:
        self.management_url = management_url
        self.source = source
        self.tokens = tokens
        self.budget = budget
        self.metrics = metrics
        self.clock = clock
        self.http = http
        self.rng = rng or random.Random()
        self.cost = Cost()

    def send(self, method: str, url: str) -> Reply:
        """The answer to ``method url`` once retries are done; raises when they run out."""
        if not same_origin(url, self.management_url):
            self.metrics.api_errors.labels(self.source, ForeignUriError.reason).inc()
            raise ForeignUriError(
                f"refused a URL on {urlsplit(url).netloc or 'an unparsable host'}, not "
                f"{urlsplit(self.management_url).netloc}, without sending the token"
            )
        failures = throttles = 0
        token_refreshed = False
        while True:
            response = self._send(method, url)
            now = self.clock.now()
            if response is None:
                failure: ManagementError = ManagementNetworkError(
                    f"cannot reach {urlsplit(url).netloc}"
                )
            else:
                status = response.status_code
                code, message = ("", "") if status == 200 else error_envelope(response.content)
                if code == THROTTLE_CODE or status in THROTTLE_STATUSES:
                    throttles += 1
                    self._throttled(response, code or str(status), throttles, now)
                    continue
                if status == 401 and not token_refreshed:
                    token_refreshed = True
                    self.tokens.invalidate()
                    continue
                if status not in SERVER_ERROR_STATUSES and code != RETRY_CODE:
                    return Reply(status, code, message, response.content, response.headers)
                failure = ManagementError(f"HTTP {status} {code}: {message}")
            failures += 1
            self.metrics.api_errors.labels(self.source, failure.reason).inc()
            log.warning(
                "management request failed",
                extra=fields(source=self.source, error=str(failure), attempt=failures),
            )
            if failures >= MAX_ATTEMPTS:
                raise failure
            if self.clock.sleep(backoff(failures - 1, rng=self.rng)):
                raise Interrupted

    def _throttled(
        self, response: requests.Response, code: str, throttles: int, now: float
    ) -> None:
        """Hold the tenant's budget for Retry-After, or a growing backoff when there is none."""
        self.cost.throttles += 1
        self.metrics.throttle_retries.labels(self.source, code).inc()
        if throttles > MAX_THROTTLE_RETRIES:
            raise ManagementError(f"still throttled ({code}) after {MAX_THROTTLE_RETRIES} retries")
        delay = parse_retry_after(response.headers.get("Retry-After"), now)
        if delay is None:
            delay = backoff(throttles - 1, rng=self.rng)
        self.budget.block_until(now + delay)
        log.info("throttled", extra=fields(source=self.source, code=code, wait=round(delay, 2)))

    def _send(self, method: str, url: str) -> requests.Response | None:
        """One request after a budget slot; None when the network failed."""
        waited = self.budget.acquire()
        self.cost.requests += 1
        self.cost.waited += waited
        self.metrics.budget_wait.labels(self.source).inc(waited)
        headers = {"Authorization": f"Bearer {self.tokens.token()}", "Accept": "application/json"}
        try:
            if method == "POST":
                response = self.http.post(url, headers=headers)
            else:
                response = self.http.get(url, headers=headers)
        except requests.RequestException as exc:
            self.metrics.api_requests.labels(self.source, "network").inc()
            log.warning(
                "management host unreachable",
                extra=fields(source=self.source, error=type(exc).__name__),
            )
            return None
        self.metrics.api_requests.labels(self.source, str(response.status_code)).inc()
        return response

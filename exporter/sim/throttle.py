"""Graph's request budgets in the simulated tenant: a sliding window per throttling family,
the holds its Retry-Afters impose, and the count of requests that did not honour them.

Graph throttles by family: the identity and access reports (sign-ins, directory audits,
provisioning) share one budget per app and tenant, Identity Protection has its own (1
request per second per tenant, all apps together) and answers its 429s without
Retry-After, and security alerts have theirs (150 requests per minute).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

# A request for another source arriving this soon after a Retry-After was issued may have
# been on the wire before the client could read it: counted apart, as `early_in_flight`, so
# that `early_requests` counts requests sent while the client knew it had to wait. A retry
# for the throttled source itself always counts: it can only follow the 429.
IN_FLIGHT_GRACE = 0.25
IDENTITY_REPORTS = "identityReports"
IDENTITY_PROTECTION = "identityProtection"
SECURITY_ALERTS = "securityAlerts"
# The families whose 429s say when to come back; Identity Protection's do not.
RETRY_AFTER_FAMILIES = frozenset({IDENTITY_REPORTS, SECURITY_ALERTS})


class Throttle:
    """The budget of `requests` per sliding `per_seconds`, and the Retry-After holds.

    It only counts and decides; writing the 429 (and its Retry-After) is Graph's job.
    Guarded by the tenant's shared lock, like every other piece of its state.
    """

    def __init__(
        self, lock: threading.RLock, clock: Callable[[], float], budget: tuple[int, float]
    ) -> None:
        self._lock = lock
        self._clock = clock
        self._budget = budget
        self._recent: deque[float] = deque()
        self._throttled = 0
        self._not_before = 0.0
        self._held_since = 0.0
        self._held_for = ""
        self._early_requests = 0
        self._early_in_flight = 0

    @property
    def throttled(self) -> int:
        """Requests refused for want of budget."""
        return self._throttled

    @property
    def early_requests(self) -> int:
        """Requests sent while a Retry-After the client had read was still running."""
        return self._early_requests

    @property
    def early_in_flight(self) -> int:
        """Early requests for another source that may have crossed the Retry-After on the wire."""
        return self._early_in_flight

    def set_budget(self, requests: int, per_seconds: float) -> None:
        """Change the window from the next request on; slots already taken stay taken."""
        with self._lock:
            self._budget = (requests, per_seconds)

    def note_arrival(self, path: str) -> None:
        """Count a request for `path` that arrives while a Retry-After still holds."""
        with self._lock:
            now = self._clock()
            if now < self._not_before:
                other_source = path != self._held_for
                if other_source and now < self._held_since + IN_FLIGHT_GRACE:
                    self._early_in_flight += 1
                else:
                    self._early_requests += 1

    def take(self) -> float | None:
        """Take a slot of the sliding-window budget, or say how long until one frees."""
        with self._lock:
            now = self._clock()
            requests, per = self._budget
            while self._recent and self._recent[0] <= now - per:
                self._recent.popleft()
            if len(self._recent) >= requests:
                self._throttled += 1
                return self._recent[len(self._recent) - requests] + per - now
            self._recent.append(now)
            return None

    def hold(self, wait: float, path: str) -> None:
        """Remember a Retry-After given to a request for `path`: a request before it expires
        is counted as early."""
        with self._lock:
            now = self._clock()
            if now >= self._not_before:
                self._held_since, self._held_for = now, path
            self._not_before = max(self._not_before, now + wait)

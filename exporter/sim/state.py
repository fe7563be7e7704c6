"""The shared state of the simulated tenant, owned in one place and guarded by one lock.

`TenantState.create` builds every piece around a single re-entrant lock and hands the
pieces to the parts that need them (identity, Graph, control, routing): no part creates
state of its own, and no module keeps any.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from exporter.sim.audit_logs import AuditLogs
from exporter.sim.faults import Faults
from exporter.sim.messages import Request
from exporter.sim.scenario import Scenario
from exporter.sim.throttle import (
    IDENTITY_PROTECTION,
    IDENTITY_REPORTS,
    SECURITY_ALERTS,
    Throttle,
)


class TokenStore:
    """The bearer tokens issued and when each expires, and the client assertions seen."""

    def __init__(self, lock: threading.RLock, clock: Callable[[], float], lifetime: int) -> None:
        self._lock = lock
        self._clock = clock
        self._lifetime = lifetime
        self._expiry: dict[str, float] = {}
        self._issued = 0
        self._assertions: set[str] = set()

    @property
    def issued(self) -> int:
        """Tokens issued since the start, revoked ones included."""
        return self._issued

    @property
    def distinct_assertions(self) -> int:
        """How many different client assertions were presented (each should be fresh)."""
        return len(self._assertions)

    def issue(self) -> tuple[str, int]:
        """A new token and its lifetime in seconds."""
        token = secrets.token_urlsafe(48)
        with self._lock:
            lifetime = self._lifetime
            self._expiry[token] = self._clock() + lifetime
            self._issued += 1
        return token, lifetime

    def problem(self, token: str) -> Literal["unknown", "expired"] | None:
        """Why a presented token is not valid now, or None when it is."""
        with self._lock:
            expires = self._expiry.get(token)
            if expires is None:
                return "unknown"
            if expires <= self._clock():
                return "expired"
        return None

    def note_assertion(self, assertion: str) -> None:
        """Remember a client assertion by its digest, to count the distinct ones."""
        with self._lock:
            self._assertions.add(hashlib.sha256(assertion.encode()).hexdigest())

    def set_lifetime(self, seconds: int) -> None:
        """The lifetime of tokens issued from now on; issued ones keep theirs."""
        with self._lock:
            self._lifetime = seconds

    def revoke_all(self) -> None:
        """Make every issued token invalid."""
        with self._lock:
            self._expiry.clear()

    def unrevoked(self) -> list[str]:
        """Every token not revoked (expired ones included), sorted."""
        with self._lock:
            return sorted(self._expiry)


class Traffic:
    """Requests counted per endpoint and status, and per host and path when they carried an
    Authorization header (so tests can tell which hosts saw credentials)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._requests: dict[str, Counter[str]] = {}
        self._authorized: Counter[str] = Counter()

    def record(self, request: Request, path: str, endpoint: str, status: int) -> None:
        """Count one answered request."""
        with self._lock:
            self._requests.setdefault(endpoint, Counter())[str(status)] += 1
            if "authorization" in request.headers:
                self._authorized[f"{request.headers.get('host', '')}{path}"] += 1

    def requests(self) -> dict[str, dict[str, int]]:
        """Counts per endpoint, then per status code (as a string)."""
        with self._lock:
            return {name: dict(codes) for name, codes in self._requests.items()}

    def authorized(self) -> dict[str, int]:
        """Counts of requests with credentials per `host` + path."""
        with self._lock:
            return dict(self._authorized)


@dataclass(frozen=True)
class TenantState:
    """Every piece of the tenant's mutable state, and the one lock they all take.

    `throttles` holds a budget per throttling family; `throttle` is the identity reports'
    one, which the `budget` knob sets and the stats' throttle counts describe.
    """

    lock: threading.RLock
    clock: Callable[[], float]
    faults: Faults
    tokens: TokenStore
    throttle: Throttle
    logs: AuditLogs
    traffic: Traffic
    throttles: Mapping[str, Throttle]

    @classmethod
    def create(cls, scenario: Scenario, clock: Callable[[], float]) -> TenantState:
        """Fresh state for a scenario: its events start at `clock()`, nothing issued yet."""
        lock = threading.RLock()
        logs = AuditLogs(scenario, lock, clock)
        reports = Throttle(lock, clock, (scenario.budget_requests, scenario.budget_seconds))
        return cls(
            lock=lock,
            clock=clock,
            faults=Faults(),
            tokens=TokenStore(lock, clock, scenario.token_lifetime),
            throttle=reports,
            logs=logs,
            traffic=Traffic(lock),
            throttles={
                IDENTITY_REPORTS: reports,
                IDENTITY_PROTECTION: Throttle(lock, clock, scenario.identity_protection_budget),
                SECURITY_ALERTS: Throttle(lock, clock, scenario.security_alerts_budget),
            },
        )

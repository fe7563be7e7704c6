"""The API request budget: Graph allows a few requests per sliding window per app and tenant.

Every request of every source of a tenant draws from one :class:`RequestBudget`, so the
collector spends the limit deliberately instead of learning it from 429s (throttled calls
count against the limit too). The arithmetic is pure (:func:`next_slot`); the class adds a
lock and the injected clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from exporter.clock import Clock
from exporter.errors import Interrupted


def next_slot(
    sent: Sequence[float], now: float, requests: int, per: float, blocked_until: float
) -> float:
    """When the next request may go: no more than ``requests`` in any ``per`` seconds.

    ``sent`` holds the send times of the most recent requests, oldest first.
    """
    earliest = max(now, blocked_until)
    if len(sent) >= requests:
        earliest = max(earliest, sent[-requests] + per)
    return earliest


class RequestBudget:
    """A sliding-window limiter shared by every source of one tenant; thread-safe."""

    def __init__(self, requests: int, per: float, clock: Clock) -> None:
        self.requests = requests
        self.per = per
        self.clock = clock
        self._sent: deque[float] = deque(maxlen=requests)
        self._blocked_until = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot and take it; the seconds waited. ``Interrupted`` on shutdown.

        The wait is measured on the clock, not summed from what was asked of it: a sleep
        may end early, and the loop then asks again for the rest.
        """
        began = self.clock.now()
        while True:
            with self._lock:
                now = self.clock.now()
                slot = next_slot(self._sent, now, self.requests, self.per, self._blocked_until)
                if slot <= now:
                    self._sent.append(now)
                    return now - began
            if self.clock.sleep(slot - now):
                raise Interrupted

    def block_until(self, until: float) -> None:
        """After a 429 with Retry-After: nobody sends before ``until``."""
        with self._lock:
            self._blocked_until = max(self._blocked_until, until)


class BudgetShares:
    """How the sources of one tenant divide its budget when they plan their tiers.

    Each source publishes what its plan spends; a source planning anew may use what the
    others leave, and never less than an equal share. So a busy sign-in log gets most of
    the budget next to a quiet audit log, and two busy sources split it evenly.
    """

    def __init__(self, rate: float, sources: int) -> None:
        self.rate = rate
        self.sources = max(1, sources)
        self._planned: dict[str, float] = {}
        self._lock = threading.Lock()

    def available(self, source: str) -> float:
        """Requests per second ``source`` may plan for."""
        with self._lock:
            others = sum(spend for name, spend in self._planned.items() if name != source)
        return max(self.rate / self.sources, self.rate - others)

    def publish(self, source: str, spend: float) -> None:
        """Record what ``source``'s current plan spends."""
        with self._lock:
            self._planned[source] = spend

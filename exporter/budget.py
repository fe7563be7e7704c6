"""The API request budget: Graph allows a few requests per sliding window per app and tenant.

Every request of every source of a tenant draws from one :class:`RequestBudget`, so the
collector spends the limit deliberately instead of learning it from 429s (throttled calls
count against the limit too). The arithmetic is pure (:func:`next_slot`); the class adds a
lock and the injected clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

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


def rescan_shares(
    rate: float, required: Mapping[str, float], weights: Mapping[str, float]
) -> dict[str, float]:
    """What each source may spend on rescans: the budget no source's required tiers need.

    The required tiers (fresh, sweeps, deepest) are what delivers every event and what the
    guarantee rests on; rescans only make late events come sooner. So they are planned
    from ``rate`` less every source's required spend, never from another source's need,
    and that rest is divided in proportion to ``weights`` (see
    :func:`exporter.rescan.rescan_weight`), equally when no source weighs anything.
    """
    left = max(0.0, rate - sum(required.values()))
    names = set(required) | set(weights)
    weight = {name: max(0.0, weights.get(name, 0.0)) for name in names}
    total = sum(weight.values())
    if total <= 0.0:
        return {name: left / len(names) for name in names}
    return {name: left * (weight[name] / total) for name in names}


class BudgetShares:
    """How the sources of one tenant divide its budget when they plan their tiers.

    Each source publishes what its required tiers spend, what its early sweep spends and
    how much its rescans are worth. A source planning its tiers may use what the others'
    required tiers leave, and never less than an equal share: a busy sign-in log gets most
    of the budget next to a quiet audit log, and two busy sources split it evenly. Early
    sweeps (:func:`exporter.tiers.plan_tiers`) come next, from what no required tier needs,
    and give way when a required tier needs it; a source that pays for its own by slowing
    its fresh tier publishes it as required (:class:`exporter.planner.SourcePlanner`).
    Rescans come last (:func:`rescan_shares`): one stream's rescans never take the budget
    another stream's deepest sweep needs.
    """

    def __init__(self, rate: float, sources: int) -> None:
        self.rate = rate
        self.sources = max(1, sources)
        self._required: dict[str, float] = {}
        self._early: dict[str, float] = {}
        self._weights: dict[str, float] = {}
        self._lock = threading.Lock()

    def available(self, source: str) -> float:
        """Requests per second ``source``'s required tiers may plan for."""
        with self._lock:
            others = sum(spend for name, spend in self._required.items() if name != source)
        return max(self.rate / self.sources, self.rate - others)

    def room(self, source: str) -> float:
        """Requests per second ``source``'s tiers, required and early sweep together, may
        spend: what the other sources' required tiers and early sweeps leave. Its own plan
        decides how much of it the early sweep gets (:func:`exporter.tiers.plan_tiers`);
        counting its own published spend here would let each plan undo the last."""
        with self._lock:
            taken = sum(spend for name, spend in self._required.items() if name != source)
            taken += sum(spend for name, spend in self._early.items() if name != source)
        return max(0.0, self.rate - taken)

    def spare(self, source: str) -> float:
        """Requests per second ``source`` may spend on rescans."""
        with self._lock:
            rate = self.rate - sum(self._early.values())
            shares = rescan_shares(rate, self._required, self._weights)
        return shares.get(source, 0.0)

    def publish(self, source: str, required: float, weight: float, early: float = 0.0) -> None:
        """Record what ``source``'s required tiers and early sweep spend and what its
        rescans weigh."""
        with self._lock:
            self._required[source] = required
            self._early[source] = early
            self._weights[source] = weight

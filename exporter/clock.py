"""Time, injected: the real clock for production, a manual one for tests and simulations.

Every decision that depends on time takes a :class:`Clock`, so tests drive time instead of
waiting for it (the lesson of a rate-limit wait that never ran because no test drove time).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a sleep that a shutdown can cut short."""

    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; return True if a shutdown interrupted the wait."""
        ...


class RealClock:
    """The system clock; ``sleep`` returns early when ``stop`` is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> bool:
        return self.stop.wait(max(0.0, seconds))


class ManualClock:
    """A clock that only moves when told to: ``sleep`` advances it instantly."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> bool:
        self._now += max(0.0, seconds)
        return False

    def advance(self, seconds: float) -> None:
        """Move time forward without anyone sleeping."""
        self._now += seconds

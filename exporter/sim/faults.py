"""Fault knobs of the simulated tenant: counters that make the next N requests misbehave.

Knobs are set at runtime (from a test or `POST /_sim/faults`), so validation is strict:
an unknown name or a wrong type is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

# How a Retry-After is written: "seconds" with millisecond fractions, "integer" whole
# seconds rounded up (what Graph sends), "http-date" an IMF-fixdate rounded up to the second.
RETRY_AFTER_STYLES = ("seconds", "integer", "http-date")
# What a 403 says while `graph_403` is set: the app lacks a permission, or the tenant a licence.
REFUSALS = ("permission", "licence")


@dataclass
class FaultState:
    """Current fault settings; counters are consumed one request at a time."""

    token_failures: int = 0
    token_error: int = 7000215
    graph_503: int = 0
    graph_503_retry_after: float | None = None
    graph_504: int = 0
    graph_500: int = 0
    malformed_pages: int = 0
    foreign_next_link: int = 0
    foreign_next_link_url: str = "https://graph.example.invalid"
    retry_after_style: str = "seconds"
    graph_403: str | None = None  # not a counter: every Graph request is refused while set


_TYPES: dict[str, tuple[type, ...]] = {
    "token_failures": (int,),
    "token_error": (int,),
    "graph_503": (int,),
    "graph_503_retry_after": (int, float, type(None)),
    "graph_504": (int,),
    "graph_500": (int,),
    "malformed_pages": (int,),
    "foreign_next_link": (int,),
    "foreign_next_link_url": (str,),
    "retry_after_style": (str,),
    "graph_403": (str, type(None)),
}


class Faults:
    """Thread-safe holder of a `FaultState`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = FaultState()

    def update(self, **knobs: Any) -> None:
        """Validate all knobs first, then apply them together (all or nothing)."""
        for name, value in knobs.items():
            if name not in _TYPES:
                raise ValueError(f"unknown fault knob '{name}'")
            if isinstance(value, bool) or not isinstance(value, _TYPES[name]):
                raise ValueError(f"fault knob '{name}' has the wrong type: {value!r}")
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"fault knob '{name}' must not be negative")
        style = knobs.get("retry_after_style", "seconds")
        if style not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after_style must be one of {RETRY_AFTER_STYLES}")
        if knobs.get("graph_403") not in (None, *REFUSALS):
            raise ValueError(f"graph_403 must be one of {REFUSALS} or null")
        with self._lock:
            self._state = dataclasses.replace(self._state, **knobs)

    def take(self, counter: str) -> bool:
        """Consume one unit of a counter knob; True when this request must misbehave."""
        with self._lock:
            remaining = getattr(self._state, counter)
            if remaining <= 0:
                return False
            setattr(self._state, counter, remaining - 1)
            return True

    def snapshot(self) -> FaultState:
        """A copy of the current settings, safe to read without the lock."""
        with self._lock:
            return dataclasses.replace(self._state)

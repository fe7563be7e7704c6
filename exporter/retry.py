"""How long to wait before retrying a request: Retry-After when the server says, backoff when not."""

from __future__ import annotations

import random
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER = 300.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (fractional too) or an HTTP-date.

    None when the header is absent or unreadable; never negative; capped at five minutes so a
    hostile or broken header cannot park the collector for days.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def backoff(
    attempt: int, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Capped exponential backoff with jitter: about base * 2**attempt, between half and all of it."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return ceiling * (0.5 + 0.5 * (rng or random).random())

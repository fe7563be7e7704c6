"""Optional WARNING lines in the SIEM's own event stream, as the seed script wrote them.

Metrics and alert rules are the primary signal; with ``inband_warnings: true`` a SIEM team
without Prometheus also sees, among the events, when the collector is going blind: drift
near the window, an empty window, a token failure, sustained throttling. A warning goes out
when its condition starts and again every ``repeat`` seconds while it lasts, with MSGID
``warning``; it is never counted as an event and never retried (a sink that is down has
bigger news). Every warning is also logged, enabled or not.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from exporter.clock import Clock
from exporter.logs import fields
from exporter.pipeline import Outlet
from exporter.yamlconf import format_duration

log = logging.getLogger(__name__)

DRIFT_SHARE = 0.75
THROTTLED_PER_POLL = 3
REPEAT_SECONDS = 900.0


def _human(seconds: float) -> str:
    return format_duration(float(max(1, round(seconds))))


class InbandWarnings:
    """Decides when a condition deserves a WARNING line and sends it to every sink."""

    def __init__(
        self, enabled: bool, delivery: Outlet, clock: Clock, repeat: float = REPEAT_SECONDS
    ) -> None:
        self.enabled = enabled
        self.delivery = delivery
        self.clock = clock
        self.repeat = repeat
        self._last_sent: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()  # every source thread raises and clears conditions

    def check_poll(
        self, source: str, window: float, listed: int, throttled: int, drift: float | None
    ) -> None:
        """The conditions a complete fresh query of ``window`` seconds can reveal.

        ``listed`` is what its listings held (events, or an API's own entries such as
        content blobs), not what was new: a quiet poll that sees only events delivered
        before is not going blind. ``drift`` is on the axis the window runs on.
        """
        self.raise_if(
            source,
            "drift",
            drift is not None and drift > DRIFT_SHARE * window,
            f"API drift of {_human(drift or 0)} is near the query window of "
            f"{_human(window)} for source {source}; late events may be missed",
        )
        self.raise_if(
            source,
            "empty",
            listed == 0,
            f"the query for source {source} returned no events for the last {_human(window)}",
        )
        self.raise_if(
            source,
            "throttling",
            throttled >= THROTTLED_PER_POLL,
            f"the API throttled source {source} {throttled} times in one poll",
        )

    def raise_if(self, source: str, condition: str, active: bool, text: str) -> None:
        """Send ``WARNING: text`` when ``condition`` starts or is still on after ``repeat``."""
        key = (source, condition)
        now = self.clock.now()
        with self._lock:
            if not active:
                self._last_sent.pop(key, None)
                return
            last = self._last_sent.get(key)
            if last is not None and now - last < self.repeat:
                return
            self._last_sent[key] = now
        log.warning(text, extra=fields(source=source, condition=condition))
        if not self.enabled:
            return
        self.delivery.send_warning(f"WARNING: {text}", datetime.fromtimestamp(now, UTC))

"""What each tier's plans priced, integrated over a run, to set beside what it sent.

A plan is published as ``tier_planned_requests_per_second`` gauges, which a scrape sees
only at one instant; the benchmark needs the integral, so that a tier that spends more than
its plan priced (a window sized on a rate that runs low takes a page more on every query)
shows up in the table instead of only as a ceiling that comes out lower than expected.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable

from prometheus_client import CollectorRegistry

from exporter.metrics import ExporterMetrics
from exporter.tiers import Tier


class PlanSpendMetrics(ExporterMetrics):
    """The exporter's metrics, also keeping, per source and tier, the requests its plans priced.

    Each published plan holds from its publication until the source's next one (or the end
    of the run, :meth:`planned`); its tiers' requests per second times that time is what it
    priced. Sources publish from their own threads, hence the lock.
    """

    def __init__(self, registry: CollectorRegistry, now: Callable[[], float]) -> None:
        super().__init__(registry)
        self._now = now
        self._lock = threading.Lock()
        self._current: dict[str, dict[str, float]] = {}
        self._since: dict[str, float] = {}
        self._planned: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )

    def publish_plan(
        self,
        source: str,
        tiers: Iterable[Tier],
        gone: Collection[str],
        spare: float,
        floor_met: bool,
    ) -> None:
        tiers = tuple(tiers)
        with self._lock:
            self._settle(source, self._now())
            self._current[source] = {t.name: t.requests_per_second for t in tiers}
        super().publish_plan(source, tiers, gone, spare, floor_met)

    def planned(self, source: str) -> tuple[tuple[str, float], ...]:
        """The requests ``source``'s plans priced per tier, from its first plan until now."""
        with self._lock:
            self._settle(source, self._now())
            return tuple(sorted(self._planned[source].items()))

    def _settle(self, source: str, now: float) -> None:
        since = self._since.get(source, now)
        for name, per_second in self._current.get(source, {}).items():
            self._planned[source][name] += per_second * (now - since)
        self._since[source] = now

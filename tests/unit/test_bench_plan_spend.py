"""The benchmark sets what each tier's plans priced beside what it sent.

A tier that sends more than its plan priced is how a plan sized on a low rate showed
itself before (a page more on every query); these check the integral the table prints.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bench.plan_spend import PlanSpendMetrics
from exporter.tiers import Tier


class _Clock:
    def __init__(self) -> None:
        self.time = 0.0

    def now(self) -> float:
        return self.time


def _tier(name: str, per_second: float) -> Tier:
    return Tier(name, 60.0, 120.0, 180.0, per_second)


def test_each_plan_is_priced_from_its_publication_until_the_next() -> None:
    clock = _Clock()
    metrics = PlanSpendMetrics(CollectorRegistry(), clock.now)
    metrics.publish_plan("a", [_tier("fresh", 0.5), _tier("sweep-0", 0.1)], (), 0.0, True)
    clock.time = 100.0
    metrics.publish_plan("a", [_tier("fresh", 0.2)], ("sweep-0",), 0.0, True)
    clock.time = 150.0
    assert dict(metrics.planned("a")) == {"fresh": 50.0 + 10.0, "sweep-0": 10.0}


def test_sources_are_priced_apart_and_the_gauges_still_show_the_plan() -> None:
    clock = _Clock()
    registry = CollectorRegistry()
    metrics = PlanSpendMetrics(registry, clock.now)
    clock.time = 10.0
    metrics.publish_plan("a", [_tier("fresh", 0.3)], (), 0.0, True)
    clock.time = 20.0
    metrics.publish_plan("b", [_tier("fresh", 0.4)], (), 0.0, True)
    clock.time = 30.0
    assert dict(metrics.planned("a")) == {"fresh": 0.3 * 20.0}
    assert dict(metrics.planned("b")) == {"fresh": 0.4 * 10.0}
    labels = {"source": "b", "tier": "fresh"}
    assert (
        registry.get_sample_value("siem_exporter_tier_planned_requests_per_second", labels) == 0.4
    )

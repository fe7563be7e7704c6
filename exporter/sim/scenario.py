"""Named settings for the simulated tenant: event rates, lateness, throttling budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.sim.records import UpdateModel
from exporter.sim.timeline import LatenessBand, LatenessModel


@dataclass(frozen=True)
class Scenario:
    """Everything that makes one simulated tenant behave differently from another.

    Rates are events per second per source; `signins_rate` is the interactive user
    sign-ins (all v1.0 serves), the other sign-in streams are served by beta only and are
    silent unless given a rate (Microsoft puts non-interactive and service principal
    sign-ins at 5-10 times the interactive volume); `history` seconds of events exist before the
    tenant starts; lateness is a mixture of log-uniform bands capped at `max_lateness`;
    the Graph budget is `budget_requests` per sliding `budget_seconds` across every collection.
    `tenant_scale_signins` serves sign-ins of about 11.5 KB, as a real tenant's are
    (:func:`exporter.sim.objects.tenant_scale_signin`), instead of bare 2 KB ones.
    Provisioning events, risk detections and alerts are silent unless given a rate; the
    last two change after creation as `record_updates` says. Identity Protection and
    security alerts have budgets of their own, Graph's published limits by default.
    `keep_encoded_events` keeps each served event's JSON (about 12 kB a tenant-scale
    sign-in) so it is rendered once: for the pipeline benchmark, which serves the same
    frozen events run after run and must not measure a busy simulator beside the collector.
    """

    name: str
    signins_rate: float
    directory_audits_rate: float
    history: float
    lateness: tuple[LatenessBand, ...]
    max_lateness: float
    budget_requests: int = 5
    budget_seconds: float = 10.0
    token_lifetime: int = 3599
    seed: int = 1
    tenant_scale_signins: bool = False
    noninteractive_rate: float = 0.0
    service_principal_rate: float = 0.0
    managed_identity_rate: float = 0.0
    provisioning_rate: float = 0.0
    risk_detections_rate: float = 0.0
    alerts_rate: float = 0.0
    record_updates: UpdateModel = field(
        default_factory=lambda: UpdateModel(max_updates=3, min_gap=60.0, mean_gap=600.0)
    )
    identity_protection_budget: tuple[int, float] = (1, 1.0)
    security_alerts_budget: tuple[int, float] = (150, 60.0)
    keep_encoded_events: bool = False

    def lateness_model(self) -> LatenessModel:
        """The lateness distribution the timelines draw from."""
        return LatenessModel(bands=self.lateness, max_lateness=self.max_lateness)


SCENARIOS: dict[str, Scenario] = {
    "demo": Scenario(
        name="demo",
        signins_rate=3.0,
        directory_audits_rate=0.5,
        history=20 * 60,
        lateness=(
            LatenessBand(0.80, 1.0, 20.0),
            LatenessBand(0.15, 20.0, 180.0),
            LatenessBand(0.05, 180.0, 720.0),
        ),
        max_lateness=12 * 60,
        budget_requests=5,
        budget_seconds=10.0,
        noninteractive_rate=15.0,
        service_principal_rate=3.0,
        managed_identity_rate=1.5,
    ),
    "test": Scenario(
        name="test",
        signins_rate=5.0,
        directory_audits_rate=1.0,
        history=5 * 60,
        lateness=(
            LatenessBand(0.80, 0.5, 10.0),
            LatenessBand(0.17, 10.0, 45.0),
            LatenessBand(0.03, 45.0, 90.0),
        ),
        max_lateness=90.0,
        budget_requests=50,
        budget_seconds=10.0,
        noninteractive_rate=25.0,
        service_principal_rate=5.0,
        managed_identity_rate=2.5,
        provisioning_rate=2.0,
        risk_detections_rate=1.0,
        alerts_rate=0.5,
        # Changes seconds apart, so that records change while a test runs.
        record_updates=UpdateModel(max_updates=3, min_gap=10.0, mean_gap=8.0),
    ),
    # Every log stream a SOC collects: the demo's sign-ins and audits plus provisioning,
    # and risk detections and alerts that change a few times within minutes of creation.
    "entra": Scenario(
        name="entra",
        signins_rate=3.0,
        directory_audits_rate=0.5,
        history=20 * 60,
        lateness=(
            LatenessBand(0.80, 1.0, 20.0),
            LatenessBand(0.15, 20.0, 180.0),
            LatenessBand(0.05, 180.0, 720.0),
        ),
        max_lateness=12 * 60,
        noninteractive_rate=15.0,
        service_principal_rate=3.0,
        managed_identity_rate=1.5,
        provisioning_rate=1.0,
        risk_detections_rate=0.2,
        alerts_rate=0.1,
        record_updates=UpdateModel(max_updates=3, min_gap=20.0, mean_gap=60.0),
    ),
    # A fifth of the events turn up 40 min to 2.5 h late, as in an incident on Microsoft's
    # side: with three hours of history, some of them become visible during any run.
    "late": Scenario(
        name="late",
        signins_rate=1.0,
        directory_audits_rate=0.2,
        history=3 * 60 * 60,
        lateness=(
            LatenessBand(0.75, 0.5, 10.0),
            LatenessBand(0.25, 40 * 60.0, 150 * 60.0),
        ),
        max_lateness=150 * 60.0,
        budget_requests=50,
        budget_seconds=10.0,
    ),
    # Microsoft's once-published figures: 95 % within 2 min, 99 % within 5 min; the tail
    # beyond that is capped at 30 min.
    "realistic": Scenario(
        name="realistic",
        signins_rate=3.0,
        directory_audits_rate=0.5,
        history=60 * 60,
        lateness=(
            LatenessBand(0.95, 5.0, 120.0),
            LatenessBand(0.04, 120.0, 300.0),
            LatenessBand(0.01, 300.0, 1800.0),
        ),
        max_lateness=30 * 60,
        budget_requests=5,
        budget_seconds=10.0,
    ),
}

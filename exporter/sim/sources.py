"""The audit-log streams of the simulated tenant, the Graph collections that serve them, and
the names they go by.

A source is one stream of events (one timeline); a collection is one Graph path. They are
apart because the beta sign-ins path serves several streams at once: Graph keeps one log
per sign-in event type and `signInEventTypes/any(...)` selects which of them a query reads.
A changing source holds records that change after creation (risk detections, alerts): its
collection filters on the update time and serves each record's current version.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.sim import beta_signins, changing_records, objects, provisioning
from exporter.sim.query import EXCLUSIVE, INCLUSIVE, MAX_TOP
from exporter.sim.records import UpdateModel, Version
from exporter.sim.scenario import Scenario
from exporter.sim.throttle import IDENTITY_PROTECTION, IDENTITY_REPORTS, SECURITY_ALERTS

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One stream of audit records: its timeline's rate, its ids and its objects."""

    name: str
    make_object: Callable[[int, int, int], JsonObject]
    make_id: Callable[[int, int], str]
    rate: Callable[[Scenario], float]


@dataclass(frozen=True)
class ChangingSource:
    """A source of records that change: each version rendered from its record and number."""

    name: str
    make_version: Callable[[int, Version], JsonObject]
    make_id: Callable[[int, int], str]
    rate: Callable[[Scenario], float]
    updates: Callable[[Scenario], UpdateModel]


@dataclass(frozen=True)
class Collection:
    """One Graph path, the sources behind it and the field its `$filter` runs on.

    `name` names the endpoint in the stats and owns its skiptokens. `event_types` maps each
    `signInEventTypes` value the path accepts to its source, in the order pages merge
    streams that share a tick; a path without them rejects the clause. `default` is what a
    query without the clause reads. `operators` are the "from" and "to" operators its
    `$filter` accepts, `max_top` its largest page, `budget` the throttling family it draws
    from, and `namespace` the segment before `resource` in `@odata.context`.
    """

    name: str
    path: str
    resource: str
    time_field: str
    default: tuple[str, ...]
    event_types: Mapping[str, str] = field(default_factory=dict)
    operators: tuple[str, str] = INCLUSIVE
    max_top: int = MAX_TOP
    budget: str = IDENTITY_REPORTS
    namespace: str = "auditLogs"

    @property
    def version(self) -> str:
        """`v1.0` or `beta`, as in the path and in `@odata.context`."""
        return self.path.split("/")[1]


SOURCES: dict[str, Source | ChangingSource] = {
    source.name: source
    for source in (
        Source("signIns", objects.signin, objects.signin_id, lambda s: s.signins_rate),
        Source(
            "directoryAudits",
            objects.directory_audit,
            objects.directory_audit_id,
            lambda s: s.directory_audits_rate,
        ),
        Source(
            beta_signins.NON_INTERACTIVE,
            beta_signins.non_interactive,
            functools.partial(beta_signins.event_id, beta_signins.NON_INTERACTIVE),
            lambda s: s.noninteractive_rate,
        ),
        Source(
            beta_signins.SERVICE_PRINCIPAL,
            beta_signins.service_principal,
            functools.partial(beta_signins.event_id, beta_signins.SERVICE_PRINCIPAL),
            lambda s: s.service_principal_rate,
        ),
        Source(
            beta_signins.MANAGED_IDENTITY,
            beta_signins.managed_identity,
            functools.partial(beta_signins.event_id, beta_signins.MANAGED_IDENTITY),
            lambda s: s.managed_identity_rate,
        ),
        Source(
            "provisioning",
            provisioning.provisioning,
            provisioning.provisioning_id,
            lambda s: s.provisioning_rate,
        ),
        ChangingSource(
            "riskDetections",
            changing_records.risk_detection,
            changing_records.risk_detection_id,
            lambda s: s.risk_detections_rate,
            lambda s: s.record_updates,
        ),
        ChangingSource(
            "alerts",
            changing_records.alert,
            changing_records.alert_id,
            lambda s: s.alerts_rate,
            lambda s: s.record_updates,
        ),
    )
}
COLLECTIONS = (
    Collection("signIns", "/v1.0/auditLogs/signIns", "signIns", "createdDateTime", ("signIns",)),
    Collection(
        "directoryAudits",
        "/v1.0/auditLogs/directoryAudits",
        "directoryAudits",
        "activityDateTime",
        ("directoryAudits",),
    ),
    Collection(
        "beta/signIns",
        "/beta/auditLogs/signIns",
        "signIns",
        "createdDateTime",
        ("signIns",),
        {
            "interactiveUser": "signIns",
            beta_signins.NON_INTERACTIVE: beta_signins.NON_INTERACTIVE,
            beta_signins.SERVICE_PRINCIPAL: beta_signins.SERVICE_PRINCIPAL,
            beta_signins.MANAGED_IDENTITY: beta_signins.MANAGED_IDENTITY,
        },
    ),
    Collection(
        "provisioning",
        "/v1.0/auditLogs/provisioning",
        "provisioning",
        "activityDateTime",
        ("provisioning",),
        operators=EXCLUSIVE,
    ),
    Collection(
        "riskDetections",
        "/v1.0/identityProtection/riskDetections",
        "riskDetections",
        "lastUpdatedDateTime",
        ("riskDetections",),
        max_top=500,
        budget=IDENTITY_PROTECTION,
        namespace="identityProtection",
    ),
    Collection(
        "alerts",
        "/v1.0/security/alerts_v2",
        "alerts_v2",
        "lastUpdateDateTime",
        ("alerts",),
        budget=SECURITY_ALERTS,
        namespace="security",
    ),
)
COLLECTION_BY_PATH = {c.path: c for c in COLLECTIONS}
_SOURCE_ALIASES = {name.lower(): name for name in SOURCES} | {"interactiveuser": "signIns"}


def source_name(source: str) -> str:
    """The canonical name of a source given in any case (the control API takes `signins`,
    and `interactiveUser` for the interactive sign-ins that v1.0 calls `signIns`)."""
    try:
        return _SOURCE_ALIASES[source.lower()]
    except KeyError:
        names = ", ".join(SOURCES)
        raise ValueError(f"unknown source '{source}' (one of {names}; any case)") from None

"""The audit-log streams of the simulated tenant, the Graph collections that serve them, and
the names they go by.

A source is one stream of events (one timeline); a collection is one Graph path. They are
apart because the beta sign-ins path serves several streams at once: Graph keeps one log
per sign-in event type and `signInEventTypes/any(...)` selects which of them a query reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.sim import beta_signins, objects
from exporter.sim.scenario import Scenario

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One stream of audit records: its timeline's rate, its ids and its objects."""

    name: str
    make_object: Callable[[int, int, int], JsonObject]
    make_id: Callable[[int, int], str]
    rate: Callable[[Scenario], float]


@dataclass(frozen=True)
class Collection:
    """One Graph path, the sources behind it and the field its `$filter` runs on.

    `name` names the endpoint in the stats and owns its skiptokens. `event_types` maps each
    `signInEventTypes` value the path accepts to its source, in the order pages merge
    streams that share a tick; a path without them rejects the clause. `default` is what a
    query without the clause reads.
    """

    name: str
    path: str
    resource: str
    time_field: str
    default: tuple[str, ...]
    event_types: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """`v1.0` or `beta`, as in the path and in `@odata.context`."""
        return self.path.split("/")[1]


SOURCES: dict[str, Source] = {
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

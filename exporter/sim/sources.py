"""The Graph audit-log collections the simulated tenant serves, and the names they go by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.sim import objects
from exporter.sim.scenario import Scenario

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """One Graph audit-log collection the tenant serves."""

    name: str
    path: str
    time_field: str
    make_object: Callable[[int, int, int], JsonObject]
    make_id: Callable[[int, int], str]
    rate: Callable[[Scenario], float]


SOURCES: dict[str, Source] = {
    "signIns": Source(
        "signIns",
        "/v1.0/auditLogs/signIns",
        "createdDateTime",
        objects.signin,
        objects.signin_id,
        lambda s: s.signins_rate,
    ),
    "directoryAudits": Source(
        "directoryAudits",
        "/v1.0/auditLogs/directoryAudits",
        "activityDateTime",
        objects.directory_audit,
        objects.directory_audit_id,
        lambda s: s.directory_audits_rate,
    ),
}
SOURCE_BY_PATH = {s.path: s for s in SOURCES.values()}
_SOURCE_ALIASES = {name.lower(): name for name in SOURCES}


def source_name(source: str) -> str:
    """The canonical name of a source given in any case (the control API takes `signins`)."""
    try:
        return _SOURCE_ALIASES[source.lower()]
    except KeyError:
        raise ValueError(f"unknown source '{source}' (signins or directoryAudits)") from None

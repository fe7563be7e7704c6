"""What a Graph source asks for: its keys, the endpoints Graph has, and the first page's URL.

Pure code. Each endpoint Graph serves audit records from differs in a few facts (the
time field its window runs on, the largest ``$top``, the comparison operators its
``$filter`` accepts, and which request budget it draws from); they live in one table,
:data:`ENDPOINTS`, instead of in conditionals. A source's keys (``endpoint``,
``time_field``, ``sign_in_event_types``, ``filter``, ``update_field``) are declared here
once, as :data:`GRAPH_SOURCE`, and :func:`first_page_url` turns them and a stretch of
time into the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from exporter.config import SourceConfig
from exporter.errors import ConfigError
from exporter.yamlconf import Key, Keys, Kind, Section, Values, join_key, text_key

IDENTITY_REPORTS = "identity_reports"
IDENTITY_PROTECTION = "identity_protection"
SECURITY_ALERTS = "security_alerts"
# Graph's limits per family, from its throttling-limits page: requests per seconds.
BUDGET_FAMILIES = {
    IDENTITY_REPORTS: (5, 10.0),  # sign-ins, directory audits, provisioning: per app and tenant
    IDENTITY_PROTECTION: (1, 1.0),  # risk detections, risky users: per tenant, for all apps
    SECURITY_ALERTS: (150, 60.0),  # alerts_v2: per app and tenant
}
SIGN_IN_EVENT_TYPES = (
    "interactiveUser",
    "nonInteractiveUser",
    "servicePrincipal",
    "managedIdentity",
)
SIGN_INS = "/auditLogs/signIns"
BETA_SIGN_INS = "/beta/auditLogs/signIns"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The facts of one kind of Graph audit record, matched by the end of the path."""

    suffix: str
    time_field: str
    max_page_size: int
    budget_family: str
    permission: str  # the application permission a 403 says is missing
    licence: str  # what a tenant without the licence is told it needs
    after: str = "ge"  # the operator for "from", inclusive unless the endpoint lacks ge
    before: str = "le"  # the operator for "to"


_REPORTS_LICENCE = "Microsoft Entra ID P1 or P2"
_AUDIT_LOG = "AuditLog.Read.All"
ENDPOINTS = (
    Endpoint(
        SIGN_INS,
        "createdDateTime",
        1000,
        IDENTITY_REPORTS,
        f"{_AUDIT_LOG} and Directory.Read.All",
        _REPORTS_LICENCE,
    ),
    Endpoint(
        "/auditLogs/directoryAudits",
        "activityDateTime",
        1000,
        IDENTITY_REPORTS,
        _AUDIT_LOG,
        _REPORTS_LICENCE,
    ),
    Endpoint(
        "/auditLogs/provisioning",
        "activityDateTime",
        1000,
        IDENTITY_REPORTS,
        _AUDIT_LOG,
        _REPORTS_LICENCE,
        "gt",
        "lt",
    ),
    Endpoint(
        "/identityProtection/riskDetections",
        "detectedDateTime",
        500,
        IDENTITY_PROTECTION,
        "IdentityRiskEvent.Read.All",
        "Microsoft Entra ID P2",
    ),
    Endpoint(
        "/identityProtection/riskyUsers",
        "riskLastUpdatedDateTime",
        500,
        IDENTITY_PROTECTION,
        "IdentityRiskyUser.Read.All",
        "Microsoft Entra ID P2",
    ),
    Endpoint(
        "/security/alerts_v2",
        "createdDateTime",
        1000,
        SECURITY_ALERTS,
        "SecurityAlert.Read.All",
        "a Microsoft Defender licence",
    ),
)
# Any other path: the reports' facts, which is what Graph's audit logs have in common.
OTHER_ENDPOINT = Endpoint(
    "", "", 1000, IDENTITY_REPORTS, "the permission its endpoint documents", _REPORTS_LICENCE
)

# A path only: a '?' or '#' would swallow the $filter the collector appends.
_ENDPOINT = re.compile(r"^/[^?#\s\x00-\x1f\x7f]*\Z")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_/]{0,99}\Z")


def endpoint_facts(path: str) -> Endpoint:
    """The table's entry for ``path``: the longest suffix it ends with, else the default."""
    known = [e for e in ENDPOINTS if path.endswith(e.suffix)]
    return max(known, key=lambda e: len(e.suffix), default=OTHER_ENDPOINT)


@dataclass(frozen=True, slots=True)
class GraphSettings:
    """A Graph source's own keys, and what the endpoint table says about its endpoint."""

    endpoint: str
    time_field: str
    sign_in_event_types: tuple[str, ...] = ()
    filter: str | None = None
    update_field: str | None = None

    @property
    def facts(self) -> Endpoint:
        return endpoint_facts(self.endpoint)

    @property
    def window_field(self) -> str:
        """The field the query's time window runs on: the update time when records change."""
        return self.update_field or self.time_field

    @property
    def budget_family(self) -> str:
        return self.facts.budget_family

    @property
    def max_page_size(self) -> int:
        return self.facts.max_page_size


def check_filter(clause: str) -> str | None:
    """Why ``clause`` cannot be ANDed into ``$filter``, or None when it can.

    OData string literals are single-quoted with ``''`` for a quote; outside them the
    parentheses must balance. ``&`` and ``#`` would end the query parameter or the URL.
    """
    if not clause.strip():
        return "must not be empty"
    if re.search(r"[&#\x00-\x1f\x7f]", clause):
        return "must not contain '&', '#' or control characters"
    depth = 0
    quoted = False
    for char in clause:
        if char == "'":
            quoted = not quoted  # '' inside a literal toggles twice: still quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                return "has a ')' without its '('"
    if quoted:
        return "has an unclosed quote"
    if depth:
        return "has a '(' without its ')'"
    return None


def _event_types(section: Section, values: Values) -> tuple[str, ...]:
    raw = section.get("sign_in_event_types", list, [])
    key = section.key("sign_in_event_types")
    if section.has("sign_in_event_types") and not raw:
        raise ConfigError(key, "must name at least one type, or be left out")
    for item in raw:
        if item not in SIGN_IN_EVENT_TYPES:
            raise ConfigError(
                key, f"expected any of {', '.join(SIGN_IN_EVENT_TYPES)}, got {item!r}"
            )
    if len(set(raw)) != len(raw):
        raise ConfigError(key, "names a type twice")
    return tuple(raw)


def _default_endpoint(values: Values) -> str | None:
    return BETA_SIGN_INS if values["sign_in_event_types"] else None


def _default_time_field(values: Values) -> str | None:
    return endpoint_facts(values["endpoint"]).time_field or None


def _filter(section: Section, values: Values) -> str | None:
    clause = section.text("filter")
    if clause is not None and (problem := check_filter(clause)) is not None:
        raise ConfigError(section.key("filter"), problem)
    return clause


def _settings(values: Values, path: str) -> GraphSettings:
    settings = GraphSettings(**values)
    if settings.sign_in_event_types and not settings.endpoint.endswith(SIGN_INS):
        raise ConfigError(
            join_key(path, "sign_in_event_types"), f"only applies to {SIGN_INS} endpoints"
        )
    return settings


_FIELD_RULE = (_FIELD, "expected a property name such as createdDateTime")
GRAPH_SOURCE = Kind(
    Keys(
        Key("sign_in_event_types", _event_types, show=lambda types: list(types) or None),
        text_key(
            "endpoint",
            _default_endpoint,
            required=True,
            pattern=(_ENDPOINT, "expected a path such as /v1.0/auditLogs/signIns"),
        ),
        text_key("time_field", _default_time_field, required=True, pattern=_FIELD_RULE),
        Key("filter", _filter),
        text_key("update_field", pattern=_FIELD_RULE),
    ),
    _settings,
    budgets=BUDGET_FAMILIES,
)


def graph_settings(source: SourceConfig) -> GraphSettings:
    """The Graph keys of ``source``; a TypeError names a source of another API wired here."""
    if not isinstance(source.settings, GraphSettings):
        raise TypeError(f"source {source.name!r} is not a Graph source (api: {source.api})")
    return source.settings


def format_filter_time(epoch: float, round_up: bool = False) -> str:
    """An unquoted ISO-8601 literal for ``$filter``, whole seconds, rounded to widen the range."""
    seconds = -int(-epoch // 1) if round_up else int(epoch // 1)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_condition(settings: GraphSettings, start: float, end: float | None) -> str:
    """The window as the endpoint's operators say it, never narrower than ``[start, end]``.

    With ``gt``/``lt`` (provisioning) each bound moves out by a second: the literals are
    whole seconds, so ``gt start-1s`` holds every event ``ge start`` would.
    """
    field, facts = settings.window_field, settings.facts
    widen = 1.0 if facts.after == "gt" else 0.0
    condition = f"{field} {facts.after} {format_filter_time(start - widen)}"
    if end is not None:
        widen = 1.0 if facts.before == "lt" else 0.0
        condition += f" and {field} {facts.before} {format_filter_time(end + widen, True)}"
    return condition


def first_page_url(graph_url: str, source: SourceConfig, start: float, end: float | None) -> str:
    """``{graph_url}{endpoint}?$filter=<window>[ and <types>][ and (<filter>)]&$top=<size>``."""
    settings = graph_settings(source)
    condition = time_condition(settings, start, end)
    if settings.sign_in_event_types:
        types = " or ".join(f"t eq '{t}'" for t in settings.sign_in_event_types)
        condition += f" and signInEventTypes/any(t: {types})"
    if settings.filter is not None:
        condition += f" and ({settings.filter})"
    query = urlencode({"$filter": condition, "$top": str(source.page_size)})
    return f"{graph_url}{settings.endpoint}?{query}"

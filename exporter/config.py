"""The config file: YAML in, typed frozen objects out, or a ConfigError naming the key.

The file is parsed once at start-up: :mod:`exporter.yamlconf` reads it (``${VAR}``,
durations, unknown keys refused), and this module knows the keys every deployment has
(tenant, credential, state, budget, metrics) and those every source has (its name and
schedule). A source's API and a sink's type are chosen by its ``api`` or ``type`` key from
the :class:`Components` the caller passes (:mod:`exporter.components`); each declares its
own keys beside its adapter, and this module never names them. Secrets are wrapped in
:class:`Secret` so that no ``repr``, log line or exception can print them by accident.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from exporter.credentials import Credential, read_credential, show_credential
from exporter.errors import ConfigError
from exporter.yamlconf import (
    Keys,
    Kind,
    Section,
    duration_key,
    format_duration,
    int_key,
    join_key,
    parse_listen,
    read_document,
    readable_file,
    text_key,
)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_MANAGEMENT_URL = "https://manage.office.com"  # api: management_activity sources
DEFAULT_METRICS_LISTEN = "0.0.0.0:9795"
DEFAULT_STATE_PATH = "/var/lib/siem-exporter/state.db"
DEFAULT_DEAD_LETTER_MAX_MB = 100
MAX_PAGE_SIZE = 1000
MAX_RESERVE = 0.9  # at least a tenth of the budget must be left to plan with
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_SOURCE_API = "graph"
DEFAULT_SINK_TYPE = "syslog"
# The request budget the top-level `budget` section sets: Graph's identity and access reports
# (sign-ins, audits, provisioning). Other families take their API's published limits.
CONFIGURED_BUDGET_FAMILY = "identity_reports"

_SOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")


class SourceSettings(Protocol):
    """What every source API's settings tell the rest: which budget, how big a page may be."""

    @property
    def budget_family(self) -> str: ...

    @property
    def max_page_size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One log stream polled on its own schedule; ``settings`` are its API's own keys."""

    name: str
    api: str  # which adapter reads it: a key of Components.sources
    settings: Any  # a SourceSettings: what the API's Kind made of its keys (GraphSettings)
    page_size: int
    poll_interval: float
    lookback: float
    max_lookback: float
    rescan_floor: float = 4 * 3600.0  # every band of age is rescanned at least this often


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """One receiver of the SIEM; ``settings`` are its type's own keys."""

    name: str
    type: str  # which adapter writes to it: a key of Components.sinks
    settings: Any  # what that type's Kind made of its keys (SyslogSettings for "syslog")


@dataclass(frozen=True, slots=True)
class Components:
    """The source APIs and sink types a config may name, each with its declared keys."""

    sources: Mapping[str, Kind[Any]]
    sinks: Mapping[str, Kind[Any]]


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Graph's request limit for audit logs: ``requests`` per ``per`` seconds per tenant."""

    requests: int
    per: float
    reserve: float = 0.1  # the share left unplanned: other clients of the app, and retries

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.per

    @property
    def usable(self) -> float:
        """Requests per second the plans may spend: the rate less the reserve."""
        return self.rate * (1.0 - self.reserve)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole effective configuration."""

    tenant_id: str
    client_id: str
    credential: Credential
    authority_host: str
    graph_url: str
    ca_bundle: str | None
    sources: tuple[SourceConfig, ...]
    state_path: str
    dead_letter_max_mb: int  # the dead-letter file's cap; past it, refused events by id only
    sinks: tuple[SinkConfig, ...]
    metrics_listen: tuple[str, int]
    budget: BudgetConfig  # the identity reports' budget, as the `budget` section sets it
    inband_warnings: bool
    log_level: str
    budgets: Mapping[str, BudgetConfig]  # every family a source draws from, by name
    management_url: str = DEFAULT_MANAGEMENT_URL  # the Office 365 Management Activity API
    # A scheduled `verify --metrics-file` result that /metrics serves beside the collector's
    metrics_verify_file: str | None = None

    def budget_of(self, source: SourceConfig) -> BudgetConfig:
        """The request budget ``source`` draws from, shared with its family's other sources."""
        return self.budgets[source.settings.budget_family]


_TOP_KEYS = (
    "tenant_id",
    "client_id",
    "client_secret",
    "client_secret_file",
    "certificate",
    "workload_identity",
    "authority_host",
    "graph_url",
    "management_url",
    "ca_bundle",
    "sources",
    "state",
    "sinks",
    "metrics",
    "budget",
    "inband_warnings",
    "log_level",
)
# The keys every source has, whatever its API: its name, then how it is scheduled.
SOURCE_NAME_KEYS = Keys(
    text_key(
        "name",
        required=True,
        pattern=(_SOURCE_NAME, "expected a letter then up to 31 letters, digits, '_', '.' or '-'"),
    )
)
SCHEDULE_KEYS = Keys(
    int_key("page_size", low=1, high=MAX_PAGE_SIZE),  # default: the endpoint's largest
    duration_key("poll_interval", "60s"),
    duration_key("lookback", "1h"),
    duration_key("max_lookback", "7d"),
    duration_key("rescan_floor", "4h"),
)


def load_config(
    path: str | Path, components: Components, environ: Mapping[str, str] | None = None
) -> Config:
    """Read, substitute and validate the YAML file at ``path``."""
    environ = os.environ if environ is None else environ
    return parse_config(read_document(path, environ), environ, components)


def parse_config(
    document: Mapping[str, Any], environ: Mapping[str, str], components: Components
) -> Config:
    """Validate an already substituted document; see CONTRACT.md for the keys."""
    top = Section(document, "", _TOP_KEYS)
    workload_identity = top.get("workload_identity", bool, False)
    authority_default = DEFAULT_AUTHORITY_HOST
    if workload_identity and environ.get("AZURE_AUTHORITY_HOST"):
        authority_default = environ["AZURE_AUTHORITY_HOST"]
    authority_host = _https_url(top, "authority_host", authority_default)
    graph_url = _https_url(top, "graph_url", DEFAULT_GRAPH_URL)
    tenant_id = top.text(
        "tenant_id", environ.get("AZURE_TENANT_ID") if workload_identity else None, required=True
    )
    client_id = top.text(
        "client_id", environ.get("AZURE_CLIENT_ID") if workload_identity else None, required=True
    )
    credential = read_credential(top, workload_identity, environ)
    ca_bundle = readable_file(top, "ca_bundle")

    sources_raw = top.get("sources", list, required=True)
    if not sources_raw:
        raise ConfigError("sources", "needs at least one source")
    sources = tuple(
        _source(raw, f"sources[{i}]", components.sources) for i, raw in enumerate(sources_raw)
    )
    _unique(sources, "sources")

    sinks_raw = top.get("sinks", list, required=True)
    if not sinks_raw:
        raise ConfigError("sinks", "needs at least one sink")
    sinks = tuple(_sink(raw, f"sinks[{i}]", components.sinks) for i, raw in enumerate(sinks_raw))
    _unique(sinks, "sinks")

    state = Section(top.get("state", dict, {}), "state", ("path", "dead_letter_max_mb"))
    dead_letter_max_mb = state.get("dead_letter_max_mb", int, DEFAULT_DEAD_LETTER_MAX_MB)
    if dead_letter_max_mb < 1:
        raise ConfigError("state.dead_letter_max_mb", "must be at least 1")
    metrics = Section(top.get("metrics", dict, {}), "metrics", ("listen", "verify_file"))
    budget = Section(top.get("budget", dict, {}), "budget", ("requests", "per", "reserve"))
    requests_per = budget.get("requests", int, 5)
    if requests_per < 1:
        raise ConfigError("budget.requests", "must be at least 1")
    reserve = budget.share("reserve", "10%")
    if not 0.0 <= reserve <= MAX_RESERVE:
        raise ConfigError("budget.reserve", f"must be between 0% and {MAX_RESERVE:.0%}")
    configured = BudgetConfig(requests_per, budget.positive_duration("per", "10s"), reserve)
    return Config(
        tenant_id=tenant_id.strip(),
        client_id=client_id.strip(),
        credential=credential,
        authority_host=authority_host,
        graph_url=graph_url,
        ca_bundle=ca_bundle,
        sources=sources,
        state_path=state.text("path", DEFAULT_STATE_PATH, required=True),
        dead_letter_max_mb=dead_letter_max_mb,
        sinks=sinks,
        metrics_listen=metrics.convert("listen", DEFAULT_METRICS_LISTEN, parse_listen),
        budget=configured,
        inband_warnings=top.get("inband_warnings", bool, False),
        log_level=top.choice("log_level", LOG_LEVELS, "info"),
        budgets=_budgets(sources, configured, components),
        management_url=_https_url(top, "management_url", DEFAULT_MANAGEMENT_URL),
        metrics_verify_file=metrics.text("verify_file") or None,
    )


def _budgets(
    sources: Sequence[SourceConfig], configured: BudgetConfig, components: Components
) -> dict[str, BudgetConfig]:
    """Each family's budget: the configured one for the reports, the published limit else."""
    budgets: dict[str, BudgetConfig] = {}
    for source in sources:
        family = source.settings.budget_family
        if family == CONFIGURED_BUDGET_FAMILY:
            budgets[family] = configured
        elif family not in budgets:
            requests, per = components.sources[source.api].budgets[family]
            budgets[family] = BudgetConfig(requests, per, configured.reserve)
    return budgets


def _https_url(section: Section, name: str, default: str) -> str:
    value = section.text(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(section.key(name), f"expected an https:// URL, got {value!r}")
    if parts.path or parts.query:
        raise ConfigError(section.key(name), "expected scheme and host only, no path")
    return value


def _kind(
    raw: Any, path: str, selector: str, kinds: Mapping[str, Kind[Any]], default: str
) -> tuple[str, Kind[Any]]:
    """The adapter a source's ``api`` or a sink's ``type`` names, before its keys are read."""
    if not isinstance(raw, dict):
        raise ConfigError(path, "expected a mapping")
    name = raw.get(selector)
    name = default if name is None else name
    if not isinstance(name, str) or name not in kinds:
        raise ConfigError(
            join_key(path, selector), f"expected one of {', '.join(kinds)}, got {name!r}"
        )
    return name, kinds[name]


def _selector_key(selector: str, name: str) -> Keys:
    """The ``api``/``type`` key itself, declared so that the section accepts and prints it."""
    return Keys(text_key(selector, name))


def _source(raw: Any, path: str, apis: Mapping[str, Kind[Any]]) -> SourceConfig:
    api, kind = _kind(raw, path, "api", apis, DEFAULT_SOURCE_API)
    keys = SOURCE_NAME_KEYS + _selector_key("api", api) + kind.keys + SCHEDULE_KEYS
    values = keys.read(raw, path)
    if values["lookback"] <= values["poll_interval"]:
        raise ConfigError(
            join_key(path, "lookback"),
            "must be longer than poll_interval, or successive queries cannot overlap",
        )
    if values["max_lookback"] < values["lookback"]:
        raise ConfigError(join_key(path, "max_lookback"), "must not be shorter than lookback")
    if values["rescan_floor"] < values["poll_interval"]:
        raise ConfigError(join_key(path, "rescan_floor"), "must not be shorter than poll_interval")
    settings = kind.make({k: values[k] for k in kind.keys.names}, path)
    largest = settings.max_page_size
    if values["page_size"] is None:
        values["page_size"] = largest
    elif values["page_size"] > largest:
        raise ConfigError(
            join_key(path, "page_size"), f"must be between 1 and {largest} for this endpoint"
        )
    return SourceConfig(
        name=values["name"],
        api=api,
        settings=settings,
        **{k: values[k] for k in SCHEDULE_KEYS.names},
    )


def _sink(raw: Any, path: str, types: Mapping[str, Kind[Any]]) -> SinkConfig:
    sink_type, kind = _kind(raw, path, "type", types, DEFAULT_SINK_TYPE)
    name_key = Keys(text_key("name", sink_type, required=True))
    values = (_selector_key("type", sink_type) + name_key + kind.keys).read(raw, path)
    settings = kind.make({k: values[k] for k in kind.keys.names}, path)
    return SinkConfig(name=values["name"], type=sink_type, settings=settings)


def _unique(items: Sequence[SourceConfig | SinkConfig], path: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise ConfigError(f"{path}[{index}].name", f"{item.name!r} is used twice")
        seen.add(item.name)


def effective_config(config: Config, components: Components) -> dict[str, Any]:
    """The config as check-config prints it: every default filled in, every secret masked."""
    return {
        "tenant_id": config.tenant_id,
        "client_id": config.client_id,
        **show_credential(config.credential),
        "authority_host": config.authority_host,
        "graph_url": config.graph_url,
        "management_url": config.management_url,
        "ca_bundle": config.ca_bundle,
        "sources": [
            {
                **SOURCE_NAME_KEYS.show(s),
                "api": s.api,
                **components.sources[s.api].keys.show(s.settings),
                **SCHEDULE_KEYS.show(s),
            }
            for s in config.sources
        ],
        "state": {"path": config.state_path, "dead_letter_max_mb": config.dead_letter_max_mb},
        "sinks": [
            {"type": s.type, "name": s.name, **components.sinks[s.type].keys.show(s.settings)}
            for s in config.sinks
        ],
        "metrics": {
            "listen": f"{config.metrics_listen[0]}:{config.metrics_listen[1]}",
            **({"verify_file": config.metrics_verify_file} if config.metrics_verify_file else {}),
        },
        "budget": {
            "requests": config.budget.requests,
            "per": format_duration(config.budget.per),
            "reserve": f"{config.budget.reserve:.0%}",
        },
        "inband_warnings": config.inband_warnings,
        "log_level": config.log_level,
    }

"""The config file: YAML in, typed frozen objects out, or a ConfigError naming the key.

The file is parsed once at start-up: :mod:`exporter.yamlconf` reads it (``${VAR}``,
durations, unknown keys refused), and this module knows our keys, their defaults and the
checks between them. Secrets are wrapped in :class:`Secret` so that no ``repr``, log line
or exception can print them by accident.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.errors import ConfigError
from exporter.syslog import FACILITIES
from exporter.yamlconf import (
    Section,
    format_duration,
    parse_listen,
    read_document,
)

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_METRICS_LISTEN = "0.0.0.0:9795"
DEFAULT_STATE_PATH = "/var/lib/siem-exporter/state.db"
MAX_PAGE_SIZE = 1000
MAX_RESERVE = 0.9  # at least a tenth of the budget must be left to plan with
# Ten years: longer than any audit-log retention, short enough that now minus it is a date.
LOG_LEVELS = ("debug", "info", "warning", "error")
KNOWN_TIME_FIELDS = {
    "/auditLogs/signIns": "createdDateTime",
    "/auditLogs/directoryAudits": "activityDateTime",
    "/auditLogs/provisioning": "activityDateTime",
}

# A path only: a '?' or '#' would swallow the $filter the collector appends.
_ENDPOINT = re.compile(r"^/[^?#\s\x00-\x1f\x7f]*\Z")
_SOURCE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it (the token request)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class ClientSecretCredential:
    """An app registration's client secret, inline (from ``${VAR}``) or read from a file."""

    secret: Secret
    source: str  # "client_secret" or "client_secret_file: PATH", for check-config


@dataclass(frozen=True, slots=True)
class CertificateCredential:
    """A certificate credential: the PEM private key and the certificate's SHA-1 thumbprint."""

    private_key: Secret
    private_key_file: str
    thumbprint: str
    public_certificate: str | None


@dataclass(frozen=True, slots=True)
class WorkloadIdentityCredential:
    """Azure Workload Identity: a federated token re-read from this file for every request."""

    token_file: str


Credential = ClientSecretCredential | CertificateCredential | WorkloadIdentityCredential


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One Graph audit-log endpoint polled on its own schedule."""

    name: str
    endpoint: str
    time_field: str
    page_size: int
    poll_interval: float
    lookback: float
    max_lookback: float
    rescan_floor: float = 4 * 3600.0  # every band of age is rescanned at least this often


@dataclass(frozen=True, slots=True)
class SyslogSinkConfig:
    """A syslog receiver of the SIEM."""

    name: str
    host: str
    port: int
    protocol: str
    framing: str
    ca_file: str | None
    facility: int
    hostname: str


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
    sinks: tuple[SyslogSinkConfig, ...]
    metrics_listen: tuple[str, int]
    budget: BudgetConfig
    inband_warnings: bool
    log_level: str


_TOP_KEYS = (
    "tenant_id",
    "client_id",
    "client_secret",
    "client_secret_file",
    "certificate",
    "workload_identity",
    "authority_host",
    "graph_url",
    "ca_bundle",
    "sources",
    "state",
    "sinks",
    "metrics",
    "budget",
    "inband_warnings",
    "log_level",
)
_SOURCE_KEYS = (
    "name",
    "endpoint",
    "time_field",
    "page_size",
    "poll_interval",
    "lookback",
    "max_lookback",
    "rescan_floor",
)
_SINK_KEYS = (
    "type",
    "name",
    "host",
    "port",
    "protocol",
    "framing",
    "ca_file",
    "facility",
    "hostname",
)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute and validate the YAML file at ``path``."""
    environ = os.environ if environ is None else environ
    return parse_config(read_document(path, environ), environ)


def parse_config(document: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
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
    credential = _credential(top, workload_identity, environ)
    ca_bundle = _readable_file(top, "ca_bundle")

    sources_raw = top.get("sources", list, required=True)
    if not sources_raw:
        raise ConfigError("sources", "needs at least one source")
    sources = tuple(_source(raw, f"sources[{i}]") for i, raw in enumerate(sources_raw))
    _unique(sources, "sources")

    sinks_raw = top.get("sinks", list, required=True)
    if not sinks_raw:
        raise ConfigError("sinks", "needs at least one sink")
    sinks = tuple(_sink(raw, f"sinks[{i}]") for i, raw in enumerate(sinks_raw))
    _unique(sinks, "sinks")

    state = Section(top.get("state", dict, {}), "state", ("path",))
    metrics = Section(top.get("metrics", dict, {}), "metrics", ("listen",))
    budget = Section(top.get("budget", dict, {}), "budget", ("requests", "per", "reserve"))
    requests_per = budget.get("requests", int, 5)
    if requests_per < 1:
        raise ConfigError("budget.requests", "must be at least 1")
    reserve = budget.share("reserve", "10%")
    if not 0.0 <= reserve <= MAX_RESERVE:
        raise ConfigError("budget.reserve", f"must be between 0% and {MAX_RESERVE:.0%}")
    return Config(
        tenant_id=tenant_id.strip(),
        client_id=client_id.strip(),
        credential=credential,
        authority_host=authority_host,
        graph_url=graph_url,
        ca_bundle=ca_bundle,
        sources=sources,
        state_path=state.text("path", DEFAULT_STATE_PATH, required=True),
        sinks=sinks,
        metrics_listen=metrics.convert("listen", DEFAULT_METRICS_LISTEN, parse_listen),
        budget=BudgetConfig(requests_per, _positive(budget, "per", "10s"), reserve),
        inband_warnings=top.get("inband_warnings", bool, False),
        log_level=top.choice("log_level", LOG_LEVELS, "info"),
    )


def _https_url(section: Section, name: str, default: str) -> str:
    value = section.text(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(section.key(name), f"expected an https:// URL, got {value!r}")
    if parts.path or parts.query:
        raise ConfigError(section.key(name), "expected scheme and host only, no path")
    return value


def _credential(top: Section, workload_identity: bool, environ: Mapping[str, str]) -> Credential:
    """Exactly one of the four ways to authenticate."""
    given = [k for k in ("client_secret", "client_secret_file", "certificate") if top.has(k)]
    if workload_identity:
        given.append("workload_identity")
    if not given:
        raise ConfigError(
            "client_secret",
            "is required (or client_secret_file, certificate, or workload_identity: true)",
        )
    if len(given) > 1:
        raise ConfigError(given[1], f"conflicts with {given[0]}: give only one credential")
    kind = given[0]
    if kind == "client_secret":
        return ClientSecretCredential(Secret(top.text(kind, required=True)), kind)
    if kind == "client_secret_file":
        path, content = _text_file(top, kind, required=True)
        secret = content.strip()
        if not secret:
            raise ConfigError(top.key(kind), f"{path} is empty")
        return ClientSecretCredential(Secret(secret), f"{kind}: {path}")
    if kind == "certificate":
        cert = Section(
            top.get(kind, dict),
            "certificate",
            ("private_key_file", "thumbprint", "public_certificate_file"),
        )
        key_file, private_key = _text_file(cert, "private_key_file", required=True)
        thumbprint = cert.text("thumbprint", required=True).replace(":", "").strip()
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", thumbprint):
            raise ConfigError(
                cert.key("thumbprint"), "expected the 40 hex digits of a SHA-1 thumbprint"
            )
        public_file = cert.text("public_certificate_file")
        return CertificateCredential(
            private_key=Secret(private_key),
            private_key_file=key_file,
            thumbprint=thumbprint.upper(),
            public_certificate=_text_file(cert, "public_certificate_file", required=True)[1]
            if public_file is not None
            else None,
        )
    token_file = environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if not token_file:
        raise ConfigError("workload_identity", "AZURE_FEDERATED_TOKEN_FILE is not set")
    return WorkloadIdentityCredential(token_file)


def _readable_file(section: Section, name: str, *, required: bool = False) -> str | None:
    path = section.text(name, required=required)
    if path is None:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(section.key(name), f"cannot read {path!r}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(section.key(name), "a path cannot contain a NUL character") from None
    return path


def _text_file(section: Section, name: str, *, required: bool) -> tuple[str, str]:
    """The path and UTF-8 content of a file a key names; never echoes the content (a secret)."""
    path = _readable_file(section, name, required=required)
    if path is None:
        raise ConfigError(section.key(name), "is required")
    try:
        return path, Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(section.key(name), f"cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(section.key(name), f"{path!r} is not UTF-8 text") from None


def _positive(section: Section, name: str, default: str) -> float:
    seconds = section.duration(name, default)
    if seconds <= 0:
        raise ConfigError(section.key(name), "must be longer than zero")
    return seconds


def _source(raw: Any, path: str) -> SourceConfig:
    section = Section(raw, path, _SOURCE_KEYS)
    name = section.text("name", required=True)
    if not _SOURCE_NAME.match(name):
        raise ConfigError(
            section.key("name"), "expected a letter then up to 31 letters, digits, '_', '.' or '-'"
        )
    endpoint = section.text("endpoint", required=True)
    if not _ENDPOINT.match(endpoint):
        raise ConfigError(
            section.key("endpoint"), "expected a path such as /v1.0/auditLogs/signIns"
        )
    known_field = next(
        (f for suffix, f in KNOWN_TIME_FIELDS.items() if endpoint.endswith(suffix)), None
    )
    time_field = section.text("time_field", known_field, required=True)
    page_size = section.get("page_size", int, MAX_PAGE_SIZE)
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ConfigError(section.key("page_size"), f"must be between 1 and {MAX_PAGE_SIZE}")
    poll_interval = _positive(section, "poll_interval", "60s")
    lookback = _positive(section, "lookback", "1h")
    max_lookback = _positive(section, "max_lookback", "7d")
    if lookback <= poll_interval:
        raise ConfigError(
            section.key("lookback"),
            "must be longer than poll_interval, or successive queries cannot overlap",
        )
    if max_lookback < lookback:
        raise ConfigError(section.key("max_lookback"), "must not be shorter than lookback")
    rescan_floor = _positive(section, "rescan_floor", "4h")
    if rescan_floor < poll_interval:
        raise ConfigError(section.key("rescan_floor"), "must not be shorter than poll_interval")
    return SourceConfig(
        name, endpoint, time_field, page_size, poll_interval, lookback, max_lookback, rescan_floor
    )


def _sink(raw: Any, path: str) -> SyslogSinkConfig:
    section = Section(raw, path, _SINK_KEYS)
    section.choice("type", ("syslog",), "syslog")
    port = section.get("port", int, required=True)
    if not 1 <= port <= 65535:
        raise ConfigError(section.key("port"), "must be between 1 and 65535")
    protocol = section.choice("protocol", ("tcp", "tls", "udp"), "tcp")
    ca_file = _readable_file(section, "ca_file")
    if ca_file and protocol != "tls":
        raise ConfigError(section.key("ca_file"), "only applies to protocol: tls")
    facility = section.choice("facility", tuple(FACILITIES), "local0")
    return SyslogSinkConfig(
        name=section.text("name", "syslog", required=True),
        host=section.text("host", required=True),
        port=port,
        protocol=protocol,
        framing=section.choice("framing", ("octet-counting", "lf"), "octet-counting"),
        ca_file=ca_file,
        facility=FACILITIES[facility],
        hostname=section.text("hostname", socket.gethostname(), required=True),
    )


def _unique(items: Sequence[SourceConfig | SyslogSinkConfig], path: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise ConfigError(f"{path}[{index}].name", f"{item.name!r} is used twice")
        seen.add(item.name)


def effective_config(config: Config) -> dict[str, Any]:
    """The config as check-config prints it: every default filled in, every secret masked."""
    credential: dict[str, Any]
    match config.credential:
        case ClientSecretCredential(source=source):
            key, _, path = source.partition(": ")
            credential = {key: path or "***"}
        case CertificateCredential(private_key_file=key_file, thumbprint=thumbprint):
            credential = {"certificate": {"private_key_file": key_file, "thumbprint": thumbprint}}
        case WorkloadIdentityCredential(token_file=token_file):
            credential = {"workload_identity": True, "federated_token_file": token_file}
    facility_names = {code: name for name, code in FACILITIES.items()}
    return {
        "tenant_id": config.tenant_id,
        "client_id": config.client_id,
        **credential,
        "authority_host": config.authority_host,
        "graph_url": config.graph_url,
        "ca_bundle": config.ca_bundle,
        "sources": [
            {
                "name": s.name,
                "endpoint": s.endpoint,
                "time_field": s.time_field,
                "page_size": s.page_size,
                "poll_interval": format_duration(s.poll_interval),
                "lookback": format_duration(s.lookback),
                "max_lookback": format_duration(s.max_lookback),
                "rescan_floor": format_duration(s.rescan_floor),
            }
            for s in config.sources
        ],
        "state": {"path": config.state_path},
        "sinks": [
            {
                "type": "syslog",
                "name": s.name,
                "host": s.host,
                "port": s.port,
                "protocol": s.protocol,
                "framing": s.framing,
                "ca_file": s.ca_file,
                "facility": facility_names[s.facility],
                "hostname": s.hostname,
            }
            for s in config.sinks
        ],
        "metrics": {"listen": f"{config.metrics_listen[0]}:{config.metrics_listen[1]}"},
        "budget": {
            "requests": config.budget.requests,
            "per": format_duration(config.budget.per),
            "reserve": f"{config.budget.reserve:.0%}",
        },
        "inband_warnings": config.inband_warnings,
        "log_level": config.log_level,
    }

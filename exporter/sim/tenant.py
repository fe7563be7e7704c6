"""The simulated Microsoft tenant: an MSAL-compatible token endpoint and the Graph audit-log
API over HTTPS on loopback, with drift, paging, throttling and injectable faults.

Requests are turned into a `Request`, answered by `SimulatedTenant.handle` (plain code, one
lock), and written back by a thin `http.server` handler; the server runs in a background
thread. Control endpoints under `/_sim/` expose ground truth, faults, freeze and stats.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import functools
import hashlib
import json
import math
import random
import secrets
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from exporter.sim import objects
from exporter.sim.ca import TestPki, write_test_pki
from exporter.sim.faults import Faults
from exporter.sim.query import (
    Cursor,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_filter,
    parse_top,
)
from exporter.sim.scenario import Scenario
from exporter.sim.timeline import Event, Timeline

JsonObject = dict[str, Any]

_GRAPH_CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
_JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# A request for another source arriving this soon after a Retry-After was issued may have
# been on the wire before the client could read it: counted apart, as `early_in_flight`, so
# that `early_requests` counts requests sent while the client knew it had to wait. A retry
# for the throttled source itself always counts: it can only follow the 429.
IN_FLIGHT_GRACE = 0.25

# AADSTS code -> (HTTP status, OAuth error, description template)
AADSTS_ERRORS: dict[int, tuple[int, str, str]] = {
    7000215: (
        401,
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
    ),
    7000222: (
        401,
        "invalid_client",
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure "
        "portal to create new keys for your app.",
    ),
    7000218: (
        401,
        "invalid_client",
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    ),
    700016: (
        400,
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'.",
    ),
    90002: (400, "invalid_request", "Tenant '{tenant}' not found."),
    70011: (
        400,
        "invalid_scope",
        "The provided value for the input parameter 'scope' is not valid. "
        "The scope {scope} is not valid.",
    ),
    70003: (400, "unsupported_grant_type", "The app requested an unsupported grant type."),
    90033: (503, "temporarily_unavailable", "A transient error has occurred. Please try again."),
}


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
_SOURCE_BY_PATH = {s.path: s for s in SOURCES.values()}
_SOURCE_ALIASES = {name.lower(): name for name in SOURCES}


@dataclass(frozen=True)
class Request:
    """An HTTP request as the tenant sees it; header names are lower-case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """An HTTP response the server writes back verbatim."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )


def _jwt_is_well_formed(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        for part in parts[:2]:
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError):
        return False
    return True


class SimulatedTenant:
    """A fake Entra ID tenant plus Graph, for the demo and end-to-end tests.

    Construct, `start()`, point MSAL at `{base_url}/{tenant_id}` and Graph at `base_url`
    (trusting `ca_file`), then `stop()`. Everything is driven by the injected `clock`.
    """

    def __init__(
        self, scenario: Scenario, workdir: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.scenario = scenario
        self.tenant_id = "contoso.onmicrosoft.com"
        self.tenant_guid = objects.tenant_guid(scenario.seed)
        self.client_id = objects.stable_guid(scenario.seed, "client")
        self.client_secret = f"sim~{secrets.token_urlsafe(30)}"
        self._workdir = workdir
        self._clock = clock
        self._lock = threading.RLock()
        start = clock()
        lateness = scenario.lateness_model()
        self._timelines = {
            source.name: Timeline(
                rate=source.rate(scenario),
                lateness=lateness,
                start=start,
                history=scenario.history,
                rng=random.Random(f"{scenario.seed}:{source.name}"),
                make_id=functools.partial(source.make_id, scenario.seed),
            )
            for source in SOURCES.values()
        }
        self._make_object = {source.name: source.make_object for source in SOURCES.values()}
        if scenario.tenant_scale_signins:
            self._make_object["signIns"] = objects.tenant_scale_signin
        self._faults = Faults()
        self._budget = (scenario.budget_requests, scenario.budget_seconds)
        self._recent: deque[float] = deque()
        self._token_lifetime = scenario.token_lifetime
        self._tokens: dict[str, float] = {}
        self._frozen_at: float | None = None
        self._requests: dict[str, Counter[str]] = {}
        self._authorized: Counter[str] = Counter()
        self._throttled = 0
        self._not_before = 0.0
        self._held_since = 0.0
        self._held_for = ""
        self._early_requests = 0
        self._assertions: set[str] = set()
        self._early_in_flight = 0
        self._injected: dict[str, dict[int, JsonObject]] = {name: {} for name in SOURCES}
        self._tokens_issued = 0
        self._pki: TestPki | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Write a throwaway PKI into the workdir and serve HTTPS on host:port (0 = free)."""
        if self._server is not None:
            raise RuntimeError("the simulated tenant is already running")
        self._pki = write_test_pki(self._workdir, hostnames=(host, "127.0.0.1", "localhost"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._pki.cert_file, self._pki.key_file)
        server_class = _Server6 if ":" in host else _Server
        server = server_class((host, port), _make_handler(self))
        # Handshake lazily in the connection's own thread, so one stuck client cannot
        # block accept() for everyone else.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        bound_port = server.server_address[1]
        netloc = f"[{host}]" if ":" in host else host
        self._base_url = f"https://{netloc}:{bound_port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="simulated-tenant", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    @property
    def base_url(self) -> str:
        """`https://HOST:PORT` of the running server (Graph and the authority host)."""
        if self._base_url is None:
            raise RuntimeError("the simulated tenant has not been started")
        return self._base_url

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients must trust (pass it as `verify=`)."""
        if self._pki is None:
            raise RuntimeError("the simulated tenant has not been started")
        return self._pki.ca_file

    @property
    def authority(self) -> str:
        """The MSAL authority URL for this tenant."""
        return f"{self.base_url}/{self.tenant_id}"

    # -- control -----------------------------------------------------------------------

    def truth(self, source: str) -> list[JsonObject]:
        """Every generated event of a source: id, event_time and available_at (epoch floats).

        Events whose `available_at` is after the freeze were never visible to any query.
        """
        name = self._source_name(source)
        timeline = self._timelines[name]
        with self._lock:
            events = timeline.truth(self._clock())
        return [
            {
                "id": self._injected[name][e.seq].get("id")
                if e.seq in self._injected[name]
                else e.id,
                "event_time": e.event_time,
                "available_at": e.available_at,
            }
            for e in events
        ]

    def inject(self, source: str, objects: list[JsonObject]) -> None:
        """Serve these objects verbatim, visible from now on (hostile-input tests).

        They take the next event times of the source; their own fields are not checked, so
        an object may lack an id, be huge, or carry any characters at all.
        """
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise ValueError("inject takes a JSON list of objects")
        name = self._source_name(source)
        with self._lock:
            now = self._clock()
            for obj in objects:
                self._injected[name][self._timelines[name].append(now)] = obj

    def set_faults(self, **knobs: Any) -> None:
        """Change fault and throttling knobs at runtime; unknown knobs raise ValueError.

        Besides the counters of `FaultState`: `budget=[requests, per_seconds]`,
        `incident=[start, end]` (epoch seconds; None clears), `token_lifetime=seconds`,
        `revoke_tokens=True` (every issued token becomes invalid).
        """
        budget = knobs.pop("budget", None)
        incident_given = "incident" in knobs
        incident = knobs.pop("incident", None)
        lifetime = knobs.pop("token_lifetime", None)
        revoke = knobs.pop("revoke_tokens", False)
        if budget is not None and not (
            isinstance(budget, list | tuple)
            and len(budget) == 2
            and type(budget[0]) is int
            and budget[0] >= 1
            and isinstance(budget[1], int | float)
            and budget[1] > 0
        ):
            raise ValueError("budget must be [requests >= 1, per_seconds > 0]")
        if incident is not None and not (
            isinstance(incident, list | tuple)
            and len(incident) == 2
            and all(isinstance(t, int | float) for t in incident)
            and incident[1] > incident[0]
        ):
            raise ValueError("incident must be [start, end] epoch seconds with end > start")
        if lifetime is not None and (type(lifetime) is not int or lifetime < 1):
            raise ValueError("token_lifetime must be a positive integer (seconds)")
        if type(revoke) is not bool:
            raise ValueError("revoke_tokens must be true or false")
        self._faults.update(**knobs)
        with self._lock:
            if budget is not None:
                self._budget = (budget[0], float(budget[1]))
            if lifetime is not None:
                self._token_lifetime = lifetime
            if revoke:
                self._tokens.clear()
            if incident_given:
                for timeline in self._timelines.values():
                    timeline.clear_incidents()
                    if incident is not None:
                        timeline.add_incident(float(incident[0]), float(incident[1]))

    def freeze(self) -> float:
        """Stop the world now: no new events, nothing more becomes visible. Returns when."""
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = self._clock()
                for timeline in self._timelines.values():
                    timeline.freeze(self._frozen_at)
            return self._frozen_at

    def stats(self) -> JsonObject:
        """Request counts per endpoint and status, throttled count, tokens issued."""
        with self._lock:
            return {
                "requests": {name: dict(codes) for name, codes in self._requests.items()},
                "authorized_requests": dict(self._authorized),
                "throttled": self._throttled,
                "early_requests": self._early_requests,
                "distinct_client_assertions": len(self._assertions),
                "early_in_flight": self._early_in_flight,
                "tokens_issued": self._tokens_issued,
                "events": {name: len(t) for name, t in self._timelines.items()},
                "frozen_at": self._frozen_at,
                "faults": asdict(self._faults.snapshot()),
            }

    # -- request handling --------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request and record it in the stats."""
        parts = urlsplit(request.target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        endpoint, response = self._route(request, path, query)
        with self._lock:
            self._requests.setdefault(endpoint, Counter())[str(response.status)] += 1
            if "authorization" in request.headers:
                self._authorized[f"{request.headers.get('host', '')}{path}"] += 1
        return response

    def _route(
        self, request: Request, path: str, query: dict[str, list[str]]
    ) -> tuple[str, Response]:
        segments = path.strip("/").split("/")
        if path in _SOURCE_BY_PATH:
            if request.method != "GET":
                return "graph", self._graph_error(
                    request, 405, "Request_BadRequest", "Method not allowed."
                )
            source = _SOURCE_BY_PATH[path]
            return source.name, self._graph(request, source, query)
        if segments[0] == "_sim":
            return "sim", self._control(request, segments[1:], query)
        if len(segments) == 4 and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return "openid-configuration", self._openid_configuration(segments[0])
        if len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            if request.method != "POST":
                return "token", _json_response(405, {"error": "invalid_request"})
            return "token", self._token(request, segments[0])
        return "unknown", self._graph_error(
            request, 404, "UnknownError", f"Resource not found: '{path}'."
        )

    # -- identity platform ---------------------------------------------------------------

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id.lower(), self.tenant_guid)

    def _openid_configuration(self, tenant: str) -> Response:
        if not self._known_tenant(tenant):
            return self._aadsts(90002, tenant=tenant)
        base = f"{self.base_url}/{tenant}"
        return _json_response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{self.base_url}/{self.tenant_guid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.base_url}/{self.tenant_guid}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
            },
        )

    def _aadsts(self, code: int, **details: str) -> Response:
        status, error, template = AADSTS_ERRORS.get(
            code, (400, "invalid_request", "Simulated failure.")
        )
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        fields = {"client_id": self.client_id, "tenant": self.tenant_id, "scope": "", **details}
        description = (
            f"AADSTS{code}: {template.format(**fields)} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}"
        )
        return _json_response(
            status,
            {
                "error": error,
                "error_description": description,
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"{self.base_url}/error?code={code}",
            },
        )

    def _token(self, request: Request, tenant: str) -> Response:
        if self._faults.take("token_failures"):
            return self._aadsts(self._faults.snapshot().token_error, tenant=tenant)
        if not self._known_tenant(tenant):
            return self._aadsts(90002, tenant=tenant)
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return self._aadsts(70003)
        if form.get("client_id") != self.client_id:
            return self._aadsts(700016, client_id=form.get("client_id", ""), tenant=tenant)
        secret, assertion = form.get("client_secret"), form.get("client_assertion")
        if secret is None and assertion is None:
            return self._aadsts(7000218)
        if secret is not None and not secrets.compare_digest(
            secret.encode(), self.client_secret.encode()
        ):
            return self._aadsts(7000215)
        if assertion is not None and not (
            form.get("client_assertion_type") == _JWT_BEARER and _jwt_is_well_formed(assertion)
        ):
            return self._aadsts(7000215)
        if assertion is not None:
            with self._lock:
                self._assertions.add(hashlib.sha256(assertion.encode()).hexdigest())
        scopes = form.get("scope", "").split()
        wanted = f"{self.base_url}/.default"
        if wanted not in scopes or not set(scopes) <= _RESERVED_SCOPES | {wanted}:
            return self._aadsts(70011, scope=form.get("scope", ""))
        token = secrets.token_urlsafe(48)
        with self._lock:
            lifetime = self._token_lifetime
            self._tokens[token] = self._clock() + lifetime
            self._tokens_issued += 1
        return _json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )

    # -- Graph -----------------------------------------------------------------------------

    def _graph_error(
        self,
        request: Request,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        inner: Mapping[str, str] | None = None,
    ) -> Response:
        request_id = str(uuid.uuid4())
        date = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        inner_error = {
            **(inner or {}),
            "date": date,
            "request-id": request_id,
            "client-request-id": request.headers.get("client-request-id", request_id),
        }
        return _json_response(
            status,
            {"error": {"code": code, "message": message, "innerError": inner_error}},
            {"request-id": request_id, **(headers or {})},
        )

    def _authorized_token(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "Access token is empty."
        with self._lock:
            expires = self._tokens.get(token)
            if expires is None:
                return "Invalid access token: not issued by this tenant or revoked."
            if expires <= self._clock():
                return "Access token has expired or is not yet valid."
        return None

    def _retry_after(self, wait: float) -> str:
        style = self._faults.snapshot().retry_after_style
        if style == "http-date":
            return email.utils.formatdate(math.ceil(self._clock() + wait), usegmt=True)
        if style == "integer":
            return str(max(math.ceil(wait), 1))
        return f"{max(math.ceil(wait * 1000) / 1000, 0.001):.3f}"

    def _hold_until(self, wait: float, path: str) -> None:
        """Remember a Retry-After given to a request for `path`: a request before it expires
        is counted as early."""
        with self._lock:
            now = self._clock()
            if now >= self._not_before:
                self._held_since, self._held_for = now, path
            self._not_before = max(self._not_before, now + wait)

    def _throttle(self) -> float | None:
        """Take a slot of the sliding-window budget, or say how long until one frees."""
        with self._lock:
            now = self._clock()
            requests, per = self._budget
            while self._recent and self._recent[0] <= now - per:
                self._recent.popleft()
            if len(self._recent) >= requests:
                self._throttled += 1
                return self._recent[len(self._recent) - requests] + per - now
            self._recent.append(now)
            return None

    def _graph(self, request: Request, source: Source, query: dict[str, list[str]]) -> Response:
        """Authenticate, then spend budget, then inject faults, then validate and serve.

        The order matters to the collector: a 401 or a 429 costs no budget; a 400, a
        fault and a good page all do, as throttled calls do at Microsoft.
        """
        problem = self._authorized_token(request)
        if problem is not None:
            return self._graph_error(
                request,
                401,
                "InvalidAuthenticationToken",
                problem,
                {"WWW-Authenticate": f'Bearer realm="", authorization_uri="{self.authority}"'},
            )
        with self._lock:
            now = self._clock()
            if now < self._not_before:
                other_source = source.path != self._held_for
                if other_source and now < self._held_since + IN_FLIGHT_GRACE:
                    self._early_in_flight += 1
                else:
                    self._early_requests += 1
        wait = self._throttle()
        if wait is not None:
            self._hold_until(wait, source.path)
            return self._graph_error(
                request,
                429,
                "TooManyRequests",
                "Please retry again later.",
                {"Retry-After": self._retry_after(wait)},
                {"code": "429", "status": "429"},
            )
        fault = self._injected_failure(request)
        if fault is not None:
            return fault
        try:
            cursor = self._cursor(source, query)
        except QueryError as exc:
            return self._graph_error(request, 400, "BadRequest", str(exc))
        return self._page(request, source, cursor)

    def _injected_failure(self, request: Request) -> Response | None:
        if self._faults.take("graph_503"):
            retry = self._faults.snapshot().graph_503_retry_after
            headers = {} if retry is None else {"Retry-After": self._retry_after(retry)}
            if retry is not None:
                self._hold_until(retry, urlsplit(request.target).path)
            return self._graph_error(
                request, 503, "serviceNotAvailable", "Service is temporarily unavailable.", headers
            )
        if self._faults.take("graph_504"):
            return self._graph_error(request, 504, "gatewayTimeout", "The gateway timed out.")
        if self._faults.take("graph_500"):
            return self._graph_error(
                request, 500, "generalException", "General exception while processing."
            )
        return None

    def _cursor(self, source: Source, query: dict[str, list[str]]) -> Cursor:
        unknown = set(query) - {"$filter", "$top", "$skiptoken"}
        if unknown:
            raise QueryError(f"Query option(s) not supported: {', '.join(sorted(unknown))}")
        if any(len(values) > 1 for values in query.values()):
            raise QueryError("Query options must not be repeated.")
        first = {name: values[0] for name, values in query.items()}
        bounds = parse_filter(first.get("$filter"), source.time_field)
        top = parse_top(first.get("$top"))
        token = first.get("$skiptoken")
        if token is not None:
            return decode_cursor(token, source.name)
        return Cursor(source.name, self._clock(), bounds.ge, bounds.le, None, top)

    def _page(self, request: Request, source: Source, cursor: Cursor) -> Response:
        timeline = self._timelines[source.name]
        with self._lock:
            events: list[Event] = list(
                islice(
                    timeline.iter_visible_ticks(cursor.asof, cursor.ge, cursor.upper()),
                    cursor.top + 1,
                )
            )
        page, more = events[: cursor.top], len(events) > cursor.top
        seed = self.scenario.seed
        body: JsonObject = {
            "@odata.context": f"{self.base_url}/v1.0/$metadata#auditLogs/{source.name}",
            "value": [
                self._injected[source.name].get(e.seq)
                or self._make_object[source.name](seed, e.seq, e.ticks)
                for e in page
            ],
        }
        next_link = None
        if more:
            resumed = Cursor(
                cursor.source, cursor.asof, cursor.ge, cursor.le, page[-1].ticks, cursor.top
            )
            next_link = self._next_link(request, source, resumed)
        if self._faults.take("foreign_next_link"):
            foreign = self._faults.snapshot().foreign_next_link_url.rstrip("/")
            own = next_link or self._next_link(request, source, cursor)
            next_link = foreign + own[len(self.base_url) :]
        if next_link is not None:
            body["@odata.nextLink"] = next_link
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        if self._faults.take("malformed_pages"):
            raw = raw[: max(1, len(raw) // 2)]
        headers = {"Content-Type": _GRAPH_CONTENT_TYPE, "request-id": str(uuid.uuid4())}
        if "client-request-id" in request.headers:
            headers["client-request-id"] = request.headers["client-request-id"]
        return Response(200, raw, headers)

    def _next_link(self, request: Request, source: Source, cursor: Cursor) -> str:
        query = parse_qs(urlsplit(request.target).query)
        params: dict[str, str] = {
            name: query[name][0] for name in ("$filter", "$top") if name in query
        }
        params["$skiptoken"] = encode_cursor(cursor)
        return f"{self.base_url}{source.path}?{urlencode(params, quote_via=quote, safe='$:')}"

    # -- control endpoints -----------------------------------------------------------------

    @staticmethod
    def _source_name(source: str) -> str:
        try:
            return _SOURCE_ALIASES[source.lower()]
        except KeyError:
            raise ValueError(f"unknown source '{source}' (signins or directoryAudits)") from None

    def _control(
        self, request: Request, segments: list[str], query: dict[str, list[str]]
    ) -> Response:
        action = "/".join(segments)
        try:
            if action == "truth" and request.method == "GET":
                return _json_response(200, self.truth(query.get("source", ["signins"])[0]))
            if action == "stats" and request.method == "GET":
                return _json_response(200, self.stats())
            if action == "inject" and request.method == "POST":
                self.inject(query.get("source", ["signins"])[0], json.loads(request.body or b"[]"))
                return _json_response(200, {"injected": True})
            if action == "tokens" and request.method == "GET":
                with self._lock:
                    return _json_response(200, sorted(self._tokens))
            if action == "freeze" and request.method == "POST":
                return _json_response(200, {"frozen_at": self.freeze()})
            if action == "faults" and request.method == "POST":
                knobs = json.loads(request.body or b"{}")
                if not isinstance(knobs, dict):
                    raise ValueError("the body must be a JSON object of knobs")
                self.set_faults(**knobs)
                return _json_response(200, {"faults": asdict(self._faults.snapshot())})
        except ValueError as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(
            404, {"error": f"no control endpoint {request.method} /_sim/{action}"}
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Drop clients that hang up or fail the TLS handshake without a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _make_handler(tenant: SimulatedTenant) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "siem-exporter-sim"
        sys_version = ""
        timeout = 30

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = tenant.handle(Request(self.command, self.path, headers, body))
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request logging: the stats endpoint is the record."""

    return Handler

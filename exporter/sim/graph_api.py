"""The Graph audit-log API of the simulated tenant: bearer-token checks, the request budget
of each throttling family and its 429s, injected faults, query validation, and pages with
their next links, of one stream (v1.0) or of the sign-in streams a beta query selects,
merged."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import gzip
import json
import math
import uuid
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from exporter.sim.audit_logs import AuditLogs
from exporter.sim.faults import Faults
from exporter.sim.messages import Request, Response, json_response
from exporter.sim.query import (
    Cursor,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_filter,
    parse_top,
)
from exporter.sim.sources import Collection
from exporter.sim.state import TenantState, TokenStore
from exporter.sim.throttle import RETRY_AFTER_FAMILIES, Throttle

_GRAPH_CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
_TOKEN_PROBLEMS = {
    "unknown": "Invalid access token: not issued by this tenant or revoked.",
    "expired": "Access token has expired or is not yet valid.",
}


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (named, or ``*``, without ``q=0``)."""
    for offer in accept_encoding.split(","):
        coding, _, params = offer.partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        quality = params.replace(" ", "").lower().removeprefix("q=")
        try:
            return not params or float(quality) > 0
        except ValueError:
            return False
    return False


class GraphApi:
    """Serves `GET` on the audit-log collections as Graph v1.0 and beta do, errors included.

    Every error carries Graph's envelope (`error.code`, `innerError` with request ids),
    because the collector reads those fields.
    """

    def __init__(
        self,
        base_url: Callable[[], str],
        authority: Callable[[], str],
        clock: Callable[[], float],
        faults: Faults,
        tokens: TokenStore,
        throttles: Mapping[str, Throttle],
        logs: AuditLogs,
    ) -> None:
        """`throttles` holds the budget of each throttling family a collection draws from."""
        self._base_url = base_url
        self._authority = authority
        self._clock = clock
        self._faults = faults
        self._tokens = tokens
        self._throttles = throttles
        self._logs = logs

    @classmethod
    def of_state(
        cls, state: TenantState, base_url: Callable[[], str], authority: Callable[[], str]
    ) -> GraphApi:
        """The API over a tenant's state, served at ``base_url`` (a server's or a test's)."""
        return cls(
            base_url,
            authority,
            state.clock,
            state.faults,
            state.tokens,
            state.throttles,
            state.logs,
        )

    def error(
        self,
        request: Request,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        inner: Mapping[str, str] | None = None,
    ) -> Response:
        """A Graph error response; it echoes the client's `client-request-id` if it sent one."""
        request_id = str(uuid.uuid4())
        date = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        inner_error = {
            **(inner or {}),
            "date": date,
            "request-id": request_id,
            "client-request-id": request.headers.get("client-request-id", request_id),
        }
        return json_response(
            status,
            {"error": {"code": code, "message": message, "innerError": inner_error}},
            {"request-id": request_id, **(headers or {})},
        )

    def _token_problem(self, request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "Access token is empty."
        problem = self._tokens.problem(token)
        return None if problem is None else _TOKEN_PROBLEMS[problem]

    def _retry_after(self, wait: float) -> str:
        style = self._faults.snapshot().retry_after_style
        if style == "http-date":
            return email.utils.formatdate(math.ceil(self._clock() + wait), usegmt=True)
        if style == "integer":
            return str(max(math.ceil(wait), 1))
        return f"{max(math.ceil(wait * 1000) / 1000, 0.001):.3f}"

    def serve(
        self, request: Request, collection: Collection, query: dict[str, list[str]]
    ) -> Response:
        """Authenticate, then spend budget, then inject faults, then validate and serve.

        The order matters to the collector: a 401 or a 429 costs no budget; a 400, a
        fault and a good page all do, as throttled calls do at Microsoft. A family whose
        429s carry no Retry-After (Identity Protection) leaves the client to back off.
        """
        problem = self._token_problem(request)
        if problem is not None:
            return self.error(
                request,
                401,
                "InvalidAuthenticationToken",
                problem,
                {"WWW-Authenticate": f'Bearer realm="", authorization_uri="{self._authority()}"'},
            )
        throttle = self._throttles[collection.budget]
        throttle.note_arrival(collection.path)
        wait = throttle.take()
        if wait is not None:
            headers = {}
            if collection.budget in RETRY_AFTER_FAMILIES:
                throttle.hold(wait, collection.path)
                headers["Retry-After"] = self._retry_after(wait)
            return self.error(
                request,
                429,
                "TooManyRequests",
                "Please retry again later.",
                headers,
                {"code": "429", "status": "429"},
            )
        fault = self._injected_failure(request, throttle)
        if fault is not None:
            return fault
        try:
            cursor = self._cursor(collection, query)
        except QueryError as exc:
            return self.error(request, 400, "BadRequest", str(exc))
        return self._page(request, collection, cursor)

    def _injected_failure(self, request: Request, throttle: Throttle) -> Response | None:
        """The fault a knob asks for, if any; a 503's Retry-After holds `throttle`."""
        refusal = self._faults.snapshot().graph_403
        if refusal == "permission":
            return self.error(
                request,
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        if refusal == "licence":
            return self.error(
                request,
                403,
                "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                "Neither tenant is B2C or tenant doesn't have premium license",
            )
        if self._faults.take("graph_503"):
            retry = self._faults.snapshot().graph_503_retry_after
            headers = {} if retry is None else {"Retry-After": self._retry_after(retry)}
            if retry is not None:
                throttle.hold(retry, urlsplit(request.target).path)
            return self.error(
                request, 503, "serviceNotAvailable", "Service is temporarily unavailable.", headers
            )
        if self._faults.take("graph_504"):
            return self.error(request, 504, "gatewayTimeout", "The gateway timed out.")
        if self._faults.take("graph_500"):
            return self.error(
                request, 500, "generalException", "General exception while processing."
            )
        return None

    def _cursor(self, collection: Collection, query: dict[str, list[str]]) -> Cursor:
        """The cursor of the first page, or the one a `$skiptoken` carries.

        A query that selects types gets a merged cursor naming their streams (in the
        collection's order, which ranks equal ticks); one without reads the default.
        """
        unknown = set(query) - {"$filter", "$top", "$skiptoken"}
        if unknown:
            raise QueryError(f"Query option(s) not supported: {', '.join(sorted(unknown))}")
        if any(len(values) > 1 for values in query.values()):
            raise QueryError("Query options must not be repeated.")
        first = {name: values[0] for name, values in query.items()}
        bounds = parse_filter(
            first.get("$filter"),
            collection.time_field,
            collection.event_types,
            collection.operators,
        )
        top = parse_top(first.get("$top"), collection.max_top)
        token = first.get("$skiptoken")
        if token is not None:
            return decode_cursor(token, collection.name, collection.event_types.values())
        streams = None
        if bounds.types is not None:
            streams = tuple(s for t, s in collection.event_types.items() if t in bounds.types)
        return Cursor(collection.name, self._clock(), bounds.ge, bounds.le, None, top, streams)

    def _page(self, request: Request, collection: Collection, cursor: Cursor) -> Response:
        names = cursor.streams or collection.default
        events = self._logs.page(names, cursor)
        page, more = events[: cursor.top], len(events) > cursor.top
        base_url = self._base_url()
        context = f"{base_url}/{collection.version}/$metadata#{collection.namespace}/{collection.resource}"
        events_json = b",".join(self._logs.render_json(names[rank], e) for rank, e in page)
        next_link = None
        if more:
            rank, last = page[-1]
            resumed = dataclasses.replace(
                cursor, before=last.ticks, rank=None if cursor.streams is None else rank
            )
            next_link = self._next_link(request, collection, resumed)
        if self._faults.take("foreign_next_link"):
            foreign = self._faults.snapshot().foreign_next_link_url.rstrip("/")
            own = next_link or self._next_link(request, collection, cursor)
            next_link = foreign + own[len(base_url) :]
        tail = b"" if next_link is None else b',"@odata.nextLink":' + json.dumps(next_link).encode()
        raw = b"".join(
            (
                b'{"@odata.context":',
                json.dumps(context).encode(),
                b',"value":[',
                events_json,
                b"]",
                tail,
                b"}",
            )
        )
        if self._faults.take("malformed_pages"):
            raw = raw[: max(1, len(raw) // 2)]
        headers = {"Content-Type": _GRAPH_CONTENT_TYPE, "request-id": str(uuid.uuid4())}
        if "client-request-id" in request.headers:
            headers["client-request-id"] = request.headers["client-request-id"]
        if accepts_gzip(request.headers.get("accept-encoding", "")):
            # Graph compresses a page for a client that accepts it (a page of sign-ins
            # shrinks ten times or more); the fastest level keeps the simulator light.
            headers["Content-Encoding"] = "gzip"
            raw = gzip.compress(raw, compresslevel=1, mtime=0)
        return Response(200, raw, headers)

    def _next_link(self, request: Request, collection: Collection, cursor: Cursor) -> str:
        query = parse_qs(urlsplit(request.target).query)
        params: dict[str, str] = {
            name: query[name][0] for name in ("$filter", "$top") if name in query
        }
        params["$skiptoken"] = encode_cursor(cursor)
        return (
            f"{self._base_url()}{collection.path}?{urlencode(params, quote_via=quote, safe='$:')}"
        )

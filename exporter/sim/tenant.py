"""The simulated Microsoft tenant: an MSAL-compatible token endpoint and the Graph audit-log
API over HTTPS on loopback, with drift, paging, throttling and injectable faults.

`SimulatedTenant` is the one entry point: `handle(Request) -> Response` routes each request
to the part whose job it is (`identity`, `graph_api`, `control`) and counts it; `server`
turns HTTP into those calls. The shared state has one owner, `state.TenantState`, whose
pieces are handed to the parts. Callers import `Request`, `Response` and `Source` from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exporter.sim.control import ControlApi
from exporter.sim.graph_api import GraphApi
from exporter.sim.identity import IdentityPlatform, Registration
from exporter.sim.management_api import FEEDS, ManagementApi
from exporter.sim.messages import Request, Response, json_response
from exporter.sim.scenario import Scenario
from exporter.sim.server import TenantServer
from exporter.sim.sources import COLLECTION_BY_PATH, SOURCES, JsonObject, Source
from exporter.sim.state import TenantState

__all__ = ["SOURCES", "Request", "Response", "SimulatedTenant", "Source"]


class SimulatedTenant:
    """A fake Entra ID tenant plus Graph, for the demo and end-to-end tests.

    Construct, `start()`, point MSAL at `{base_url}/{tenant_id}` and Graph at `base_url`
    (trusting `ca_file`), then `stop()`. Everything is driven by the injected `clock`.
    """

    def __init__(
        self, scenario: Scenario, workdir: Path, clock: Callable[[], float] = time.time
    ) -> None:
        self.scenario = scenario
        registration = Registration.create(scenario.seed)
        self.tenant_id = registration.tenant_id
        self.tenant_guid = registration.tenant_guid
        self.client_id = registration.client_id
        self.client_secret = registration.client_secret
        state = TenantState.create(scenario, clock)
        self._state = state
        self._server = TenantServer(workdir, self.handle)
        self._identity = IdentityPlatform(
            registration, lambda: self.base_url, state.clock, state.faults, state.tokens
        )
        self._graph = GraphApi.of_state(state, lambda: self.base_url, lambda: self.authority)
        self._control = ControlApi(state)
        self.management = ManagementApi(
            (registration.tenant_id, registration.tenant_guid),
            registration.tenant_guid,
            lambda: self.base_url,
            state.clock,
            state.tokens,
            FEEDS.get(scenario.name, FEEDS["test"]),
            scenario.seed,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Write a throwaway PKI into the workdir and serve HTTPS on host:port (0 = free)."""
        self._server.start(host, port)

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        self._server.stop()

    @property
    def base_url(self) -> str:
        """`https://HOST:PORT` of the running server (Graph and the authority host)."""
        return self._server.base_url

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients must trust (pass it as `verify=`)."""
        return self._server.ca_file

    @property
    def authority(self) -> str:
        """The MSAL authority URL for this tenant."""
        return f"{self.base_url}/{self.tenant_id}"

    # -- control -----------------------------------------------------------------------

    def truth(self, source: str) -> list[JsonObject]:
        """Every generated event of a source: id, event_time and available_at (epoch floats).

        Events whose `available_at` is after the freeze were never visible to any query.
        """
        return self._control.truth(source)

    def inject(self, source: str, objects: list[JsonObject]) -> None:
        """Serve these objects verbatim, visible from now on (see `ControlApi.inject`)."""
        self._control.inject(source, objects)

    def set_faults(self, **knobs: Any) -> None:
        """Change fault and throttling knobs at runtime (see `ControlApi.set_faults`)."""
        self._control.set_faults(**knobs)

    def freeze(self) -> float:
        """Stop the world now: no new events, nothing more becomes visible. Returns when."""
        return self._control.freeze()

    def stats(self) -> JsonObject:
        """Request counts per endpoint and status, throttled count, tokens issued."""
        return self._control.stats()

    # -- request handling --------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request and record it in the stats."""
        parts = urlsplit(request.target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        endpoint, response = self._route(request, path, query)
        self._state.traffic.record(request, path, endpoint, response.status)
        return response

    def _route(
        self, request: Request, path: str, query: dict[str, list[str]]
    ) -> tuple[str, Response]:
        """Pick the part for a path; the first value names the endpoint in the stats."""
        segments = path.strip("/").split("/")
        if path in COLLECTION_BY_PATH:
            if request.method != "GET":
                return "graph", self._graph.error(
                    request, 405, "Request_BadRequest", "Method not allowed."
                )
            collection = COLLECTION_BY_PATH[path]
            return collection.name, self._graph.serve(request, collection, query)
        if self.management.handles(path):
            return "management", self.management.serve(request, path, query)
        if segments[:2] == ["_sim", "management"]:
            return "sim", self.management.control(request, "/".join(segments[2:]), query)
        if segments[0] == "_sim":
            return "sim", self._control.handle(request, segments[1:], query)
        if len(segments) == 4 and segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return "openid-configuration", self._identity.openid_configuration(segments[0])
        if len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            if request.method != "POST":
                return "token", json_response(405, {"error": "invalid_request"})
            return "token", self._identity.token(request, segments[0])
        return "unknown", self._graph.error(
            request, 404, "UnknownError", f"Resource not found: '{path}'."
        )

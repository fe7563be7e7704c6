"""The control side of the simulated tenant: ground truth, injection, faults, freeze and
stats, as methods for in-process callers and as the `/_sim/` endpoints for other processes.

Knobs arrive from tests over HTTP, so validation is strict and all-or-nothing: a bad
value is a ValueError (a 400 over HTTP) and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from exporter.sim.messages import Request, Response, json_response
from exporter.sim.sources import JsonObject, source_name
from exporter.sim.state import TenantState
from exporter.sim.throttle import IDENTITY_PROTECTION, IDENTITY_REPORTS


class ControlApi:
    """Reads and steers the tenant's state; it never answers Graph or token requests."""

    def __init__(self, state: TenantState) -> None:
        self._state = state

    def truth(self, source: str) -> list[JsonObject]:
        """Every generated event of a source: id, event_time and available_at (epoch floats).

        Events whose `available_at` is after the freeze were never visible to any query.
        """
        return self._state.logs.truth(source_name(source))

    def inject(self, source: str, objects: list[JsonObject]) -> None:
        """Serve these objects verbatim, visible from now on (hostile-input tests).

        They take the next event times of the source; their own fields are not checked, so
        an object may lack an id, be huge, or carry any characters at all.
        """
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise ValueError("inject takes a JSON list of objects")
        self._state.logs.inject(source_name(source), objects)

    def set_faults(self, **knobs: Any) -> None:
        """Change fault and throttling knobs at runtime; unknown knobs raise ValueError.

        Besides the counters of `FaultState`: `budget=[requests, per_seconds]` (the identity
        reports'), `identity_protection_budget=[requests, per_seconds]` (the tenant's share
        other apps leave this one), `incident=[start, end]` (epoch seconds; None clears),
        `token_lifetime=seconds`, `revoke_tokens=True` (every issued token becomes invalid).
        """
        budgets = {
            family: knobs.pop(knob, None)
            for family, knob in (
                (IDENTITY_REPORTS, "budget"),
                (IDENTITY_PROTECTION, "identity_protection_budget"),
            )
        }
        incident_given = "incident" in knobs
        incident = knobs.pop("incident", None)
        lifetime = knobs.pop("token_lifetime", None)
        revoke = knobs.pop("revoke_tokens", False)
        for budget in budgets.values():
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
        state = self._state
        state.faults.update(**knobs)
        with state.lock:
            for family, budget in budgets.items():
                if budget is not None:
                    state.throttles[family].set_budget(budget[0], float(budget[1]))
            if lifetime is not None:
                state.tokens.set_lifetime(lifetime)
            if revoke:
                state.tokens.revoke_all()
            if incident_given:
                state.logs.set_incident(
                    None if incident is None else (float(incident[0]), float(incident[1]))
                )

    def freeze(self) -> float:
        """Stop the world now: no new events, nothing more becomes visible. Returns when."""
        return self._state.logs.freeze()

    def stats(self) -> JsonObject:
        """Request counts per endpoint and status, throttled counts (all of them the identity
        reports', `throttled_by_family` each family's), tokens issued."""
        state = self._state
        with state.lock:
            return {
                "requests": state.traffic.requests(),
                "authorized_requests": state.traffic.authorized(),
                "throttled": state.throttle.throttled,
                "throttled_by_family": {
                    family: throttle.throttled for family, throttle in state.throttles.items()
                },
                "early_requests": state.throttle.early_requests,
                "distinct_client_assertions": state.tokens.distinct_assertions,
                "early_in_flight": state.throttle.early_in_flight,
                "tokens_issued": state.tokens.issued,
                "events": state.logs.sizes(),
                "frozen_at": state.logs.frozen_at,
                "faults": asdict(state.faults.snapshot()),
            }

    def handle(
        self, request: Request, segments: list[str], query: dict[str, list[str]]
    ) -> Response:
        """Answer `/_sim/<segments>`: a bad argument is a 400, an unknown action a 404."""
        action = "/".join(segments)
        try:
            if action == "truth" and request.method == "GET":
                return json_response(200, self.truth(query.get("source", ["signins"])[0]))
            if action == "stats" and request.method == "GET":
                return json_response(200, self.stats())
            if action == "inject" and request.method == "POST":
                self.inject(query.get("source", ["signins"])[0], json.loads(request.body or b"[]"))
                return json_response(200, {"injected": True})
            if action == "tokens" and request.method == "GET":
                return json_response(200, self._state.tokens.unrevoked())
            if action == "freeze" and request.method == "POST":
                return json_response(200, {"frozen_at": self.freeze()})
            if action == "faults" and request.method == "POST":
                knobs = json.loads(request.body or b"{}")
                if not isinstance(knobs, dict):
                    raise ValueError("the body must be a JSON object of knobs")
                self.set_faults(**knobs)
                return json_response(200, {"faults": asdict(self._state.faults.snapshot())})
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"no control endpoint {request.method} /_sim/{action}"})

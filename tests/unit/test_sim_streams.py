"""The sign-in streams of the simulated tenant: beta's `signInEventTypes` filter, the merged
pages of several streams, their objects and the control API over them, driven in process."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from exporter.sim import SCENARIOS
from exporter.sim.control import ControlApi
from exporter.sim.graph_api import GraphApi
from exporter.sim.messages import Request
from exporter.sim.query import (
    Bounds,
    Cursor,
    QueryError,
    decode_cursor,
    encode_cursor,
    parse_filter,
)
from exporter.sim.sources import COLLECTION_BY_PATH, SOURCES
from exporter.sim.state import TenantState
from exporter.sim.timeline import to_ticks_ceil, to_ticks_floor

BETA = "/beta/auditLogs/signIns"
V1 = "/v1.0/auditLogs/signIns"
TYPES = ("interactiveUser", "nonInteractiveUser", "servicePrincipal", "managedIdentity")
WINDOW = "createdDateTime ge 2026-01-01T00:00:00Z and createdDateTime le 2026-01-02T00:00:00Z"


def types_clause(*types: str, var: str = "t") -> str:
    terms = " or ".join(f"{var} eq '{t}'" for t in types)
    return f" and signInEventTypes/any({var}: {terms})"


# -- the filter parser -------------------------------------------------------------------


def test_without_a_types_clause_no_types_are_selected() -> None:
    bounds = parse_filter(WINDOW, "createdDateTime", TYPES)

    assert bounds.types is None
    assert bounds.ge == to_ticks_ceil(1_767_225_600) and bounds.le == to_ticks_floor(1_767_312_000)


@pytest.mark.parametrize(
    ("clause", "selected"),
    [
        (types_clause("nonInteractiveUser"), {"nonInteractiveUser"}),
        (
            types_clause("servicePrincipal", "managedIdentity"),
            {"servicePrincipal", "managedIdentity"},
        ),
        (types_clause(*TYPES), set(TYPES)),
        (types_clause("servicePrincipal", "servicePrincipal"), {"servicePrincipal"}),
        (types_clause("managedIdentity", var="x"), {"managedIdentity"}),
    ],
)
def test_a_types_clause_selects_its_types(clause: str, selected: set[str]) -> None:
    bounds = parse_filter(WINDOW + clause, "createdDateTime", TYPES)

    window = parse_filter(WINDOW, "createdDateTime", TYPES)
    assert bounds == Bounds(window.ge, window.le, frozenset(selected))


def test_the_clause_may_follow_a_window_without_an_upper_bound() -> None:
    text = "createdDateTime ge 2026-01-01T00:00:00Z" + types_clause("servicePrincipal")

    bounds = parse_filter(text, "createdDateTime", TYPES)

    assert bounds.le is None and bounds.types == {"servicePrincipal"}


@pytest.mark.parametrize(
    ("clause", "message"),
    [
        (types_clause("robot"), "'robot' is not a signInEventType"),
        (types_clause("InteractiveUser"), "not a signInEventType"),
        (" and signInEventTypes/any(t: t ne 'servicePrincipal')", "expected 't eq"),
        (" and signInEventTypes/any(t: x eq 'servicePrincipal')", "expected 't eq"),
        (" and signInEventTypes/any(t: t eq 'a' and t eq 'b')", "expected 't eq"),
        (" and signInEventTypes/any(t: )", "expected 't eq"),
        (" and (userId eq 'x')", "Invalid filter clause"),
        (types_clause("servicePrincipal") + " and (appId eq 'x')", "Invalid filter clause"),
        (" or signInEventTypes/any(t: t eq 'servicePrincipal')", "Invalid filter clause"),
    ],
)
def test_anything_else_is_a_query_error(clause: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_filter(WINDOW + clause, "createdDateTime", TYPES)


def test_v1_rejects_the_types_clause_as_it_rejected_it_before() -> None:
    with pytest.raises(QueryError) as raised:
        parse_filter(WINDOW + types_clause("servicePrincipal"), "createdDateTime")

    assert "signInEventTypes" not in str(raised.value).split(", got")[0]


# -- the cursor --------------------------------------------------------------------------


def test_a_single_stream_token_is_the_one_v1_always_served() -> None:
    cursor = Cursor("signIns", 1.5, 10, None, 7, 200)
    before = {"source": "signIns", "asof": 1.5, "ge": 10, "le": None, "before": 7, "top": 200}

    token = encode_cursor(cursor)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))

    assert raw == json.dumps(before, separators=(",", ":")).encode()
    assert decode_cursor(token, "signIns") == cursor


def test_a_merged_token_round_trips_and_names_only_its_streams() -> None:
    streams = ("nonInteractiveUser", "servicePrincipal")
    cursor = Cursor("beta/signIns", 1.5, 10, 20, 15, 3, streams, 1)

    assert decode_cursor(encode_cursor(cursor), "beta/signIns", SOURCES) == cursor
    with pytest.raises(QueryError):
        decode_cursor(encode_cursor(cursor), "beta/signIns", ("servicePrincipal",))
    with pytest.raises(QueryError):
        decode_cursor(encode_cursor(dataclasses.replace(cursor, rank=2)), "beta/signIns", SOURCES)
    with pytest.raises(QueryError):
        decode_cursor(encode_cursor(cursor), "signIns", SOURCES)


def test_a_stream_ranked_before_the_last_served_still_owes_its_tick() -> None:
    cursor = Cursor("beta/signIns", 1.0, None, None, 100, 5, ("a", "b", "c"), 1)

    assert [cursor.upper(rank) for rank in range(3)] == [100, 99, 99]
    assert dataclasses.replace(cursor, le=50).upper(0) == 50


# -- merged pages over the tenant's own state ---------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Tenant:
    clock: ManualClock
    state: TenantState
    graph: GraphApi
    token: str

    def get(self, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
        target = f"{path}?{urlencode(params or {})}" if params else path
        request = Request("GET", target, {"authorization": f"Bearer {self.token}"})
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        response = self.graph.serve(request, COLLECTION_BY_PATH[parts.path], query)
        return response.status, json.loads(response.body)

    def walk(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every object of a query, page after page by its next links."""
        status, page = self.get(path, params)
        while True:
            assert status == 200, page
            yield from page["value"]
            if "@odata.nextLink" not in page:
                return
            link = urlsplit(page["@odata.nextLink"])
            status, page = self.get(link.path + "?" + link.query)


@pytest.fixture
def tenant() -> Tenant:
    clock = ManualClock()
    scenario = dataclasses.replace(SCENARIOS["test"], history=60.0)
    state = TenantState.create(scenario, clock)
    state.throttle.set_budget(1_000_000, 1.0)
    graph = GraphApi.of_state(state, lambda: "https://sim.test", lambda: "https://sim.test/tenant")
    clock.now += 30
    return Tenant(clock, state, graph, state.tokens.issue()[0])


def recent(tenant: Tenant, seconds: float, *types: str) -> dict[str, str]:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tenant.clock.now - seconds))
    clause = types_clause(*types) if types else ""
    return {"$filter": f"createdDateTime ge {since}{clause}", "$top": "1000"}


def collide(tenant: Tenant, streams: tuple[str, ...], count: int) -> None:
    """`count` events in each stream on the same ticks: injected at one clock reading, each
    stream's k-th lands on the same tick, which only the (ticks, rank) position tells apart."""
    control = ControlApi(tenant.state)
    for stream in streams:
        control.inject(stream, [{"id": f"{stream}-{k}"} for k in range(count)])


@pytest.mark.parametrize("top", [1, 2, 3, 7, 64])
def test_paging_a_merge_of_streams_with_equal_ticks_serves_each_event_once(
    tenant: Tenant, top: int
) -> None:
    streams = ("nonInteractiveUser", "servicePrincipal", "managedIdentity")
    collide(tenant, streams, 4)
    params = recent(tenant, 8, *streams)

    whole = [o["id"] for o in tenant.walk(BETA, params)]
    paged = [o["id"] for o in tenant.walk(BETA, {**params, "$top": str(top)})]

    asof = tenant.clock.now
    tenant.clock.now += 1  # truth leaves out the injected events on ticks after its clock
    truth = ControlApi(tenant.state)
    visible = {
        e["id"]
        for s in streams
        for e in truth.truth(s)
        if e["available_at"] <= asof and e["event_time"] >= asof - 9
    }
    assert len(whole) == len(set(whole)) and set(whole) <= visible
    # newest of all, one tick per k shared by the three streams, the highest rank first
    assert whole[:12] == [f"{s}-{k}" for k in (3, 2, 1, 0) for s in reversed(streams)]
    assert paged == whole


def test_the_merge_is_newest_first_and_each_stream_keeps_its_own_order(tenant: Tenant) -> None:
    streams = ("nonInteractiveUser", "servicePrincipal")
    served = list(tenant.walk(BETA, {**recent(tenant, 20, *streams), "$top": "50"}))

    times = [o["createdDateTime"] for o in served]
    assert times == sorted(times, reverse=True)
    assert {o["signInEventTypes"][0] for o in served} == set(streams)
    for stream in streams:
        ids = {e["id"] for e in ControlApi(tenant.state).truth(stream)}
        assert sum(o["id"] in ids for o in served) == sum(
            o["signInEventTypes"] == [stream] for o in served
        )


def test_beta_without_the_clause_serves_what_v1_serves(tenant: Tenant) -> None:
    params = recent(tenant, 20)
    status, page = tenant.get(BETA, params)
    _, v1 = tenant.get(V1, params)
    _, explicit = tenant.get(BETA, recent(tenant, 20, "interactiveUser"))

    assert status == 200 and page["value"]
    assert page["value"] == v1["value"] == explicit["value"]
    assert page["@odata.context"] == "https://sim.test/beta/$metadata#auditLogs/signIns"
    assert v1["@odata.context"] == "https://sim.test/v1.0/$metadata#auditLogs/signIns"


@pytest.mark.parametrize(
    ("path", "clause"),
    [
        (BETA, types_clause("robot")),
        (BETA, " and (appId eq 'x')"),
        (V1, types_clause("servicePrincipal")),
        ("/v1.0/auditLogs/directoryAudits", types_clause("servicePrincipal")),
    ],
)
def test_a_bad_clause_is_graphs_400(tenant: Tenant, path: str, clause: str) -> None:
    field = "activityDateTime" if "directory" in path else "createdDateTime"
    status, body = tenant.get(path, {"$filter": f"{field} ge 2026-01-01T00:00:00Z{clause}"})

    assert status == 400
    assert body["error"]["code"] == "BadRequest" and body["error"]["innerError"]["request-id"]


def test_a_skiptoken_of_another_collection_is_refused(tenant: Tenant) -> None:
    _, page = tenant.get(V1, {**recent(tenant, 20), "$top": "1"})
    token = urlsplit(page["@odata.nextLink"]).query.split("$skiptoken=")[1]

    status, body = tenant.get(BETA, {"$skiptoken": token})

    assert status == 400 and "different resource" in body["error"]["message"]


def test_each_stream_serves_its_own_realistic_beta_objects(tenant: Tenant) -> None:
    def one(kind: str) -> dict[str, Any]:
        _, page = tenant.get(BETA, {**recent(tenant, 30, kind), "$top": "1"})
        return dict(page["value"][0])

    non_interactive, principal, identity = (
        one(t) for t in ("nonInteractiveUser", "servicePrincipal", "managedIdentity")
    )

    assert non_interactive["signInEventTypes"] == ["nonInteractiveUser"]
    assert non_interactive["isInteractive"] is False and non_interactive["userId"]
    for workload, kind in ((principal, "servicePrincipal"), (identity, "managedIdentity")):
        assert workload["signInEventTypes"] == [kind] and workload["isInteractive"] is False
        assert workload["servicePrincipalId"] and workload["servicePrincipalName"]
        assert workload["userId"] == "" and workload["userPrincipalName"] is None
    assert "managedServiceIdentity" not in principal
    assert identity["managedServiceIdentity"]["msiType"] in ("systemAssigned", "userAssigned")
    assert principal["clientCredentialType"] in (
        "clientSecret",
        "certificate",
        "federatedIdentityCredential",
    )


def test_ids_are_unique_across_streams_and_stable_per_seed() -> None:
    ids = [source.make_id(1, seq) for source in SOURCES.values() for seq in range(50)]

    assert len(set(ids)) == len(ids)
    assert [SOURCES["servicePrincipal"].make_object(1, 3, 10**16)] == [
        SOURCES["servicePrincipal"].make_object(1, 3, 10**16)
    ]


# -- control -------------------------------------------------------------------------------


def test_truth_stats_freeze_and_incidents_cover_every_stream(tenant: Tenant) -> None:
    control = ControlApi(tenant.state)

    assert control.truth("NONINTERACTIVEUSER") == control.truth("nonInteractiveUser")
    assert control.truth("interactiveUser") == control.truth("signins")
    with pytest.raises(ValueError, match="managedIdentity"):
        control.truth("robots")
    control.set_faults(incident=[tenant.clock.now, tenant.clock.now + 60])
    tenant.clock.now += 10
    held = control.truth("servicePrincipal")
    assert any(e["available_at"] >= tenant.clock.now + 49 for e in held)
    frozen_at = control.freeze()
    tenant.clock.now += 100
    events = control.stats()["events"]

    assert set(events) == set(SOURCES) and all(events.values())
    for stream in SOURCES:
        assert max(e["event_time"] for e in control.truth(stream)) <= frozen_at


def test_streams_a_scenario_leaves_silent_generate_nothing_but_take_injections() -> None:
    clock = ManualClock()
    state = TenantState.create(SCENARIOS["realistic"], clock)
    clock.now += 30
    control = ControlApi(state)

    assert control.truth("managedIdentity") == []
    control.inject("managedIdentity", [{"id": "only"}])
    assert [e["id"] for e in control.truth("managedIdentity")] == ["only"]

"""Provisioning, risk detections and alerts in the simulated tenant, driven in process: the
gt/lt rule, records whose versions replace each other while the clock runs, and the budget
of each throttling family."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from exporter.sim import SCENARIOS, changing_records
from exporter.sim.control import ControlApi
from exporter.sim.graph_api import GraphApi
from exporter.sim.messages import Request
from exporter.sim.objects import iso_from_ticks
from exporter.sim.query import EXCLUSIVE, QueryError, parse_filter
from exporter.sim.records import RecordTimeline, UpdateModel, Version
from exporter.sim.sources import COLLECTION_BY_PATH, SOURCES
from exporter.sim.state import TenantState
from exporter.sim.timeline import LatenessBand, LatenessModel, to_ticks_ceil, to_ticks_floor

PROVISIONING = "/v1.0/auditLogs/provisioning"
RISK = "/v1.0/identityProtection/riskDetections"
ALERTS = "/v1.0/security/alerts_v2"
# The field each collection's window runs on, and the source behind it.
CHANGING = {
    RISK: ("lastUpdatedDateTime", "riskDetections"),
    ALERTS: ("lastUpdateDateTime", "alerts"),
}
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class ManualClock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Tenant:
    clock: ManualClock
    state: TenantState
    graph: GraphApi
    token: str

    @property
    def control(self) -> ControlApi:
        return ControlApi(self.state)

    def get(self, target: str) -> tuple[int, Any, dict[str, str]]:
        request = Request("GET", target, {"authorization": f"Bearer {self.token}"})
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        response = self.graph.serve(request, COLLECTION_BY_PATH[parts.path], query)
        return response.status, json.loads(response.body), dict(response.headers)

    def query(self, path: str, params: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        return self.get(f"{path}?{urlencode(params)}")

    def walk(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        status, page, _ = self.query(path, params)
        while True:
            assert status == 200, page
            yield from page["value"]
            if "@odata.nextLink" not in page:
                return
            link = urlsplit(page["@odata.nextLink"])
            status, page, _ = self.get(link.path + "?" + link.query)


def make_tenant(scenario_name: str = "test", unthrottled: bool = True) -> Tenant:
    clock = ManualClock()
    scenario = dataclasses.replace(SCENARIOS[scenario_name], history=120.0)
    state = TenantState.create(scenario, clock)
    if unthrottled:
        for throttle in state.throttles.values():
            throttle.set_budget(1_000_000, 1.0)
    graph = GraphApi.of_state(state, lambda: "https://sim.test", lambda: "https://sim.test/tenant")
    clock.now += 30
    return Tenant(clock, state, graph, state.tokens.issue()[0])


@pytest.fixture
def tenant() -> Tenant:
    return make_tenant()


# -- provisioning: gt and lt only ------------------------------------------------------------


def test_gt_and_lt_bounds_are_exclusive_to_the_tick() -> None:
    text = "activityDateTime gt 2026-01-01T00:00:00Z and activityDateTime lt 2026-01-01T00:00:01Z"

    bounds = parse_filter(text, "activityDateTime", operators=EXCLUSIVE)

    assert bounds.ge == to_ticks_floor(T0) + 1
    assert bounds.le == to_ticks_ceil(T0 + 1) - 1


@pytest.mark.parametrize(
    "text",
    [
        "activityDateTime ge 2026-01-01T00:00:00Z",
        "activityDateTime gt 2026-01-01T00:00:00Z and activityDateTime le 2026-01-02T00:00:00Z",
    ],
)
def test_provisioning_refuses_ge_and_le_naming_what_it_takes(text: str) -> None:
    with pytest.raises(QueryError, match=r"operator '[gl]e' is not supported.*'gt' and 'lt'"):
        parse_filter(text, "activityDateTime", operators=EXCLUSIVE)


def test_the_other_collections_refuse_gt_as_they_always_did() -> None:
    with pytest.raises(QueryError, match="expected 'createdDateTime ge <DateTimeOffset>'"):
        parse_filter("createdDateTime gt 2026-01-01T00:00:00Z", "createdDateTime")


def test_provisioning_serves_exactly_the_events_strictly_inside_gt_lt(tenant: Tenant) -> None:
    low, high = tenant.clock.now - 100, tenant.clock.now - 20
    params = {
        "$filter": f"activityDateTime gt {iso(low)} and activityDateTime lt {iso(high)}",
        "$top": "37",
    }

    served = list(tenant.walk(PROVISIONING, params))

    visible = {
        e["id"]
        for e in tenant.control.truth("provisioning")
        if low < e["event_time"] < high and e["available_at"] <= tenant.clock.now
    }
    ids = [o["id"] for o in served]
    assert len(ids) == len(set(ids)) and set(ids) == visible and len(visible) > 50
    times = [o["activityDateTime"] for o in served]
    assert times == sorted(times, reverse=True)


def test_provisioning_answers_ge_with_graphs_400_envelope(tenant: Tenant) -> None:
    status, body, _ = tenant.query(
        PROVISIONING, {"$filter": f"activityDateTime ge {iso(tenant.clock.now - 60)}"}
    )

    assert status == 400
    assert body["error"]["code"] == "BadRequest"
    assert "'ge' is not supported" in body["error"]["message"]
    assert body["error"]["innerError"]["request-id"]


def test_provisioning_objects_have_graphs_shape(tenant: Tenant) -> None:
    params = {"$filter": f"activityDateTime gt {iso(tenant.clock.now - 100)}"}
    served = list(tenant.walk(PROVISIONING, params))

    statuses = Counter(o["provisioningStatusInfo"]["status"] for o in served)
    assert statuses["success"] > statuses["failure"] > 0
    for event in served:
        assert event["servicePrincipal"]["id"] and event["jobId"].count(".") == 2
        assert event["provisioningAction"] in ("create", "update", "delete", "disable", "other")
        assert {s["provisioningStepType"] for s in event["provisioningSteps"]} <= {
            "import",
            "scoping",
            "export",
        }
        error = event["provisioningStatusInfo"]["errorInformation"]
        assert (error is not None) == (event["provisioningStatusInfo"]["status"] == "failure")


# -- records that change ---------------------------------------------------------------------


def test_page_size_is_checked_against_each_collections_maximum(tenant: Tenant) -> None:
    since = {"$filter": f"lastUpdatedDateTime ge {iso(tenant.clock.now - 60)}"}

    assert tenant.query(RISK, {**since, "$top": "500"})[0] == 200
    status, body, _ = tenant.query(RISK, {**since, "$top": "501"})
    assert status == 400 and "between 1 and 500" in body["error"]["message"]
    window = {"$filter": f"createdDateTime ge {iso(tenant.clock.now - 60)}", "$top": "1000"}
    assert tenant.query("/v1.0/auditLogs/signIns", window)[0] == 200


@pytest.mark.parametrize("path", [RISK, ALERTS])
def test_only_the_update_time_can_be_filtered(tenant: Tenant, path: str) -> None:
    status, body, _ = tenant.query(
        path, {"$filter": f"createdDateTime ge {iso(tenant.clock.now - 60)}"}
    )

    assert status == 400 and "cannot be filtered" in body["error"]["message"]


def served_versions(tenant: Tenant, path: str, since: float) -> list[dict[str, Any]]:
    field, _ = CHANGING[path]
    return list(tenant.walk(path, {"$filter": f"{field} ge {iso(since)}", "$top": "50"}))


@pytest.mark.parametrize("path", [RISK, ALERTS])
def test_a_query_serves_each_records_current_version_once(tenant: Tenant, path: str) -> None:
    field, source = CHANGING[path]
    tenant.clock.now += 60
    now = tenant.clock.now

    served = served_versions(tenant, path, now - 150)

    ids = [o["id"] for o in served]
    assert len(ids) == len(set(ids)), "a record served twice in one result set"
    current = {
        (v["id"], iso_from_ticks(v["update_ticks"]))
        for v in tenant.control.truth(source)
        if v["available_at"] <= now
        and (v["superseded_at"] is None or v["superseded_at"] > now)
        and v["update_time"] >= now - 150
    }
    assert {(o["id"], o[field]) for o in served} == current
    assert len(current) > 20


@pytest.mark.parametrize("path", [RISK, ALERTS])
def test_every_version_is_served_while_it_is_current_then_never_again(
    tenant: Tenant, path: str
) -> None:
    field, source = CHANGING[path]
    start = tenant.clock.now
    seen: dict[tuple[str, str], list[float]] = {}
    while tenant.clock.now < start + 90:
        for event in served_versions(tenant, path, start - 200):
            seen.setdefault((event["id"], event[field]), []).append(tenant.clock.now)
        tenant.clock.now += 1.0
    end = tenant.clock.now - 1.0

    truth = tenant.control.truth(source)
    owed = {
        (v["id"], iso_from_ticks(v["update_ticks"])): v
        for v in truth
        if v["update_time"] >= start - 200
        and v["available_at"] <= end
        and (v["superseded_at"] is None or v["superseded_at"] > start)
    }
    assert set(seen) == set(owed)
    changed = [v for v in owed.values() if v["version"] > 0 and v["available_at"] > start]
    assert len(changed) > 10, "few records changed while the clock ran"
    for key, polls in seen.items():
        version = owed[key]
        assert polls == [p for p in polls if p >= version["available_at"]]
        replaced = version["superseded_at"]
        assert replaced is None or max(polls) < replaced, f"{key} served after it was replaced"


def test_each_version_stays_current_at_least_the_models_least_gap() -> None:
    updates = UpdateModel(max_updates=4, min_gap=5.0, mean_gap=3.0)
    lateness = LatenessModel((LatenessBand(1.0, 0.1, 60.0),), max_lateness=60.0)
    records = RecordTimeline(
        rate=3.0,
        lateness=lateness,
        updates=updates,
        start=T0,
        history=0.0,
        rng=random.Random(7),
        make_id=str,
    )

    truth = records.truth(T0 + 600)

    assert Counter(v["version"] for v in truth)[4] > 0
    for version in truth:
        assert version["available_at"] >= version["update_time"]
        assert version["available_at"] - version["update_time"] <= 60.0 + 1e-6
        if version["superseded_at"] is not None:
            assert version["superseded_at"] - version["available_at"] >= 5.0 - 1e-6
    ticks = [v["update_time"] for v in truth]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)


def test_versions_of_a_record_share_id_and_creation_and_move_on() -> None:
    created = to_ticks_floor(T0)
    versions = [Version(5, n, created, created + n * 10**8) for n in range(4)]

    alerts = [changing_records.alert(1, v) for v in versions]
    risks = [changing_records.risk_detection(1, v) for v in versions]

    assert [a["status"] for a in alerts] == ["new", "inProgress", "resolved", "resolved"]
    assert alerts[0]["classification"] is None and alerts[2]["classification"]
    assert alerts[0]["assignedTo"] is None and alerts[1]["assignedTo"]
    assert [len(a["comments"]) for a in alerts] == [0, 0, 0, 1]
    assert risks[0]["riskState"] == "atRisk" and risks[0]["riskDetail"] == "none"
    for kind, field in ((alerts, "lastUpdateDateTime"), (risks, "lastUpdatedDateTime")):
        assert len({o["id"] for o in kind}) == 1
        assert len({o[field] for o in kind}) == 4
        created_field = "createdDateTime" if kind is alerts else "detectedDateTime"
        assert {o[created_field] for o in kind} == {kind[0][field]}


def test_same_seed_same_history_and_no_injection_into_changing_records() -> None:
    first, second = make_tenant(), make_tenant()
    first.clock.now += 60
    second.clock.now += 60

    assert first.control.truth("riskDetections") == second.control.truth("riskDetections")
    with pytest.raises(ValueError, match="records that change"):
        first.control.inject("riskDetections", [{"id": "x"}])


def test_freeze_ends_every_change_and_keeps_the_last_version_served(tenant: Tenant) -> None:
    frozen_at = tenant.control.freeze()
    tenant.clock.now += 300

    truth = tenant.control.truth("riskDetections")
    served = served_versions(tenant, RISK, frozen_at - 400)

    assert max(v["update_time"] for v in truth) <= frozen_at
    current = {
        v["id"]
        for v in truth
        if v["available_at"] <= frozen_at
        and (v["superseded_at"] is None or v["superseded_at"] > frozen_at)
    }
    assert {o["id"] for o in served} == current


# -- a budget per throttling family ---------------------------------------------------------


def test_identity_protection_allows_one_request_a_second_and_429s_without_retry_after() -> None:
    tenant = make_tenant(unthrottled=False)
    since = {"$filter": f"lastUpdatedDateTime ge {iso(tenant.clock.now - 60)}"}

    first = tenant.query(RISK, since)
    second = tenant.query(RISK, since)
    tenant.clock.now += 1.0
    third = tenant.query(RISK, since)

    assert first[0] == 200 and third[0] == 200
    status, body, headers = second
    assert status == 429 and body["error"]["code"] == "TooManyRequests"
    assert "Retry-After" not in headers
    assert tenant.control.stats()["throttled_by_family"]["identityProtection"] == 1


def test_each_family_draws_from_its_own_budget() -> None:
    tenant = make_tenant(unthrottled=False)
    tenant.state.throttle.set_budget(2, 10.0)
    signins = {"$filter": f"createdDateTime ge {iso(tenant.clock.now - 5)}", "$top": "1"}
    alerts = {"$filter": f"lastUpdateDateTime ge {iso(tenant.clock.now - 5)}", "$top": "1"}

    assert [tenant.query("/v1.0/auditLogs/signIns", signins)[0] for _ in range(3)] == [
        200,
        200,
        429,
    ]
    answers = [tenant.query(ALERTS, alerts) for _ in range(151)]
    assert [a[0] for a in answers[:150]] == [200] * 150
    assert answers[150][0] == 429 and "Retry-After" in answers[150][2]
    assert tenant.query(RISK, {"$filter": alerts["$filter"].replace("Update", "Updated")})[0] == 200
    by_family = tenant.control.stats()["throttled_by_family"]
    assert by_family == {"identityReports": 1, "identityProtection": 0, "securityAlerts": 1}


def test_other_apps_can_take_part_of_the_tenants_identity_protection_budget() -> None:
    tenant = make_tenant(unthrottled=False)
    since = {"$filter": f"lastUpdatedDateTime ge {iso(tenant.clock.now - 60)}"}
    tenant.control.set_faults(identity_protection_budget=[1, 3.0])

    statuses = []
    for _ in range(6):
        statuses.append(tenant.query(RISK, since)[0])
        tenant.clock.now += 1.0

    assert statuses == [200, 429, 429, 200, 429, 429]
    with pytest.raises(ValueError, match="budget must be"):
        tenant.control.set_faults(identity_protection_budget=[0, 1.0])


def test_the_entra_scenario_serves_every_stream_and_the_demo_leaves_the_new_ones_silent() -> None:
    entra, demo = make_tenant("entra"), make_tenant("demo")
    for tenant in (entra, demo):
        tenant.clock.now += 600

    assert all(entra.control.truth(name) for name in SOURCES)
    assert Counter(v["version"] for v in entra.control.truth("alerts"))[3] > 0
    assert not any(demo.control.truth(n) for n in ("provisioning", "riskDetections", "alerts"))


def test_a_version_is_replaced_only_once_its_successor_exists(tenant: Tenant) -> None:
    frozen_at = tenant.control.freeze()
    tenant.clock.now += 600

    truth = tenant.control.truth("alerts")

    last = {}
    for version in truth:
        last[version["id"]] = version
    assert all(v["superseded_at"] is None for v in last.values())
    replaced = [v for v in truth if v["superseded_at"] is not None]
    assert replaced and all(v["superseded_at"] > v["available_at"] for v in replaced)
    assert max(v["update_time"] for v in truth) <= frozen_at


@pytest.mark.parametrize("top", [1, 7, 64])
def test_paging_changing_records_neither_skips_nor_repeats_a_version(
    tenant: Tenant, top: int
) -> None:
    tenant.clock.now += 60
    since = {"$filter": f"lastUpdatedDateTime ge {iso(tenant.clock.now - 120)}"}

    whole = [(o["id"], o["lastUpdatedDateTime"]) for o in tenant.walk(RISK, since)]
    paged = [
        (o["id"], o["lastUpdatedDateTime"]) for o in tenant.walk(RISK, {**since, "$top": str(top)})
    ]

    assert paged == whole and len(whole) > 100
    assert [t for _, t in whole] == sorted((t for _, t in whole), reverse=True)

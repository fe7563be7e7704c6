"""The simulated tenant over real HTTPS, driven by real MSAL and requests."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import pytest
import requests

from exporter.sim import SCENARIOS, SimulatedTenant
from exporter.sim.serve import parse_listen

REPO = Path(__file__).resolve().parents[2]
LONG_AGO = "2000-01-01T00:00:00Z"


class ManualClock:
    """A clock the test moves by hand, starting at the real time (certificates need it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class VerifyingHttpClient:
    """MSAL's http_client, pinned to the simulator's CA on every call (not via the session,
    because REQUESTS_CA_BUNDLE would override a session-level verify)."""

    def __init__(self, session: requests.Session, ca_file: Path) -> None:
        self.session, self.ca_file = session, str(ca_file)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.get(url, verify=self.ca_file, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.session.post(url, verify=self.ca_file, **kwargs)

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tenant(tmp_path: Path, clock: ManualClock) -> Iterator[SimulatedTenant]:
    sim = SimulatedTenant(SCENARIOS["test"], tmp_path / "sim", clock=clock)
    sim.start("127.0.0.1", 0)
    yield sim
    sim.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def msal_app(tenant: SimulatedTenant, session: requests.Session, secret: str) -> Any:
    return msal.ConfidentialClientApplication(
        tenant.client_id,
        client_credential=secret,
        authority=f"{tenant.base_url}/{tenant.tenant_id}",
        instance_discovery=False,
        http_client=VerifyingHttpClient(session, tenant.ca_file),
    )


@pytest.fixture
def token(tenant: SimulatedTenant, session: requests.Session) -> str:
    result = msal_app(tenant, session, tenant.client_secret).acquire_token_for_client(
        scopes=[f"{tenant.base_url}/.default"]
    )
    return result["access_token"]


def graph_get(
    tenant: SimulatedTenant,
    session: requests.Session,
    token: str | None,
    url: str,
    params: dict[str, str] | None = None,
) -> requests.Response:
    headers = {"client-request-id": "0000-test"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if not url.startswith("https://"):
        url = tenant.base_url + url
    return session.get(url, params=params, headers=headers, verify=str(tenant.ca_file), timeout=10)


def test_msal_acquires_a_token_and_a_wrong_secret_gets_aadsts_7000215(
    tenant: SimulatedTenant, session: requests.Session
) -> None:
    scopes = [f"{tenant.base_url}/.default"]

    good = msal_app(tenant, session, tenant.client_secret).acquire_token_for_client(scopes=scopes)
    bad = msal_app(tenant, session, "not-the-secret").acquire_token_for_client(scopes=scopes)

    assert good["token_type"] == "Bearer"
    assert good["expires_in"] == 3599
    assert good["token_source"] == "identity_provider"
    assert bad["error"] == "invalid_client"
    assert bad["error_codes"] == [7000215]
    assert bad["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert tenant.stats()["tokens_issued"] == 1


def test_token_faults_answer_the_configured_aadsts_error_then_recover(
    tenant: SimulatedTenant, session: requests.Session
) -> None:
    scopes = [f"{tenant.base_url}/.default"]
    tenant.set_faults(token_failures=1, token_error=700016)

    failed = msal_app(tenant, session, tenant.client_secret).acquire_token_for_client(scopes=scopes)
    recovered = msal_app(tenant, session, tenant.client_secret).acquire_token_for_client(
        scopes=scopes
    )

    assert failed["error"] == "unauthorized_client"
    assert failed["error_codes"] == [700016]
    assert "access_token" in recovered


def test_token_endpoint_rejects_a_foreign_scope_and_accepts_a_client_assertion(
    tenant: SimulatedTenant, session: requests.Session
) -> None:
    url = f"{tenant.base_url}/{tenant.tenant_id}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": tenant.client_id}
    header = "eyJhbGciOiJSUzI1NiJ9"  # {"alg":"RS256"}
    payload = "eyJzdWIiOiJ4In0"  # {"sub":"x"}
    assertion = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": f"{header}.{payload}.c2ln",
    }

    wrong_scope = session.post(
        url,
        data={
            **form,
            "client_secret": tenant.client_secret,
            "scope": "https://graph.microsoft.com/.default",
        },
        verify=str(tenant.ca_file),
    )
    with_assertion = session.post(
        url,
        data={**form, **assertion, "scope": f"{tenant.base_url}/.default"},
        verify=str(tenant.ca_file),
    )

    assert wrong_scope.status_code == 400
    assert wrong_scope.json()["error"] == "invalid_scope"
    assert with_assertion.status_code == 200
    assert with_assertion.json()["access_token"]


def test_result_set_is_fixed_at_the_first_page_newest_first_without_duplicates(
    tenant: SimulatedTenant, session: requests.Session, token: str, clock: ManualClock
) -> None:
    asof = clock.now
    params = {"$filter": f"createdDateTime ge {LONG_AGO}", "$top": "200"}
    pages: list[dict[str, Any]] = [
        graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", params).json()
    ]
    clock.now += 60  # events that become visible now must not leak into this result set
    while "@odata.nextLink" in pages[-1]:
        next_link = pages[-1]["@odata.nextLink"]
        assert next_link.startswith(f"{tenant.base_url}/v1.0/auditLogs/signIns?")
        assert "$skiptoken=" in next_link and "$top=200" in next_link
        pages.append(graph_get(tenant, session, token, next_link).json())
    fresh = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", params).json()

    served = [event for page in pages for event in page["value"]]
    ids = [event["id"] for event in served]
    expected = sorted(
        (e for e in tenant.truth("signins") if e["available_at"] <= asof),
        key=lambda e: e["event_time"],
        reverse=True,
    )
    assert len(pages) > 3
    assert all(len(page["value"]) == 200 for page in pages[:-1])
    assert pages[0]["@odata.context"].endswith("/$metadata#auditLogs/signIns")
    assert ids == [e["id"] for e in expected]
    assert len(set(ids)) == len(ids)
    times = [event["createdDateTime"] for event in served]
    assert times == sorted(times, reverse=True)
    assert fresh["value"][0]["createdDateTime"] > times[0]


def test_filter_bounds_are_exact_at_any_fractional_precision(
    tenant: SimulatedTenant, session: requests.Session, token: str
) -> None:
    page = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", {"$top": "5"}).json()
    stamp = page["value"][2]["createdDateTime"]  # 7 fractional digits
    assert len(stamp.split(".")[1]) == 8
    longer = stamp[:-1] + "00Z"
    shorter_ceil = stamp[:-2] + "Z"  # drops the last digit: rounds the bound down

    exact = graph_get(
        tenant,
        session,
        token,
        "/v1.0/auditLogs/signIns",
        {"$filter": f"createdDateTime ge {longer} and createdDateTime le {stamp}"},
    ).json()
    around = graph_get(
        tenant,
        session,
        token,
        "/v1.0/auditLogs/signIns",
        {"$filter": f"createdDateTime ge {shorter_ceil} and createdDateTime le {longer}"},
    ).json()

    assert [e["id"] for e in exact["value"]] == [page["value"][2]["id"]]
    assert page["value"][2]["id"] in [e["id"] for e in around["value"]]
    assert "@odata.nextLink" not in exact


def test_directory_audits_filter_on_activity_date_time(
    tenant: SimulatedTenant, session: requests.Session, token: str
) -> None:
    path = "/v1.0/auditLogs/directoryAudits"

    good = graph_get(tenant, session, token, path, {"$filter": f"activityDateTime ge {LONG_AGO}"})
    wrong_field = graph_get(
        tenant, session, token, path, {"$filter": f"createdDateTime ge {LONG_AGO}"}
    )

    assert good.status_code == 200
    records = good.json()["value"]
    assert records and all(r["id"].startswith("Directory_") for r in records)
    assert {"initiatedBy", "targetResources", "activityDisplayName"} <= records[0].keys()
    assert wrong_field.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"$filter": "createdDateTime ge '2026-01-01T00:00:00Z'"},
        {"$filter": "createdDateTime gt 2026-01-01T00:00:00Z"},
        {"$filter": "createdDateTime ge 2026-01-01T00:00:00"},
        {"$filter": "createdDateTime ge 2026-02-30T00:00:00Z"},
        {"$filter": "userId eq 'x'"},
        {"$top": "1001"},
        {"$top": "0"},
        {"$orderby": "createdDateTime"},
        {"$skiptoken": "bm90LW91cnM"},
    ],
)
def test_unsupported_queries_get_400_in_the_graph_error_envelope(
    tenant: SimulatedTenant, session: requests.Session, token: str, params: dict[str, str]
) -> None:
    response = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", params)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["message"]
    inner = error["innerError"]
    assert inner["client-request-id"] == "0000-test"
    assert inner["request-id"] and not inner["date"].endswith("Z")


def test_graph_requires_a_live_token_it_issued(
    tenant: SimulatedTenant, session: requests.Session, token: str, clock: ManualClock
) -> None:
    path = "/v1.0/auditLogs/signIns"

    assert graph_get(tenant, session, None, path).status_code == 401
    assert graph_get(tenant, session, "forged", path).status_code == 401
    assert graph_get(tenant, session, token, path).status_code == 200
    clock.now += 3600
    expired = graph_get(tenant, session, token, path)

    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
    stats = json.dumps(tenant.stats())
    assert token not in stats
    assert (
        f"{tenant.base_url.removeprefix('https://')}{path}" in tenant.stats()["authorized_requests"]
    )


def test_budget_is_a_sliding_window_answered_with_429_and_retry_after(
    tenant: SimulatedTenant, session: requests.Session, token: str, clock: ManualClock
) -> None:
    tenant.set_faults(budget=[3, 10])
    path = "/v1.0/auditLogs/signIns"
    statuses = []
    for _ in range(3):
        statuses.append(graph_get(tenant, session, token, path, {"$top": "1"}).status_code)
        clock.now += 1.5

    throttled = graph_get(tenant, session, token, path, {"$top": "1"})
    again = graph_get(tenant, session, token, "/v1.0/auditLogs/directoryAudits", {"$top": "1"})
    clock.now += float(throttled.headers["Retry-After"])
    after_waiting = graph_get(tenant, session, token, path, {"$top": "1"})

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "5.500"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert throttled.json()["error"]["innerError"]["status"] == "429"
    assert again.status_code == 429  # the budget is per tenant, across both endpoints
    assert after_waiting.status_code == 200  # 429s did not consume budget
    assert tenant.stats()["throttled"] == 2


def test_retry_after_can_be_an_http_date(
    tenant: SimulatedTenant, session: requests.Session, token: str, clock: ManualClock
) -> None:
    tenant.set_faults(budget=[1, 10], retry_after_style="http-date")
    graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", {"$top": "1"})

    throttled = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", {"$top": "1"})

    assert throttled.status_code == 429
    when = email.utils.parsedate_to_datetime(throttled.headers["Retry-After"]).timestamp()
    assert clock.now + 9 < when <= clock.now + 11


def test_truncated_json_fault_then_a_good_page(
    tenant: SimulatedTenant, session: requests.Session, token: str
) -> None:
    tenant.set_faults(malformed_pages=1)
    path = "/v1.0/auditLogs/signIns"

    broken = graph_get(tenant, session, token, path, {"$top": "50"})
    healthy = graph_get(tenant, session, token, path, {"$top": "50"})

    assert broken.status_code == 200
    with pytest.raises(ValueError):
        json.loads(broken.content)
    assert len(healthy.json()["value"]) == 50


def test_foreign_next_link_fault_points_elsewhere_with_the_same_query(
    tenant: SimulatedTenant, session: requests.Session, token: str
) -> None:
    tenant.set_faults(foreign_next_link=1, foreign_next_link_url="https://127.0.0.1:9")
    path = "/v1.0/auditLogs/signIns"

    poisoned = graph_get(tenant, session, token, path, {"$top": "10"}).json()
    clean = graph_get(tenant, session, token, path, {"$top": "10"}).json()

    assert poisoned["@odata.nextLink"].startswith("https://127.0.0.1:9/v1.0/auditLogs/signIns?")
    assert "$skiptoken=" in poisoned["@odata.nextLink"]
    assert clean["@odata.nextLink"].startswith(tenant.base_url)


def test_server_errors_are_injected_once_each(
    tenant: SimulatedTenant, session: requests.Session, token: str
) -> None:
    tenant.set_faults(graph_503=1, graph_503_retry_after=1.25, graph_500=1)
    path = "/v1.0/auditLogs/signIns"

    unavailable = graph_get(tenant, session, token, path, {"$top": "1"})
    internal = graph_get(tenant, session, token, path, {"$top": "1"})
    fine = graph_get(tenant, session, token, path, {"$top": "1"})

    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "1.250")
    assert unavailable.json()["error"]["code"] == "serviceNotAvailable"
    assert internal.status_code == 500
    assert fine.status_code == 200


def test_control_endpoints_faults_incident_freeze_truth_and_stats(
    tenant: SimulatedTenant, session: requests.Session, token: str, clock: ManualClock
) -> None:
    base, verify = f"{tenant.base_url}/_sim", str(tenant.ca_file)
    unknown = session.post(f"{base}/faults", json={"no_such_knob": 1}, verify=verify)
    incident = session.post(
        f"{base}/faults", json={"incident": [clock.now, clock.now + 30]}, verify=verify
    )
    clock.now += 20
    during = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", {"$top": "1"}).json()
    clock.now += 10
    after = graph_get(tenant, session, token, "/v1.0/auditLogs/signIns", {"$top": "1"}).json()
    frozen_at = session.post(f"{base}/freeze", verify=verify).json()["frozen_at"]
    clock.now += 300
    truth = session.get(f"{base}/truth", params={"source": "directoryAudits"}, verify=verify).json()
    stats = session.get(f"{base}/stats", verify=verify).json()

    assert unknown.status_code == 400 and "no_such_knob" in unknown.json()["error"]
    assert incident.status_code == 200
    newest_during = during["value"][0]["createdDateTime"]
    newest_after = after["value"][0]["createdDateTime"]
    assert newest_after > newest_during
    assert frozen_at == pytest.approx(clock.now - 300)
    assert truth and max(e["event_time"] for e in truth) <= frozen_at
    assert {"id", "event_time", "available_at"} == truth[0].keys()
    assert stats["requests"]["signIns"]["200"] == 2
    assert stats["requests"]["sim"]["400"] == 1


def test_parse_listen_accepts_ipv4_and_bracketed_ipv6() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1")


def test_serve_prints_one_json_line_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from exporter.sim.serve import serve; "
        f"sys.exit(serve('127.0.0.1:0', 'test', Path({str(tmp_path)!r}), sys.stdout))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        response = requests.get(
            f"{announced['base_url']}/_sim/stats", verify=announced["ca_file"], timeout=10
        )
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)

    assert announced.keys() == {
        "base_url",
        "ca_file",
        "tenant_id",
        "client_id",
        "client_secret",
        "scenario",
    }
    assert announced["scenario"] == "test"
    assert response.status_code == 200
    assert status == 0


def test_a_tenant_scale_scenario_serves_sign_ins_of_about_11_5_kb(
    tmp_path: Path, clock: ManualClock, session: requests.Session
) -> None:
    scenario = dataclasses.replace(SCENARIOS["test"], tenant_scale_signins=True)
    sim = SimulatedTenant(scenario, tmp_path / "sim", clock=clock)
    sim.start("127.0.0.1", 0)
    try:
        token = msal_app(sim, session, sim.client_secret).acquire_token_for_client(
            scopes=[f"{sim.base_url}/.default"]
        )["access_token"]
        response = graph_get(sim, session, token, "/v1.0/auditLogs/signIns", {"$top": "200"})
    finally:
        sim.stop()
    assert response.status_code == 200
    events = response.json()["value"]
    sizes = [len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) for e in events]
    assert len(sizes) == 200
    assert 10_500 < sum(sizes) / len(sizes) < 12_500
    assert all(len(e["appliedConditionalAccessPolicies"]) == 18 for e in events)

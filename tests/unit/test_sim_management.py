"""The simulated Office 365 Management Activity API, driven in process on a hand-moved clock:
subscriptions, the contentCreated listing and its NextPageUri, late and duplicated records,
the 24-hour and 7-day rules, AF429 as a 403, admin-disabled subscriptions, expired blobs."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from exporter.sim.management_api import FEEDS, ManagementApi
from exporter.sim.management_feed import CONTENT_TYPES, FeedSettings, management_time
from exporter.sim.messages import Request, Response
from exporter.sim.state import TokenStore

GUID = "6f4b5b8e-9d3a-4c1e-8a2b-0c1d2e3f4a5b"
AAD = "Audit.AzureActiveDirectory"
T0 = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_api(settings: FeedSettings = FEEDS["test"]) -> tuple[ManagementApi, Clock, str]:
    clock = Clock()
    tokens = TokenStore(threading.RLock(), clock, 10**8)
    token, _ = tokens.issue()
    management = ManagementApi(
        ("contoso.onmicrosoft.com", GUID),
        GUID,
        lambda: "https://sim",
        clock,
        tokens,
        settings,
        1,
    )
    return management, clock, token


@pytest.fixture
def api() -> tuple[ManagementApi, Clock, str]:
    return make_api()


def call(
    api: tuple[ManagementApi, Clock, str],
    method: str,
    operation: str,
    given: dict[str, str] | None = None,
    *,
    publisher: bool = True,
    prefix: str = "/api/v1.0",
    **params: str,
) -> Response:
    management, _, token = api
    query = {**(given or {}), **params}
    if publisher:
        query["PublisherIdentifier"] = GUID
    target = f"{prefix}/{GUID}/activity/feed/{operation}?{urlencode(query)}"
    parts = urlsplit(target)
    request = Request(method, target, {"authorization": f"Bearer {token}"})
    return management.serve(request, parts.path, parse_qs(parts.query))


def error_code(response: Response) -> str:
    return str(json.loads(response.body)["error"]["code"])


def window(start: float, end: float) -> dict[str, str]:
    return {"startTime": management_time(start), "endTime": management_time(end)}


def list_all(api: tuple[ManagementApi, Clock, str], start: float, end: float) -> list[Any]:
    """Every entry of a listing, following NextPageUri as a collector would."""
    response = call(api, "GET", "subscriptions/content", {"contentType": AAD, **window(start, end)})
    entries = []
    while True:
        assert response.status == 200, response.body
        entries += json.loads(response.body)
        next_uri = response.headers.get("NextPageUri")
        if next_uri is None:
            return entries
        parts = urlsplit(next_uri)
        assert parts.path.startswith("/api/v1/")  # as Microsoft's reference shows it
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        operation = parts.path.split("/activity/feed/")[1]
        response = call(api, "GET", operation, query, prefix="/api/v1")


def test_listing_needs_a_subscription_and_starting_twice_answers_af20024(api: Any) -> None:
    assert error_code(call(api, "GET", "subscriptions/content", contentType=AAD)) == "AF20022"

    started = call(api, "POST", "subscriptions/start", contentType=AAD)
    again = call(api, "POST", "subscriptions/start", contentType=AAD)

    assert started.status == 200 and json.loads(started.body)["status"] == "enabled"
    assert again.status == 400 and error_code(again) == "AF20024"


def test_blobs_are_listed_by_content_created_and_hold_late_and_duplicated_records(
    api: Any,
) -> None:
    management, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 120
    entries = list_all(api, T0, clock.now)
    seen: dict[str, int] = {}
    late_in_later_blob = False
    newest_record = ""  # the newest CreationTime of the blobs listed before
    for entry in entries:
        assert set(entry) == {
            "contentType",
            "contentId",
            "contentUri",
            "contentCreated",
            "contentExpiration",
        }
        blob = call(api, "GET", urlsplit(entry["contentUri"]).path.split("/activity/feed/")[1])
        records = json.loads(blob.body)
        for record in records:
            seen[record["Id"]] = seen.get(record["Id"], 0) + 1
            assert not record["CreationTime"].endswith("Z")  # UTC without a zone suffix
            assert record["CreationTime"] <= entry["contentCreated"][:19]
            late_in_later_blob |= record["CreationTime"] < newest_record
        newest_record = max([newest_record, *(r["CreationTime"] for r in records)])
    assert len(entries) > management._settings.page_size  # so NextPageUri was followed
    assert any(count > 1 for count in seen.values())  # the same record in several blobs
    assert late_in_later_blob  # a later blob holds older records
    truth = json.loads(management.control(Request("GET", "", {}), "truth", {}).body)
    listable = {
        r["Id"]
        for r in truth
        if any(b["exists"] and b["listable_at"] <= clock.now for b in r["blobs"])
    }
    assert set(seen) == listable


def test_field_order_differs_between_copies_of_a_record(api: Any) -> None:
    _, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 300
    orders: dict[str, set[tuple[str, ...]]] = {}
    for entry in list_all(api, T0, clock.now):
        operation = urlsplit(entry["contentUri"]).path.split("/activity/feed/")[1]
        for record in json.loads(call(api, "GET", operation).body):
            orders.setdefault(record["Id"], set()).add(tuple(record))
    assert any(len(keys) > 1 for keys in orders.values())


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (-25 * 3600.0, 0.0),  # more than 24 hours
        (-7 * 86400.0 - 60, -7 * 86400.0 + 3600),  # starts more than 7 days back
        (0.0, -60.0),  # ends before it starts
    ],
)
def test_a_window_over_24_hours_or_older_than_7_days_is_af20055(
    api: Any, start: float, end: float
) -> None:
    _, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    response = call(
        api,
        "GET",
        "subscriptions/content",
        {"contentType": AAD, **window(clock.now + start, clock.now + end)},
    )
    assert response.status == 400 and error_code(response) == "AF20055"


def test_only_one_bound_is_af20055(api: Any) -> None:
    call(api, "POST", "subscriptions/start", contentType=AAD)
    response = call(
        api, "GET", "subscriptions/content", contentType=AAD, startTime=management_time(T0)
    )
    assert error_code(response) == "AF20055"


def test_a_throttle_is_a_403_with_af429_and_requests_without_publisher_are_counted(
    api: Any,
) -> None:
    management, _, _ = api
    management.set_faults(af429=2)
    first = call(api, "POST", "subscriptions/start", contentType=AAD, publisher=False)
    second = call(api, "POST", "subscriptions/start", contentType=AAD)
    third = call(api, "POST", "subscriptions/start", contentType=AAD)

    assert (first.status, error_code(first)) == (403, "AF429")
    assert "PublisherId=00000000-0000-0000-0000-000000000000" in first.body.decode()
    assert second.status == 403 and third.status == 200
    assert management.stats()["requests"]["without_publisher"] == 1


def test_the_budget_throttles_past_its_rate(api: Any) -> None:
    management, _, _ = api
    management.set_faults(budget=[3, 60])
    statuses = [call(api, "GET", "subscriptions/list").status for _ in range(5)]
    assert statuses == [200, 200, 200, 403, 403]


def test_an_admin_disabled_subscription_is_af20023_and_its_content_is_gone(api: Any) -> None:
    management, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 30
    management.admin(AAD, disabled=True)
    listing = call(
        api, "GET", "subscriptions/content", {"contentType": AAD, **window(T0, clock.now)}
    )
    start = call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 30
    gap = (clock.now - 29, clock.now - 1)
    management.admin(AAD, disabled=False)
    clock.now += 60

    assert error_code(listing) == "AF20023" and error_code(start) == "AF20023"
    created = [e["contentCreated"][:19] for e in list_all(api, T0, clock.now)]
    assert created
    assert not [c for c in created if management_time(gap[0]) <= c <= management_time(gap[1])]


def test_an_expired_blob_is_af20051(api: Any) -> None:
    management, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 30
    entry = list_all(api, T0, clock.now)[0]
    operation = urlsplit(entry["contentUri"]).path.split("/activity/feed/")[1]
    management.set_faults(expire_fetches=1)

    expired = call(api, "GET", operation)
    assert expired.status == 400 and error_code(expired) == "AF20051"
    assert call(api, "GET", operation).status == 400  # gone for good
    assert entry["contentId"] not in {e["contentId"] for e in list_all(api, T0, clock.now)}


def test_the_expiry_fault_expires_only_a_blob_whose_loss_loses_a_record() -> None:
    """A test that expires a blob must lose a record: one whose every record a duplicate
    blob still holds would lose nothing, and the test would prove less than it says."""
    every_record_twice = make_api(dataclasses.replace(FEEDS["test"], duplicate_share=1.0))
    management, clock, _ = every_record_twice
    call(every_record_twice, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 30
    entries = list_all(every_record_twice, T0, clock.now)
    management.set_faults(expire_fetches=1)
    for entry in entries:
        operation = urlsplit(entry["contentUri"]).path.split("/activity/feed/")[1]
        assert call(every_record_twice, "GET", operation).status == 200


def test_content_expires_seven_days_after_it_was_created(api: Any) -> None:
    _, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 30
    entry = list_all(api, T0, clock.now)[0]
    operation = urlsplit(entry["contentUri"]).path.split("/activity/feed/")[1]
    clock.now += 7 * 86400
    assert error_code(call(api, "GET", operation)) == "AF20051"


def test_a_foreign_next_page_uri_can_be_injected(api: Any) -> None:
    management, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 60
    management.set_faults(foreign_next_page=1)
    response = call(
        api, "GET", "subscriptions/content", {"contentType": AAD, **window(T0, clock.now)}
    )
    assert response.headers["NextPageUri"].startswith("https://manage.example.invalid/")


def test_a_request_without_a_valid_token_is_refused(api: Any) -> None:
    management, _, _ = api
    target = f"/api/v1.0/{GUID}/activity/feed/subscriptions/list"
    response = management.serve(
        Request("GET", target, {"authorization": "Bearer nope"}), target, {}
    )
    assert response.status == 401


def test_every_content_type_can_be_subscribed(api: Any) -> None:
    for content_type in CONTENT_TYPES:
        assert call(api, "POST", "subscriptions/start", contentType=content_type).status == 200
    listed = json.loads(call(api, "GET", "subscriptions/list").body)
    assert {s["contentType"] for s in listed if s["status"] == "enabled"} == set(CONTENT_TYPES)


def test_freeze_stops_new_content(api: Any) -> None:
    management, clock, _ = api
    call(api, "POST", "subscriptions/start", contentType=AAD)
    clock.now += 20
    frozen = management.freeze()
    before = list_all(api, T0, clock.now + 1)
    clock.now += 60
    after = list_all(api, T0, clock.now)
    assert all(e["contentCreated"][:19] <= management_time(frozen) for e in after)
    assert len(after) >= len(before)

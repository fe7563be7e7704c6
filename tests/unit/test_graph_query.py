"""What a Graph source asks for: every sign-in stream, extra filters, changing records, budgets.

The first page's URL is the whole contract with Graph, so these tests read it back with
``parse_qs`` and check each clause; the config side checks that every mistake names its key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.components import COMPONENTS
from exporter.config import Config, SourceConfig, parse_config
from exporter.errors import ConfigError
from exporter.graph import key_events
from exporter.graph_query import check_filter, first_page_url, format_filter_time

GRAPH = "https://graph.microsoft.com"
START, END = 1_800_000_000.25, 1_800_003_600.75


def config(*sources: dict[str, Any], **top: Any) -> Config:
    document = {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "c",
        "client_secret": "s",
        "sources": list(sources),
        "sinks": [{"host": "127.0.0.1", "port": 514}],
        **top,
    }
    return parse_config(document, {}, COMPONENTS)


def source(**keys: Any) -> SourceConfig:
    return config({"name": "s", **keys}).sources[0]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, strict_parsing=True)


def error_of(**keys: Any) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        source(**keys)
    return error.value


def test_sign_in_event_types_select_the_beta_streams_of_the_window() -> None:
    noninteractive = source(sign_in_event_types=["nonInteractiveUser"])
    url = first_page_url(GRAPH, noninteractive, START, END)
    assert urlsplit(url).path == "/beta/auditLogs/signIns"
    window = (
        f"createdDateTime ge {format_filter_time(START)} and "
        f"createdDateTime le {format_filter_time(END, round_up=True)}"
    )
    assert query_of(url)["$filter"] == [
        f"{window} and signInEventTypes/any(t: t eq 'nonInteractiveUser')"
    ]
    several = source(sign_in_event_types=["servicePrincipal", "managedIdentity"])
    assert query_of(first_page_url(GRAPH, several, START, None))["$filter"][0].endswith(
        "signInEventTypes/any(t: t eq 'servicePrincipal' or t eq 'managedIdentity')"
    )
    pinned = source(endpoint="/v1.0/auditLogs/signIns", sign_in_event_types=["interactiveUser"])
    assert urlsplit(first_page_url(GRAPH, pinned, START, END)).path == "/v1.0/auditLogs/signIns"


def test_a_config_without_the_new_keys_asks_exactly_what_it_asked_before() -> None:
    plain = source(endpoint="/v1.0/auditLogs/signIns", page_size=50)
    assert query_of(first_page_url(GRAPH, plain, START, END)) == {
        "$filter": [
            f"createdDateTime ge {format_filter_time(START)} and "
            f"createdDateTime le {format_filter_time(END, round_up=True)}"
        ],
        "$top": ["50"],
    }


def test_an_extra_filter_is_anded_in_parentheses() -> None:
    failed = source(endpoint="/v1.0/auditLogs/signIns", filter="status/errorCode ne 0 or x eq 1")
    clause = query_of(first_page_url(GRAPH, failed, START, None))["$filter"][0]
    assert clause.endswith(" and (status/errorCode ne 0 or x eq 1)")
    assert clause.startswith(f"createdDateTime ge {format_filter_time(START)}")


@pytest.mark.parametrize(
    ("clause", "problem"),
    [
        ("", "empty"),
        ("appId eq 'a", "unclosed quote"),
        ("(a eq 1", "'(' without"),
        ("a eq 1)", "')' without"),
        ("a eq 1&$top=5", "'&'"),
        ("a eq 1#", "'#'"),
        ("a eq\n1", "control"),
    ],
)
def test_a_filter_that_would_break_the_query_names_the_key(clause: str, problem: str) -> None:
    error = error_of(endpoint="/v1.0/auditLogs/signIns", filter=clause)
    assert error.key == "sources[0].filter"
    assert problem in str(error)


def test_quotes_and_parentheses_inside_string_literals_are_text() -> None:
    assert check_filter("userDisplayName eq 'O''Brien (admin)'") is None
    assert check_filter("(a eq 'x)') and (b eq '(')") is None
    assert check_filter("a eq 'it''s") == "has an unclosed quote"


@given(st.lists(st.sampled_from(["(", ")", "'", "a", " "]), max_size=12))
def test_an_accepted_filter_keeps_the_window_clause_intact(chars: list[str]) -> None:
    """Whatever a filter holds, once accepted it cannot close the window's clause early."""
    clause = "".join(chars)
    if check_filter(clause) is not None:
        return
    depth, quoted = 0, False
    for char in clause:
        quoted = not quoted if char == "'" else quoted
        depth += 0 if quoted else {"(": 1, ")": -1}.get(char, 0)
        assert depth >= 0
    assert depth == 0 and not quoted


@pytest.mark.parametrize(
    ("keys", "key", "problem"),
    [
        ({"sign_in_event_types": ["interactive"]}, "sign_in_event_types", "expected any of"),
        ({"sign_in_event_types": []}, "sign_in_event_types", "at least one"),
        ({"sign_in_event_types": ["servicePrincipal"] * 2}, "sign_in_event_types", "twice"),
        (
            {"endpoint": "/v1.0/auditLogs/directoryAudits", "sign_in_event_types": ["x"]},
            "sign_in_event_types",
            "expected any of",
        ),
        (
            {
                "endpoint": "/v1.0/auditLogs/directoryAudits",
                "sign_in_event_types": ["servicePrincipal"],
            },
            "sign_in_event_types",
            "only applies to /auditLogs/signIns",
        ),
        ({"endpoint": "/v1.0/auditLogs/signIns", "time_field": "t le 2000"}, "time_field", ""),
        ({"endpoint": "/v1.0/auditLogs/signIns", "update_field": "a&b"}, "update_field", ""),
        (
            {"endpoint": "/v1.0/identityProtection/riskDetections", "page_size": 1000},
            "page_size",
            "between 1 and 500",
        ),
        ({}, "endpoint", "is required"),
    ],
)
def test_each_mistake_in_a_graph_source_names_its_key(
    keys: dict[str, Any], key: str, problem: str
) -> None:
    error = error_of(**keys)
    assert error.key == f"sources[0].{key}"
    assert problem in str(error)


def test_provisioning_is_asked_with_gt_and_lt_never_narrower_than_the_window() -> None:
    provisioning = source(endpoint="/v1.0/auditLogs/provisioning")
    (clause,) = query_of(first_page_url(GRAPH, provisioning, START, END))["$filter"]
    assert clause == (
        f"activityDateTime gt {format_filter_time(START - 1)} and "
        f"activityDateTime lt {format_filter_time(END + 1, round_up=True)}"
    )


def test_each_endpoint_draws_from_its_own_budget_family() -> None:
    loaded = config(
        {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"},
        {"name": "audits", "endpoint": "/v1.0/auditLogs/directoryAudits"},
        {"name": "risk", "endpoint": "/v1.0/identityProtection/riskDetections"},
        {"name": "alerts", "endpoint": "/v1.0/security/alerts_v2"},
        budget={"requests": 50, "reserve": "20%"},
    )
    families = {s.name: s.settings.budget_family for s in loaded.sources}
    assert families == {
        "signins": "identity_reports",
        "audits": "identity_reports",
        "risk": "identity_protection",
        "alerts": "security_alerts",
    }
    reports, protection, alerts = (
        loaded.budgets[f] for f in ("identity_reports", "identity_protection", "security_alerts")
    )
    assert (reports.requests, reports.per) == (50, 10.0), "the budget section sets the reports'"
    assert (protection.requests, protection.per) == (1, 1.0)
    assert (alerts.requests, alerts.per) == (150, 60.0)
    assert loaded.budget_of(loaded.sources[0]) is reports
    assert {b.reserve for b in loaded.budgets.values()} == {0.2}
    assert loaded.sources[2].page_size == 500, "risk detections serve at most 500 a page"


def test_with_an_update_field_each_version_of_a_record_is_delivered_once() -> None:
    risk = source(
        endpoint="/v1.0/identityProtection/riskDetections", update_field="lastUpdatedDateTime"
    )
    (clause,) = query_of(first_page_url(GRAPH, risk, START, None))["$filter"]
    assert clause == f"lastUpdatedDateTime ge {format_filter_time(START)}"

    record = {
        "id": "6a1b2c3d-0000-4000-8000-00000000abcd",
        "detectedDateTime": "2027-01-15T08:00:00Z",
        "lastUpdatedDateTime": "2027-01-15T08:00:00Z",
        "riskState": "atRisk",
    }
    updated = {**record, "lastUpdatedDateTime": "2027-01-15T09:30:00Z", "riskState": "remediated"}
    first, again, second = key_events(
        [record, dict(record), updated], "detectedDateTime", "lastUpdatedDateTime"
    )
    assert first.key == again.key, "an unchanged record is the same version: never re-sent"
    assert first.key != second.key, "a new version is a new event for the SIEM"
    assert second.event_time == first.event_time + 5400, "the window runs on the update time"
    assert second.header_time == first.header_time, "the header keeps when it was detected"
    (plain,) = key_events([record], "detectedDateTime")
    assert plain.key != first.key and plain.event_time == first.event_time

"""Refusals only a person can fix: a missing permission or licence (403), a refused query (400).

Each must say what to do in one log line, count under a bounded reason, keep the source
unready, and be asked again slowly without losing the stretch of time it could not read.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from exporter.clock import ManualClock
from exporter.errors import GraphAccessDenied, GraphBadRequest, GraphHTTPError
from exporter.metrics import Health
from tests.unit.test_graph_client import START, ScriptedSession, answer, client_for, count
from tests.unit.test_tiers_simulated import HOUR, make_events, run_loop, waits_after_outage
from tests.unit.test_tiers_simulated import START as LOOP_START

DENIED = (
    b'{"error": {"code": "Authorization_RequestDenied", '
    b'"message": "Insufficient privileges to complete the operation."}}'
)
UNLICENSED = (
    b'{"error": {"code": "Authentication_RequestFromNonPremiumTenantOrB2CTenant", '
    b'"message": "Neither tenant is B2C or tenant doesn\'t have premium license"}}'
)
BAD_FILTER = b'{"error": {"code": "BadRequest", "message": "Invalid filter clause"}}'


@pytest.mark.parametrize(
    ("body", "reason", "advice"),
    [
        (DENIED, "forbidden", "AuditLog.Read.All and Directory.Read.All"),
        (UNLICENSED, "unlicensed", "Microsoft Entra ID P1 or P2"),
    ],
)
def test_a_403_names_the_permission_or_licence_once_and_is_not_retried_at_once(
    caplog: pytest.LogCaptureFixture, body: bytes, reason: str, advice: str
) -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(403, body))
    client, _, registry = client_for(session, clock)
    with caplog.at_level(logging.ERROR), pytest.raises(GraphAccessDenied) as refused:
        next(client.pages(START - 120))
    assert refused.value.reason == reason
    assert refused.value.retry_after == 300.0, "an administrator's fix is asked for slowly"
    assert len(session.calls) == 1, "no retry inside the query: the schedule asks again later"
    assert count(registry, "api_errors", source="signins", reason=reason) == 1
    (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert advice in line.getMessage() and "signins" in line.getMessage()


def test_a_400_names_the_source_and_the_filter_graph_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(400, BAD_FILTER))
    client, _, registry = client_for(session, clock)
    with caplog.at_level(logging.ERROR), pytest.raises(GraphBadRequest):
        next(client.pages(START - 120))
    assert count(registry, "api_errors", source="signins", reason="bad_request") == 1
    (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "signins" in line.getMessage()
    assert "createdDateTime ge 2027-01-15T07:58:00Z" in line.getMessage()


def test_any_other_refusal_keeps_its_status_and_graphs_words() -> None:
    clock = ManualClock(START)
    session = ScriptedSession(clock, answer(404, b'{"error": {"code": "ResourceNotFound"}}'))
    client, _, registry = client_for(session, clock)
    with pytest.raises(GraphHTTPError) as refused:
        next(client.pages(START - 120))
    assert type(refused.value) is GraphHTTPError and refused.value.status == 404
    assert count(registry, "api_errors", source="signins", reason="http_error") == 1


def test_a_refused_source_is_unready_until_a_page_arrives_again() -> None:
    now = [START]
    health = Health({"signins": 60.0, "audits": 60.0}, clock=lambda: now[0])
    for source in ("signins", "audits"):
        health.progressed(source)
    assert health.ready() == (True, "ok")
    health.blocked("signins", "forbidden")
    assert health.ready() == (False, "refused: signins (forbidden)")
    health.progressed("audits")
    assert not health.ready()[0], "another source's progress does not clear it"
    health.progressed("signins")
    assert health.ready() == (True, "ok")


def test_a_permission_granted_later_loses_nothing_of_the_refused_stretch(tmp_path: Path) -> None:
    """While Graph refuses, every tier is asked again only every five minutes; once an
    administrator grants the permission, what became visible meanwhile arrives promptly."""
    duration = 3 * HOUR
    refused = (LOOP_START + HOUR, LOOP_START + 2 * HOUR)
    events = make_events(random.Random(11), duration)
    denied = GraphAccessDenied(403, "Authorization_RequestDenied", "", unlicensed=False)
    loop, api, delivery, _ = run_loop(events, duration, tmp_path, down=refused, down_error=denied)

    tiers = len(loop.schedule.tiers)
    refusals = api.down_requests
    assert refusals <= (HOUR / 300 + 1) * (tiers + 1), "refusals were retried too often"
    assert not [i for i, n in delivery.delivered.items() if n > 1], "an event was sent twice"
    waits = waits_after_outage(loop, events, delivery, refused)
    assert max(waits) < 15 * 60, f"events refused meanwhile waited {max(waits) / 60:.0f} min"

"""How the simulated tenant writes a page: each event's compact JSON, joined into Graph's
envelope, the same bytes whether the frozen benchmark keeps each event's JSON or not, and
gzip'd, as Graph does, for a client that accepts it."""

from __future__ import annotations

import dataclasses
import gzip
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from exporter.sim import SCENARIOS, objects
from exporter.sim.control import ControlApi
from exporter.sim.graph_api import GraphApi, accepts_gzip
from exporter.sim.messages import Request, Response
from exporter.sim.sources import COLLECTION_BY_PATH
from exporter.sim.state import TenantState

V1 = "/v1.0/auditLogs/signIns"
START = 1_790_000_000.0


def _tenant(keep: bool) -> tuple[TenantState, GraphApi, str]:
    scenario = dataclasses.replace(
        SCENARIOS["test"], history=60.0, tenant_scale_signins=True, keep_encoded_events=keep
    )
    state = TenantState.create(scenario, lambda: START)
    state.throttle.set_budget(1_000_000, 1.0)
    graph = GraphApi.of_state(state, lambda: "https://sim.test", lambda: "https://sim.test/tenant")
    return state, graph, state.tokens.issue()[0]


def _bodies(graph: GraphApi, token: str) -> list[bytes]:
    """Every page's raw body of one query, by its next links."""
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START - 120))
    target = f"{V1}?{urlencode({'$filter': f'createdDateTime ge {since}', '$top': '7'})}"
    bodies = []
    while True:
        parts = urlsplit(target)
        request = Request("GET", target, {"authorization": f"Bearer {token}"})
        query = parse_qs(parts.query, keep_blank_values=True)
        response = graph.serve(request, COLLECTION_BY_PATH[parts.path], query)
        assert response.status == 200, response.body
        bodies.append(response.body)
        link = json.loads(response.body).get("@odata.nextLink")
        if link is None:
            return bodies
        target = urlsplit(link).path + "?" + urlsplit(link).query


def test_a_page_is_graphs_envelope_around_each_events_compact_json() -> None:
    state, graph, token = _tenant(keep=False)
    ControlApi(state).inject("signIns", [{"id": "odd\ud800", "n": 1}])

    bodies = _bodies(graph, token)
    pages = [json.loads(body) for body in bodies]

    assert len(pages) > 2
    for body, page in zip(bodies, pages, strict=True):
        # the standard library's compact rendering of the same page, byte for byte; a lone
        # surrogate, which UTF-8 cannot hold, as the escape Graph would send
        compact = json.dumps(page, ensure_ascii=False, separators=(",", ":"))
        assert body == compact.encode("utf-8", "backslashreplace")
        assert list(page)[:2] == ["@odata.context", "value"]
    assert not all(body.isascii() for body in bodies)
    served = [event for page in pages for event in page["value"]]
    assert {"id": "odd\ud800", "n": 1} in served


def test_keeping_each_events_json_serves_the_same_bytes_and_renders_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[int] = []
    make = objects.tenant_scale_signin

    def counted(seed: int, seq: int, ticks: int) -> dict[str, Any]:
        rendered.append(seq)
        return make(seed, seq, ticks)

    monkeypatch.setattr(objects, "tenant_scale_signin", counted)
    _, plain, plain_token = _tenant(keep=False)
    _, kept, kept_token = _tenant(keep=True)

    served = _bodies(plain, plain_token)
    assert _bodies(plain, plain_token) == served
    assert len(rendered) == 2 * len(set(rendered)) > 0
    rendered.clear()

    assert _bodies(kept, kept_token) == served
    assert _bodies(kept, kept_token) == served
    assert sorted(rendered) == sorted(set(rendered)) and rendered


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
    ],
)
def test_gzip_is_sent_to_a_client_that_accepts_it(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_a_page_travels_gzipd_to_a_client_that_asks_and_inflates_to_the_same_bytes() -> None:
    _, graph, token = _tenant(keep=True)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START - 120))
    target = f"{V1}?{urlencode({'$filter': f'createdDateTime ge {since}', '$top': '50'})}"
    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
    collection = COLLECTION_BY_PATH[V1]

    def fetch(accept: str) -> Response:
        headers = {"authorization": f"Bearer {token}", "accept-encoding": accept}
        return graph.serve(Request("GET", target, headers), collection, query)

    plain, packed = fetch("identity"), fetch("gzip, deflate")

    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert len(packed.body) * 5 < len(plain.body)

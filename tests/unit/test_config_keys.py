"""Keys declared once: the parser, its errors and check-config's printer all come from one place.

Each source API and sink type declares its keys beside its adapter (``GRAPH_SOURCE`` in
``graph``, ``SYSLOG_SINK`` in ``syslog_sink``) and is registered in ``components``. These
tests hold the two consequences that matter: what check-config prints is itself a config
that means exactly the same (nothing declared is left out or printed differently), and a
new kind plugs in with its own keys, checks and secrets without any change to ``config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exporter.components import COMPONENTS
from exporter.config import Components, effective_config, parse_config
from exporter.errors import ConfigError
from exporter.syslog import FACILITIES
from exporter.yamlconf import (
    Keys,
    Kind,
    Secret,
    Values,
    choice_key,
    int_key,
    join_key,
    substitute,
    text_key,
)

SECRET = "s3cr3t-value"
DURATIONS = st.sampled_from(["30s", "90s", "1m", "5m", "1h", "2h", "1d", "7d", "250ms"])


def document(sources: list[dict[str, Any]], sinks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": SECRET,
        "sources": sources,
        "sinks": sinks,
    }


@st.composite
def graph_sources(draw: st.DrawFn, index: int) -> dict[str, Any]:
    source: dict[str, Any] = {
        "name": f"source{index}",
        "endpoint": draw(
            st.sampled_from(
                [
                    "/v1.0/auditLogs/signIns",
                    "/beta/auditLogs/directoryAudits",
                    "/v1.0/auditLogs/provisioning",
                ]
            )
        ),
    }
    for key in ("poll_interval", "lookback", "max_lookback", "rescan_floor"):
        if draw(st.booleans()):
            source[key] = draw(DURATIONS)
    if draw(st.booleans()):
        source["page_size"] = draw(st.integers(1, 1000))
    if draw(st.booleans()):
        source["time_field"] = draw(st.sampled_from(["createdDateTime", "activityDateTime"]))
    if draw(st.booleans()):
        source["api"] = "graph"
    if draw(st.booleans()):
        source["filter"] = draw(st.sampled_from(["status/errorCode ne 0", "appId eq 'a(b)'"]))
    if draw(st.booleans()):
        source["update_field"] = "lastUpdatedDateTime"
    if draw(st.booleans()):
        source["endpoint"] = "/beta/auditLogs/signIns"
        source["sign_in_event_types"] = draw(
            st.lists(
                st.sampled_from(["interactiveUser", "nonInteractiveUser", "servicePrincipal"]),
                min_size=1,
                unique=True,
            )
        )
    return source


@st.composite
def syslog_sinks(draw: st.DrawFn, index: int) -> dict[str, Any]:
    sink: dict[str, Any] = {
        "name": f"sink{index}",
        "host": draw(st.sampled_from(["siem.example.com", "10.0.0.7", "::1"])),
        "port": draw(st.integers(1, 65535)),
    }
    options = {
        "protocol": st.sampled_from(["tcp", "tls", "udp", "relp"]),
        "relp_tls": st.booleans(),
        "framing": st.sampled_from(["octet-counting", "lf"]),
        "facility": st.sampled_from(sorted(FACILITIES)),
        "hostname": st.sampled_from(["collector-1", "node.example"]),
        "type": st.just("syslog"),
    }
    for key, values in options.items():
        if draw(st.booleans()):
            sink[key] = draw(values)
    return sink


@given(st.data())
def test_what_check_config_prints_is_a_config_that_means_the_same(data: st.DataObject) -> None:
    sources = [data.draw(graph_sources(i)) for i in range(data.draw(st.integers(1, 3)))]
    sinks = [data.draw(syslog_sinks(i)) for i in range(data.draw(st.integers(1, 2)))]
    try:
        config = parse_config(document(sources, sinks), {}, COMPONENTS)
    except ConfigError:
        return  # e.g. lookback not longer than poll_interval: the error tests cover those
    printed = effective_config(config, COMPONENTS)
    assert printed["client_secret"] == "***"
    printed["client_secret"] = SECRET
    assert parse_config(printed, {}, COMPONENTS) == config


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    url: str
    token: Secret
    retries: int
    format: str


def _webhook(values: Values, path: str) -> WebhookSettings:
    if not values["url"].startswith("https://"):
        raise ConfigError(join_key(path, "url"), "expected an https:// URL")
    return WebhookSettings(**values)


WEBHOOK = Kind(
    Keys(
        text_key("url", required=True),
        text_key("token", required=True, secret=True),
        int_key("retries", 3, low=0, high=10),
        choice_key("format", ("json", "cef"), "json"),
    ),
    _webhook,
)
WITH_WEBHOOK = Components(
    sources=COMPONENTS.sources, sinks={**COMPONENTS.sinks, "webhook": WEBHOOK}
)
GRAPH_SOURCE = {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}


def test_a_new_sink_type_plugs_in_with_its_own_keys_checks_and_secrets() -> None:
    sink = {"type": "webhook", "name": "hook", "url": "https://hook.example", "token": "tok-123"}
    config = parse_config(document([GRAPH_SOURCE], [sink]), {}, WITH_WEBHOOK)
    assert config.sinks[0].settings == WebhookSettings(
        "https://hook.example", Secret("tok-123"), 3, "json"
    )
    printed = effective_config(config, WITH_WEBHOOK)
    assert printed["sinks"] == [
        {
            "type": "webhook",
            "name": "hook",
            "url": "https://hook.example",
            "token": "***",
            "retries": 3,
            "format": "json",
        }
    ]
    assert "tok-123" not in repr(config) and "tok-123" not in str(printed)


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"port": 514}, "sinks[0].port", "unknown key"),
        ({"retries": 11}, "sinks[0].retries", "between 0 and 10"),
        ({"format": "xml"}, "sinks[0].format", "expected one of json, cef"),
        ({"url": "http://hook.example"}, "sinks[0].url", "https://"),
        ({"token": None}, "sinks[0].token", "is required"),
        ({"type": "kafka"}, "sinks[0].type", "expected one of syslog, webhook"),
    ],
)
def test_a_new_sink_types_mistakes_name_its_keys(
    change: dict[str, Any], key: str, message: str
) -> None:
    sink = {"type": "webhook", "url": "https://hook.example", "token": "tok-123", **change}
    with pytest.raises(ConfigError) as error:
        parse_config(document([GRAPH_SOURCE], [sink]), {}, WITH_WEBHOOK)
    assert error.value.key == key
    assert message in str(error.value)
    assert "tok-123" not in str(error.value)


def test_a_sink_type_not_registered_is_refused_by_name() -> None:
    sink = {"type": "webhook", "url": "https://hook.example", "token": "tok-123"}
    with pytest.raises(ConfigError) as error:
        parse_config(document([GRAPH_SOURCE], [sink]), {}, COMPONENTS)
    assert error.value.key == "sinks[0].type"
    assert "expected one of syslog" in str(error.value)


def test_the_readme_config_example_is_a_valid_config() -> None:
    """README's example is what a newcomer copies: it must parse, every stream with it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("### Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    document = substitute(yaml.safe_load(example), "", {"GRAPH_CLIENT_SECRET": SECRET})
    del document["ca_bundle"]  # both name files of the reader's machine
    del document["sinks"][0]["ca_file"]
    config = parse_config(document, {}, COMPONENTS)
    streams = {s.name: s.settings.sign_in_event_types for s in config.sources}
    assert streams["noninteractive"] == ("nonInteractiveUser",)
    assert set(streams["workloads"]) == {"servicePrincipal", "managedIdentity"}
    assert {s.settings.endpoint for s in config.sources if s.settings.sign_in_event_types} == {
        "/beta/auditLogs/signIns"
    }

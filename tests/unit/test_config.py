"""Config parsing: every mistake names its key; every secret stays masked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.components import COMPONENTS
from exporter.config import (
    effective_config,
    load_config,
    parse_config,
)
from exporter.credentials import ClientSecretCredential
from exporter.errors import ConfigError
from exporter.yamlconf import format_duration, parse_duration


def minimal(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": "s3cr3t-value",
        "sources": [{"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}],
        "sinks": [{"type": "syslog", "host": "siem.example.com", "port": 6514}],
    }
    document.update(overrides)
    return document


def error_key(document: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        parse_config(document, environ or {}, COMPONENTS)
    return error.value.key


def test_defaults_are_filled_in() -> None:
    config = parse_config(minimal(), {}, COMPONENTS)
    source = config.sources[0]
    assert source.settings.time_field == "createdDateTime"
    assert (source.page_size, source.poll_interval, source.lookback) == (1000, 60.0, 3600.0)
    assert source.max_lookback == 7 * 86400
    assert config.sinks[0].name == "syslog"
    assert config.sinks[0].settings.framing == "octet-counting"
    assert config.sinks[0].settings.facility == 16
    assert config.sinks[0].settings.max_message_size is None
    assert config.dead_letter_max_mb == 100
    assert config.graph_url == "https://graph.microsoft.com"
    assert config.metrics_listen == ("0.0.0.0", 9795)
    assert config.budget.rate == 0.5
    assert config.budget.reserve == 0.1 and config.budget.usable == pytest.approx(0.45)
    assert source.rescan_floor == 4 * 3600
    for written, share in (("25%", 0.25), (0.2, 0.2), (0, 0.0)):
        assert (
            parse_config(minimal(budget={"reserve": written}), {}, COMPONENTS).budget.reserve
            == share
        )
    assert (
        parse_config(
            minimal(sources=[{"name": "audits", "endpoint": "/v1.0/auditLogs/directoryAudits"}]),
            {},
            COMPONENTS,
        )
        .sources[0]
        .settings.time_field
        == "activityDateTime"
    )


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "blue"}, "colour"),
        (
            {
                "sources": [
                    {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns", "lookback": "1x"}
                ]
            },
            "sources[0].lookback",
        ),
        (
            {
                "sources": [
                    {"name": "signins", "endpoint": "/v1.0/auditLogs/signIns", "page_size": 5000}
                ]
            },
            "sources[0].page_size",
        ),
        (
            {
                "sources": [
                    {"name": "s", "endpoint": "/v1.0/x", "lookback": "30s", "poll_interval": "1m"}
                ]
            },
            "sources[0].time_field",
        ),
        (
            {
                "sources": [
                    {
                        "name": "s",
                        "endpoint": "/v1.0/auditLogs/signIns",
                        "lookback": "30s",
                        "poll_interval": "1m",
                    }
                ]
            },
            "sources[0].lookback",
        ),
        ({"sinks": [{"host": "h", "port": "514"}]}, "sinks[0].port"),
        ({"sinks": [{"host": "h", "port": 514, "protocol": "http"}]}, "sinks[0].protocol"),
        ({"sinks": [{"host": "h", "port": 514, "colour": 1}]}, "sinks[0].colour"),
        ({"sinks": [{"host": "h", "port": 514, "relp_tls": True}]}, "sinks[0].relp_tls"),
        (
            {"sinks": [{"host": "h", "port": 514, "protocol": "relp", "ca_file": __file__}]},
            "sinks[0].ca_file",
        ),
        (
            {"sinks": [{"host": "h", "port": 514, "protocol": "relp", "framing": "lf"}]},
            "sinks[0].framing",
        ),
        ({"graph_url": "http://graph.microsoft.com"}, "graph_url"),
        ({"authority_host": "http://login.example"}, "authority_host"),
        ({"inband_warnings": "yes"}, "inband_warnings"),
        ({"metrics": {"listen": "nowhere"}}, "metrics.listen"),
        ({"client_secret_file": "/nonexistent/secret"}, "client_secret_file"),
        ({"sources": []}, "sources"),
        ({"budget": {"reserve": "95%"}}, "budget.reserve"),
        ({"budget": {"reserve": -0.1}}, "budget.reserve"),
        ({"budget": {"reserve": "some"}}, "budget.reserve"),
        ({"state": {"dead_letter_max_mb": 0}}, "state.dead_letter_max_mb"),
        ({"state": {"dead_letter_max_mb": "1GB"}}, "state.dead_letter_max_mb"),
        (
            {"sinks": [{"host": "h", "port": 514, "max_message_size": 100}]},
            "sinks[0].max_message_size",
        ),
        (
            {
                "sources": [
                    {
                        "name": "signins",
                        "endpoint": "/v1.0/auditLogs/signIns",
                        "rescan_floor": "30s",
                    }
                ]
            },
            "sources[0].rescan_floor",
        ),
    ],
)
def test_each_mistake_names_its_key(change: dict[str, Any], key: str) -> None:
    assert error_key(minimal(**change)) == key


def test_relp_picks_the_acknowledged_transport_with_tls_and_its_ca() -> None:
    """``protocol: relp`` selects the RELP client; ``relp_tls`` and ``ca_file`` reach it."""
    from exporter.components import open_sink
    from exporter.relp_transport import RelpTransport

    sink = {"host": "h", "port": 2514, "protocol": "relp", "relp_tls": True, "ca_file": __file__}
    config = parse_config(minimal(sinks=[sink]), {}, COMPONENTS)
    settings = config.sinks[0].settings
    assert (settings.protocol, settings.relp_tls, settings.ca_file) == ("relp", True, __file__)
    adapter = open_sink(config.sinks[0])
    assert isinstance(adapter.transport, RelpTransport)  # type: ignore[attr-defined]
    assert adapter.transport.endpoint == "h:2514"  # type: ignore[attr-defined]


def test_exactly_one_credential() -> None:
    document = minimal()
    del document["client_secret"]
    assert error_key(document) == "client_secret"
    assert error_key(minimal(workload_identity=True)) == "workload_identity"


def test_workload_identity_takes_ids_from_the_environment(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJ.fake.jwt")
    document = minimal(workload_identity=True)
    for key in ("client_secret", "tenant_id", "client_id"):
        del document[key]
    config = parse_config(
        document,
        {
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            "AZURE_TENANT_ID": "t-guid",
            "AZURE_CLIENT_ID": "c-guid",
            "AZURE_AUTHORITY_HOST": "https://login.example.us/",
        },
        COMPONENTS,
    )
    assert (config.tenant_id, config.client_id) == ("t-guid", "c-guid")
    assert config.authority_host == "https://login.example.us"


def test_environment_substitution_and_missing_variable(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    document = minimal(client_secret="${GRAPH_SECRET}", tenant_id="$${literal}")
    path.write_text(yaml.safe_dump(document))
    config = load_config(path, COMPONENTS, {"GRAPH_SECRET": "from-env"})
    assert isinstance(config.credential, ClientSecretCredential)
    assert config.credential.secret.reveal() == "from-env"
    assert config.tenant_id == "${literal}"
    with pytest.raises(ConfigError) as error:
        load_config(path, COMPONENTS, {})
    assert error.value.key == "client_secret"
    assert "GRAPH_SECRET" in str(error.value)


def test_secrets_never_show(tmp_path: Path) -> None:
    config = parse_config(minimal(), {}, COMPONENTS)
    assert "s3cr3t-value" not in repr(config)
    assert "s3cr3t-value" not in str(effective_config(config, COMPONENTS))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "s3cr3t-value" not in result.stdout + result.stderr
    assert "client_secret: '***'" in result.stdout


@given(st.floats(min_value=0.001, max_value=1e7))
def test_durations_round_trip(seconds: float) -> None:
    exact = round(seconds * 1000) / 1000
    assert parse_duration(format_duration(exact)) == pytest.approx(exact)


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [
            "tenant_id",
            "sources",
            "sinks",
            "metrics",
            "state",
            "budget",
            "log_level",
            "certificate",
            "inband_warnings",
            "graph_url",
        ]
    ),
    yaml_values,
)
def test_any_garbage_value_is_a_config_error_never_a_crash(key: str, value: Any) -> None:
    try:
        parse_config(minimal(**{key: value}), {}, COMPONENTS)
    except ConfigError as error:
        assert error.key.split(".")[0].split("[")[0] in (key, "client_secret", "(file)")


def test_unparsable_yaml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("tenant_id: [unclosed\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr

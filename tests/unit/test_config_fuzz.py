"""Hostile config files: whatever the text, the answer is a Config or one ConfigError line.

tests/unit/test_config.py checks that each known mistake names its key; this file throws
generated garbage at the whole path a user's file takes (bytes, YAML parser, ``${VAR}``
substitution, validation, the printed error) and, with a few real ``check-config`` and
``run`` processes, checks the promise of the command line: exit 2, exactly one stderr line
naming the key, never a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.cli import one_line
from exporter.components import COMPONENTS
from exporter.config import Config, load_config
from exporter.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "fuzz-secret-value-7f3a"

VALID = f"""\
tenant_id: contoso.onmicrosoft.com
client_id: 11111111-2222-3333-4444-555555555555
client_secret: {SECRET}
sources:
  - name: signins
    endpoint: /v1.0/auditLogs/signIns
    poll_interval: 60s
    lookback: 1h
    max_lookback: 7d
state:
  path: /tmp/siem-exporter-fuzz/state.db
sinks:
  - type: syslog
    host: 127.0.0.1
    port: 6514
    protocol: tcp
metrics:
  listen: 127.0.0.1:9795
budget:
  requests: 5
  per: 10s
log_level: info
"""

# Values that have broken YAML-driven programs before: dates that do not exist, numbers
# too large for a float, NUL and newlines in paths, aliases, tags, deep nesting.
HOSTILE_SCALARS = [
    "2001-02-30",
    "2001-13-01 25:61:61",
    "1e400",
    "9" * 400,
    "9" * 400 + "d",
    "1e400s",
    ".nan",
    "-.inf",
    "0x",
    '"a\\0b"',
    '"line\\nbreak"',
    '"tab\\tand\\u2028sep"',
    '"\\x85next"',
    "!!binary AAA",
    "!!python/object:os.system ls",
    "!!timestamp nope",
    "*undefined_alias",
    "&anchor",
    "'${UNSET_VARIABLE}'",
    "'$${literal}'",
    "'${'",
    "[" * 50 + "]" * 50,
    "{a: {b: {c: {d: [1, {e: null}]}}}}",
    "~",
    "''",
    "yes",
    "-1",
    "65536",
    "'\uff10'",  # fullwidth zero
    "'\u0661\u0662s'",  # Arabic-Indic digits
    "'²s'",
    '"\\udc80"',
    "|\n  multi\n  line",
]
# Every key of the valid file, as (YAML path, line index in VALID); a mutation replaces
# the value on that line, and the error must name that key (or a key it constrains).
KEY_LINES = [
    (index, line.split(":", 1)[0].strip().lstrip("- ").strip())
    for index, line in enumerate(VALID.splitlines())
    if ":" in line and not line.rstrip().endswith(":")
]
# Keys whose value is checked against another's: a bad one may be reported on the other.
RELATED = {
    "poll_interval": {"lookback"},
    "lookback": {"max_lookback"},
    "max_lookback": {"max_lookback"},
    "protocol": {"ca_file"},
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="config-fuzz-") as directory:
        yield Path(directory)


def load_text(workdir: Path, text: str | bytes) -> Config:
    path = workdir / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    return load_config(path, COMPONENTS, {"GRAPH_SECRET": SECRET})


def outcome(workdir: Path, text: str | bytes) -> ConfigError | Config:
    """The Config, or the ConfigError; anything else propagates and fails the test."""
    try:
        return load_text(workdir, text)
    except ConfigError as error:
        return error


# A value that stays on its key's line: YAML also breaks lines at NEL, LS and PS, and a
# value holding one would start a key of its own, which the error then rightly names.
one_line_text = st.text(st.characters(blacklist_characters="\r\n\x85\u2028\u2029"), max_size=30)


def assert_good_error(error: ConfigError) -> None:
    """What the CLI would print: one line, a key, the why, and never the secret."""
    printed = one_line(f"siem-exporter: config error: {error}")
    assert len(printed.splitlines()) == 1
    assert error.key, "a config error must name a key or (file)"
    assert SECRET not in printed


def test_the_unmutated_file_is_valid(workdir: Path) -> None:
    assert isinstance(load_text(workdir, VALID), Config)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KEY_LINES), st.sampled_from(HOSTILE_SCALARS) | one_line_text)
def test_a_hostile_value_names_its_key(
    workdir: Path, key_line: tuple[int, str], value: str
) -> None:
    index, key = key_line
    lines = VALID.splitlines()
    prefix = lines[index].split(":", 1)[0]
    lines[index] = f"{prefix}: {value}"
    result = outcome(workdir, "\n".join(lines) + "\n")
    if isinstance(result, Config):
        return
    assert_good_error(result)
    named = result.key.rsplit(".", 1)[-1].split("[")[0]
    assert named in {key, "(file)", *RELATED.get(key, ())}, (result.key, key, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_edit_of_the_text_is_a_config_or_one_config_error(
    workdir: Path, data: st.DataObject
) -> None:
    text = VALID
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 20))
        insert = data.draw(
            st.sampled_from([*HOSTILE_SCALARS, "\n", ":", "- ", "  ", "\t", "#", "&a", "*a"])
            | st.text(max_size=10)
        )
        text = text[:position] + insert + text[position + cut :]
    result = outcome(workdir, text)
    if isinstance(result, ConfigError):
        assert_good_error(result)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_config_error(workdir: Path, blob: bytes) -> None:
    result = outcome(workdir, blob)
    if isinstance(result, ConfigError):
        assert_good_error(result)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=12) | st.sampled_from(["a\nb", "\x00", "sources", "\u2028"]),
        st.text(max_size=12) | st.integers() | st.none(),
        max_size=4,
    )
)
def test_unknown_keys_with_hostile_names_stay_on_one_line(
    workdir: Path, extra: dict[str, Any]
) -> None:
    document = yaml.safe_load(VALID)
    document.update(extra)
    result = outcome(workdir, yaml.safe_dump(document, allow_unicode=True))
    if isinstance(result, ConfigError):
        assert_good_error(result)


def test_a_binary_secret_file_is_refused_without_echoing_it(workdir: Path) -> None:
    secret_file = workdir / "binary-secret"
    secret_file.write_bytes(b"\xff\xfe" + SECRET.encode())
    text = VALID.replace(f"client_secret: {SECRET}", f"client_secret_file: {secret_file}")
    error = outcome(workdir, text)
    assert isinstance(error, ConfigError) and error.key == "client_secret_file"
    assert_good_error(error)


# A few real processes: the whole path from file to exit status and stderr.
HEAD = "client_id: c\nclient_secret: s\n"
TENANT = "tenant_id: t\n"
SOURCES = "sources: [{name: signins, endpoint: /v1.0/auditLogs/signIns}]\n"
SINKS = "sinks: [{host: 127.0.0.1, port: 514}]\n"
PROCESS_CASES = [
    (HEAD + SOURCES + SINKS + "tenant_id: 2001-02-30\n", "(file)"),
    (HEAD + TENANT + SOURCES + 'sinks: [{host: h, port: 1, "bad\\nkey": 1}]\n', "bad\\nkey"),
    (HEAD + TENANT + SOURCES + SINKS + 'ca_bundle: "/no/such\\nfile"\n', "ca_bundle"),
    (HEAD + TENANT + SOURCES + SINKS + 'ca_bundle: "/nul\\0byte"\n', "ca_bundle"),
    (
        HEAD + TENANT + SINKS + "sources: [{name: s, endpoint: /x, time_field: t, "
        "lookback: " + "9" * 400 + "d}]\n",
        "sources[0].lookback",
    ),
    (HEAD + TENANT + SOURCES + SINKS + "a: " + "[" * 5000 + "]" * 5000 + "\n", "(file)"),
    ((HEAD + SOURCES + SINKS).encode() + b"tenant_id: \xff\xfe\n", "(file)"),
]


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize(("text", "key"), PROCESS_CASES)
def test_the_command_line_exits_2_with_one_line(
    tmp_path: Path, command: str, text: str | bytes, key: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = subprocess.run(
        [sys.executable, "-m", "exporter", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("siem-exporter: config error: ")
    assert key in result.stderr
    assert result.stdout == ""

"""verify's arguments, and the read-only view of the ledger it audits beside a collector."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import pytest

from exporter.components import COMPONENTS
from exporter.config import Config, parse_config
from exporter.errors import StateError
from exporter.ledger import Ledger, LedgerReader
from exporter.verify_args import ArgumentProblem, parse_share, parse_time, read_arguments

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_times_are_iso_8601_and_utc_unless_zoned() -> None:
    assert parse_time("2026-01-01T00:00:00Z", "--from") == NOW
    assert parse_time("2026-01-01", "--from") == NOW
    assert parse_time("2026-01-01T01:00:00+01:00", "--from") == NOW
    assert parse_time("2026-01-01T00:00:00", "--from") == NOW
    with pytest.raises(ArgumentProblem, match=r"^--to: expected an ISO 8601 time"):
        parse_time("yesterday", "--to")


def test_the_share_defaults_to_the_reserve_and_is_bounded() -> None:
    assert parse_share(None, 0.1) == 0.1
    assert parse_share("50%", 0.1) == 0.5
    assert parse_share("1", 0.1) == 1.0
    for bad in ("0%", "150%", "half"):
        with pytest.raises(ArgumentProblem, match=r"^--budget-share: "):
            parse_share(bad, 0.1)
    with pytest.raises(ArgumentProblem, match="reserve is 0%"):
        parse_share(None, 0.0)


def args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "start": "2025-12-31T23:00:00Z",
        "end": "2026-01-01T00:00:00Z",
        "source": None,
        "budget_share": None,
        "siem_export": None,
        "format": "auto",
        "id_field": None,
        "metrics_file": None,
    }
    return argparse.Namespace(**{**values, **overrides})


def config(tmp_path: Path) -> Config:
    document = {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret": "s",
        "sources": [{"name": "signins", "endpoint": "/v1.0/auditLogs/signIns"}],
        "sinks": [{"host": "127.0.0.1", "port": 514}],
        "state": {"path": str(tmp_path / "state.db")},
    }
    return parse_config(document, {}, COMPONENTS)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        ({"end": "2025-12-31T22:00:00Z"}, "--to: must be after --from"),
        ({"end": "2026-01-02T00:00:00Z"}, "--to: is in the future"),
        ({"source": ["nope"]}, "--source: no source 'nope'"),
        ({}, "--siem-export: needed: there is no ledger"),
        ({"siem_export": Path("/nonexistent/export")}, "--siem-export: cannot read"),
    ],
)
def test_each_refusal_names_its_argument(
    tmp_path: Path, overrides: dict[str, object], argument: str
) -> None:
    with pytest.raises(ArgumentProblem) as refused:
        read_arguments(config(tmp_path), args(**overrides), NOW)
    assert str(refused.value).startswith(argument)
    assert "\n" not in str(refused.value)


def test_an_export_that_holds_nothing_readable_is_refused(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text("{not json\n")
    with pytest.raises(ArgumentProblem, match=r"^--siem-export: .*give --format or --id-field"):
        read_arguments(config(tmp_path), args(siem_export=export), NOW)


def test_the_reader_sees_the_collector_s_writes_without_its_lock_and_cannot_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    ledger = Ledger(path)  # the running collector holds the process lock
    try:
        ledger.record("signins", [(b"a" * 16, 10.0), (b"b" * 16, 20.0)], 0.0)
        ledger.record("audits", [(b"c" * 16, 15.0)], 0.0)
        ledger.record("signins", [(b"u" * 16, None)], 0.0)
        reader = LedgerReader(path)
        assert reader.between("signins", 10.0, 20.0) == [(b"a" * 16, 10.0, 0.0)]
        assert reader.count_between("signins", 0.0, 100.0) == 2
        assert reader.undated("signins") == {b"u" * 16}
        ledger.record("signins", [(b"d" * 16, 12.0)], 0.0)
        assert reader.count_between("signins", 0.0, 100.0) == 3
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("DELETE FROM delivered")
        reader.close()
    finally:
        ledger.close()


def test_a_ledger_of_another_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE other (x)")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="layout version 99"):
        LedgerReader(path)

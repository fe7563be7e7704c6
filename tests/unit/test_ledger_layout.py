"""The ledger's layout 3: when each delivery was recorded, and the in-place migration of a
layout-2 ledger, which an upgrade must neither refuse nor lose a key of."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter.errors import StateError
from exporter.ledger import LAYOUT_VERSION, Ledger, LedgerReader

# What exporter/ledger.py created up to layout version 2, verbatim.
LAYOUT_2 = """
CREATE TABLE IF NOT EXISTS delivered (
    source TEXT NOT NULL,
    event_time REAL NOT NULL,
    key BLOB NOT NULL,
    PRIMARY KEY (source, event_time, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS undated (
    source TEXT NOT NULL,
    key BLOB NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (source, name)
) WITHOUT ROWID;
"""
DATED = [(bytes([n]) * 16, 1000.0 + n) for n in range(1, 200)]
UNDATED = b"u" * 16


def write_layout_2(path: Path) -> None:
    """A ledger as a layout-2 collector left it: keys of two sources, one undated, checkpoints."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(LAYOUT_2)
    db.executemany(
        "INSERT INTO delivered (source, event_time, key) VALUES (?, ?, ?)",
        [("signins", when, key) for key, when in DATED] + [("audits", 5.0, b"a" * 16)],
    )
    db.execute("INSERT INTO undated VALUES ('signins', ?, 42.0)", (UNDATED,))
    db.executemany(
        "INSERT INTO checkpoints VALUES (?, ?, ?)",
        [("signins", "fresh", 1199.5), ("signins", "deepest", 900.0), ("audits", "fresh", 7.0)],
    )
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_a_layout_2_ledger_is_migrated_in_place_keeping_every_key_and_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    write_layout_2(path)
    ledger = Ledger(path)
    try:
        assert user_version(path) == LAYOUT_VERSION == 3
        assert ledger.delivered("signins", DATED) == {key for key, _ in DATED}
        assert ledger.delivered("signins", [(UNDATED, None)]) == {UNDATED}
        assert ledger.delivered("audits", [(b"a" * 16, 5.0)]) == {b"a" * 16}
        assert (ledger.count("signins"), ledger.count("audits")) == (len(DATED) + 1, 1)
        assert ledger.checkpoint("signins", "fresh") == 1199.5
        assert ledger.checkpoint("signins", "deepest") == 900.0
        assert ledger.checkpoint("audits", "fresh") == 7.0
        ledger.record("signins", [(b"n" * 16, 1300.0)], 1301.0)
    finally:
        ledger.close()
    reader = LedgerReader(path)
    try:
        rows = {key: (when, recorded) for key, when, recorded in reader.between("signins", 0, 2e3)}
        # The old rows' times were never kept: unknown, not invented; the new row has its own.
        assert rows == {key: (when, None) for key, when in DATED} | {b"n" * 16: (1300.0, 1301.0)}
    finally:
        reader.close()
    Ledger(path).close()  # opened again: already layout 3, nothing more to migrate
    assert user_version(path) == 3


def test_a_layout_2_ledger_is_read_by_verify_as_it_is_with_every_time_unknown(
    tmp_path: Path,
) -> None:
    """A collector not yet upgraded holds it: the read-only audit must not need layout 3."""
    path = tmp_path / "state.db"
    write_layout_2(path)
    reader = LedgerReader(path)
    try:
        assert reader.between("signins", 1001.0, 1003.0) == [
            (bytes([1]) * 16, 1001.0, None),
            (bytes([2]) * 16, 1002.0, None),
        ]
    finally:
        reader.close()
    assert user_version(path) == 2


def test_the_first_recorded_time_of_a_key_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    try:
        ledger.record("signins", [(b"k" * 16, 100.0), (b"u" * 16, None)], 160.0)
        ledger.record("signins", [(b"k" * 16, 100.0)], 999.0)  # delivered again (--deliver-missing)
        reader = LedgerReader(path)
        assert reader.between("signins", 0.0, 1e3) == [(b"k" * 16, 100.0, 160.0)]
        reader.close()
    finally:
        ledger.close()


def test_a_layout_1_ledger_is_still_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_layout_2(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=1")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="layout version 1, this exporter writes 3"):
        Ledger(path)
    with pytest.raises(StateError, match="layout version 1"):
        LedgerReader(path)
    assert path.read_bytes() == before

"""The ledger: which events have been delivered, and where each source's polling stands.

One SQLite file (WAL) at ``state.path`` survives restarts. Per source it holds the key of
every delivered event with the event's own time, and a few named checkpoints. A key is
recorded only after every sink accepted the event, so a crash can repeat at most the batch
in flight, never lose it. Entries are evicted only once their event time lies before any
window a future query can reach (:func:`exporter.window.eviction_horizon`), so suppression is
exact; lookups go through the primary-key B-tree, so the cost per event stays flat as the
ledger grows.

Keys are 16 bytes: the GUID itself for GUID ids (sign-ins), else the first 16 bytes of the
SHA-256 of the id, or, for an event without an id, of its canonical JSON (a stable fallback:
the same event fetched again has the same key).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.errors import StateError, StateLockedError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    source TEXT NOT NULL,
    key BLOB NOT NULL,
    event_time REAL NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_time ON delivered (source, event_time);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (source, name)
) WITHOUT ROWID;
"""
_LOOKUP_CHUNK = 500


def event_key(event: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The dedupe key of an event and whether it came from the event's ``id``."""
    event_id = event.get("id")
    if isinstance(event_id, str) and event_id:
        try:
            return uuid.UUID(event_id).bytes, True
        except ValueError:
            return hashlib.sha256(event_id.encode("utf-8")).digest()[:16], True
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"\0no-id\0" + canonical.encode("utf-8")).digest()[:16], False


def _check_integrity(db: sqlite3.Connection) -> None:
    """Refuse a damaged file at start: a broken index could answer "never delivered".

    ``quick_check`` reads every page once (a fraction of a second for a million keys), so a
    corrupted ledger stops the collector before it writes anything or re-sends silently.
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        found = "; ".join(" ".join(str(problem).split()) for problem in problems)
        raise StateError(f"integrity check failed: {found}")


class Ledger:
    """The state file, held exclusively by one process; thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._lock_file = self._take_process_lock()
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            _check_integrity(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM checkpoints").fetchone()
        except (sqlite3.DatabaseError, StateError) as exc:
            if db is not None:
                db.close()
            self._release_process_lock()
            raise StateError(
                f"state file {self.path} is unreadable ({exc}); it was left untouched. "
                "To recover, move it aside and start with lookback covering the outage "
                "(see docs/reliability.md)"
            ) from None
        self._db = db

    def _take_process_lock(self) -> int:
        """An exclusive flock beside the database: a second collector is refused, not merged."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateLockedError(
                f"state file {self.path} is in use by another siem-exporter (pid {holder}); "
                "two collectors on one ledger would deliver events twice"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        return fd

    def _release_process_lock(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        os.close(self._lock_file)

    def close(self) -> None:
        """Checkpoint the WAL and release the file for the next process."""
        with self._lock:
            self._db.close()
            self._release_process_lock()

    def delivered(self, source: str, keys: Sequence[bytes]) -> set[bytes]:
        """Which of ``keys`` were delivered before."""
        found: set[bytes] = set()
        with self._lock:
            for i in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[i : i + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._execute(
                    f"SELECT key FROM delivered WHERE source = ? AND key IN ({marks})",
                    (source, *chunk),
                )
                found.update(row[0] for row in rows)
        return found

    def record(self, source: str, entries: Iterable[tuple[bytes, float]]) -> None:
        """Mark events delivered, atomically: all of the batch or none of it."""
        self._write_many(
            "INSERT OR IGNORE INTO delivered (source, key, event_time) VALUES (?, ?, ?)",
            [(source, key, event_time) for key, event_time in entries],
        )

    def evict(self, source: str, before: float) -> int:
        """Forget deliveries whose event time no future query can reach; returns how many."""
        with self._lock:
            cursor = self._execute(
                "DELETE FROM delivered WHERE source = ? AND event_time < ?", (source, before)
            )
            return cursor.rowcount

    def count(self, source: str) -> int:
        """How many deliveries the ledger remembers for ``source``."""
        with self._lock:
            return self._execute(
                "SELECT count(*) FROM delivered WHERE source = ?", (source,)
            ).fetchone()[0]

    def checkpoint(self, source: str, name: str) -> float | None:
        """A named checkpoint of a source, or None if never set."""
        with self._lock:
            row = self._execute(
                "SELECT value FROM checkpoints WHERE source = ? AND name = ?", (source, name)
            ).fetchone()
        return None if row is None else row[0]

    def set_checkpoints(self, source: str, values: Mapping[str, float]) -> None:
        """Store several checkpoints of a source in one transaction."""
        self._write_many(
            "INSERT OR REPLACE INTO checkpoints (source, name, value) VALUES (?, ?, ?)",
            [(source, name, value) for name, value in values.items()],
        )

    def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One transaction: a full disk or I/O error leaves nothing half-written."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StateError(f"cannot write state file {self.path}: {exc}") from None

    def _execute(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StateError(f"state file {self.path}: {exc}") from None

"""The ledger: which events have been delivered, and where each source's polling stands.

One SQLite file (WAL) at ``state.path`` survives restarts. Per source it holds the key of
every delivered event with the event's own time and when the collector first recorded it
(so an audit can tell which arrived late), and a few named checkpoints. A key is
recorded only after every sink accepted the event, so a crash can repeat at most the batch
in flight, never lose it. Commits run with ``synchronous=FULL``: under WAL, ``NORMAL`` may
roll back the last commits after a power loss, which would repeat more than one page; the
extra fsync costs about 2 ms per page (``python -m bench.commit_bench``), at most one page
per two seconds under Graph's budget. Entries are evicted only once their event time lies
before any window a future query can reach (:func:`exporter.tiers.eviction_horizon`), so
suppression is exact.

The table is ordered by (source, event time, key). A page of events covers a narrow stretch
of event time, so its lookup is one range scan over neighbouring B-tree pages, which stay
in SQLite's cache however large the ledger grows: the cost per event grows little
(``bench/results/ledger.md``). A page spanning a stretch crowded with other deliveries
probes its keys one by one instead. Eviction deletes a prefix of the same order, and no
second index is needed. Events whose time cannot be read (never seen from Graph, but
possible) go to a small side table keyed by key alone, evicted by when they were recorded:
an event is visible only after it happened.

Keys are the 16 bytes each source derives for its events
(:func:`exporter.pipeline.dedupe_key`); the ledger never looks inside an event.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.errors import StateError, StateLockedError

LAYOUT_VERSION = 3
# Version 2 lacked delivered.recorded_at; it is migrated in place (its rows keep NULL: not
# known), since refusing it would make every upgrade start over with a re-sent backlog.
_MIGRATES_FROM = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    source TEXT NOT NULL,
    event_time REAL NOT NULL,
    key BLOB NOT NULL,
    recorded_at REAL,
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
_LOOKUP_CHUNK = 500
_RANGE_ROWS_PER_KEY = 4  # a range holding more rows than this per looked-up key is probed instead


def _check_integrity(db: sqlite3.Connection) -> None:
    """Refuse a damaged file at start: a broken index could answer "never delivered".

    ``quick_check`` reads every page once (a fraction of a second for a million keys), so a
    corrupted ledger stops the collector before it writes anything or re-sends silently.
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        found = "; ".join(" ".join(str(problem).split()) for problem in problems)
        raise StateError(f"integrity check failed: {found}")


def _check_layout(db: sqlite3.Connection) -> int | None:
    """The layout version of an existing ledger (None for a new file); refuse one this
    exporter neither writes nor migrates rather than misread it."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if not tables:
        return None
    if version not in (LAYOUT_VERSION, _MIGRATES_FROM):
        raise StateError(f"layout version {version}, this exporter writes {LAYOUT_VERSION}")
    return version


def _migrate(db: sqlite3.Connection) -> None:
    """Version 2 to 3 in one transaction: add ``recorded_at``, NULL for every existing row.

    Adding a nullable column rewrites only the schema, not the rows, so even a ledger of
    millions of keys migrates at once; a crash before the commit leaves version 2 intact.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE delivered ADD COLUMN recorded_at REAL")
        db.execute(f"PRAGMA user_version={LAYOUT_VERSION}")
        db.execute("COMMIT")
    except sqlite3.Error:
        db.execute("ROLLBACK")
        raise


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
            db.execute("PRAGMA synchronous=FULL")
            if _check_layout(db) == _MIGRATES_FROM:
                _migrate(db)
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={LAYOUT_VERSION}")
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

    def delivered(self, source: str, entries: Sequence[tuple[bytes, float | None]]) -> set[bytes]:
        """Which of these (key, event time or None) were delivered before."""
        dated = [(key, when) for key, when in entries if when is not None]
        undated = [key for key, when in entries if when is None]
        with self._lock:
            found = self._delivered_dated(source, dated) if dated else set()
            for i in range(0, len(undated), _LOOKUP_CHUNK):
                chunk = undated[i : i + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._execute(
                    f"SELECT key FROM undated WHERE source = ? AND key IN ({marks})",
                    (source, *chunk),
                )
                found.update(row[0] for row in rows)
        return found

    def _delivered_dated(self, source: str, dated: Sequence[tuple[bytes, float]]) -> set[bytes]:
        """One range scan over the page's stretch of time; point probes if that stretch is wide."""
        wanted = set(dated)
        low = min(when for _, when in dated)
        high = max(when for _, when in dated)
        limit = _RANGE_ROWS_PER_KEY * len(dated) + _LOOKUP_CHUNK
        rows = self._execute(
            "SELECT key, event_time FROM delivered"
            " WHERE source = ? AND event_time BETWEEN ? AND ? LIMIT ?",
            (source, low, high, limit),
        ).fetchall()
        if len(rows) < limit:
            return {key for key, when in rows if (key, when) in wanted}
        return {
            key
            for key, when in dated
            if self._execute(
                "SELECT 1 FROM delivered WHERE source = ? AND event_time = ? AND key = ?",
                (source, when, key),
            ).fetchone()
        }

    def record(
        self, source: str, entries: Iterable[tuple[bytes, float | None]], recorded_at: float
    ) -> None:
        """Mark events delivered, atomically: all of the batch or none of it.

        ``recorded_at`` is kept with each key: the collector passes when it fetched the
        page, so it minus the event time is the event's arrival lag. A key recorded again
        keeps its first time.
        """
        rows = list(entries)
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO delivered (source, event_time, key, recorded_at)"
                " VALUES (?, ?, ?, ?)",
                [(source, when, key, recorded_at) for key, when in rows if when is not None],
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO undated (source, key, recorded_at) VALUES (?, ?, ?)",
                [(source, key, recorded_at) for key, when in rows if when is None],
            )

    def evict(self, source: str, before: float) -> int:
        """Forget deliveries no future query can return (event time before ``before``)."""
        with self._lock, self._transaction():
            dated = self._db.execute(
                "DELETE FROM delivered WHERE source = ? AND event_time < ?", (source, before)
            ).rowcount
            undated = self._db.execute(
                "DELETE FROM undated WHERE source = ? AND recorded_at < ?", (source, before)
            ).rowcount
        return dated + undated

    def count(self, source: str) -> int:
        """How many deliveries the ledger remembers for ``source``."""
        with self._lock:
            return sum(
                self._execute(
                    f"SELECT count(*) FROM {table} WHERE source = ?", (source,)
                ).fetchone()[0]
                for table in ("delivered", "undated")
            )

    def checkpoint(self, source: str, name: str) -> float | None:
        """A named checkpoint of a source, or None if never set."""
        with self._lock:
            row = self._execute(
                "SELECT value FROM checkpoints WHERE source = ? AND name = ?", (source, name)
            ).fetchone()
        return None if row is None else row[0]

    def set_checkpoints(self, source: str, values: Mapping[str, float]) -> None:
        """Store several checkpoints of a source in one transaction."""
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO checkpoints (source, name, value) VALUES (?, ?, ?)",
                [(source, name, value) for name, value in values.items()],
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction: a full disk or I/O error leaves nothing half-written."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
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


class LedgerReader:
    """The ledger opened read-only, without the process lock: for ``siem-exporter verify``.

    An audit may run beside a collector that holds the lock; SQLite's WAL lets it read a
    consistent snapshot while the collector writes, and ``mode=ro`` makes any write an
    error, so the audit cannot disturb what it audits. A version-2 ledger, of a collector
    not yet upgraded, is read as it is: its recorded times are all unknown.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            version = _check_layout(self._db)
        except (sqlite3.Error, StateError) as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from None
        self._recorded_at = "NULL" if version == _MIGRATES_FROM else "recorded_at"

    def between(
        self, source: str, start: float, end: float
    ) -> list[tuple[bytes, float, float | None]]:
        """Every (key, event time, recorded time or None if not known) of ``source`` with
        ``start <= event time < end``."""
        return [
            (bytes(key), when, recorded)
            for key, when, recorded in self._query(
                f"SELECT key, event_time, {self._recorded_at} FROM delivered"
                " WHERE source = ? AND event_time >= ? AND event_time < ?",
                (source, start, end),
            )
        ]

    def count_between(self, source: str, start: float, end: float) -> int:
        """How many deliveries of ``source`` the ledger holds with event times in [start, end)."""
        rows = self._query(
            "SELECT count(*) FROM delivered WHERE source = ? AND event_time >= ? AND event_time < ?",
            (source, start, end),
        )
        return int(rows[0][0])

    def undated(self, source: str) -> set[bytes]:
        """The keys of ``source`` recorded without an event time (none from Graph, but possible)."""
        return {
            bytes(row[0])
            for row in self._query("SELECT key FROM undated WHERE source = ?", (source,))
        }

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read state file {self.path}: {exc}") from None

"""The dead-letter file: events a sink refused for good, kept on the state volume.

A message that can never be delivered (a UDP datagram above 65,507 bytes, a message above a
receiver's size limit, a frame the receiver keeps refusing) must not block its source for
ever, and must not vanish either. :class:`exporter.delivery.Delivery` hands each such event
here, counts it in ``events_rejected_total`` and moves on; the file holds one JSON line per
refused event (when, which sink, which source, the event's id and time, why, and the event
itself), for an operator to inspect and replay.

The file is capped so that a sink refusing everything cannot fill the volume the ledger
lives on: past the cap a line keeps everything but the event, so each refused event is still
named by its id and the API can be asked for it again (``siem-exporter verify``).
``dead_letter_events`` counts the lines in the file, from the file itself at start, so the
alert on it stays firing across restarts until someone deals with the file.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

from exporter.errors import StateError
from exporter.pipeline import KeyedEvent
from exporter.syslog import event_json


def dead_letter_path(state_path: str) -> Path:
    """Where the dead letters of the ledger at ``state_path`` go: beside it, on its volume."""
    state = Path(state_path)
    return state.with_name(f"{state.stem}-dead-letter.jsonl")


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class DeadLetters:
    """Appends refused events to one file; shared by every source thread, so it locks."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            with path.open("rb") as existing:
                self._count = sum(1 for _ in existing)
            self._size = path.stat().st_size
        except FileNotFoundError:
            self._count = 0
            self._size = 0
        except OSError as exc:
            raise StateError(f"dead-letter file {path}: {exc.strerror or exc}") from None

    @property
    def count(self) -> int:
        """Refused events the file holds, including those of earlier runs."""
        return self._count

    def record(
        self,
        *,
        sink: str,
        source: str,
        item: KeyedEvent,
        reason: str,
        detail: str,
        now: float,
    ) -> bool:
        """Append one refused event; False when the cap left the event itself out.

        A write that fails raises ``StateError``: an event that can be neither delivered
        nor kept must stop the collector rather than be lost.
        """
        entry = {
            "time": _iso(now),
            "sink": sink,
            "source": source,
            "id": item.event.get("id"),
            "key": item.key.hex(),
            "event_time": _iso(item.event_time),
            "reason": reason,
            "detail": detail,
        }
        # The entry through event_json: an id the API sent with a lone surrogate
        # ("\\ud800") is written as that escape, where orjson alone would refuse it.
        head = bytes(event_json(entry))
        whole = head[:-1] + b',"event":' + bytes(event_json(item.event)) + b"}\n"
        with self._lock:
            kept = self._size + len(whole) <= self.max_bytes
            line = whole if kept else head[:-1] + b',"event":null}\n'
            try:
                with self.path.open("ab") as out:
                    out.write(line)
            except OSError as exc:
                raise StateError(f"dead-letter file {self.path}: {exc.strerror or exc}") from None
            self._size += len(line)
            self._count += 1
        return kept

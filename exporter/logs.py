"""Structured logs: one JSON object a line on stdout, the fields a log shipper indexes.

Call sites log with ``extra={"fields": {...}}``; nothing here ever receives a secret, because
secrets live in :class:`exporter.config.Secret`, whose ``repr`` is a mask.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts", "level", "logger", "msg", ...fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Send every ``exporter`` log line to ``stream`` (stdout) as JSON at ``level``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("exporter")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    msal_logger = logging.getLogger("msal")
    msal_logger.handlers[:] = [handler]
    msal_logger.setLevel(logging.WARNING)
    msal_logger.propagate = False


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: ``log.info("poll done", extra=fields(source=name, events=3))``."""
    return {"fields": values}

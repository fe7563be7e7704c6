"""The plain request and response the simulated tenant speaks, free of any HTTP library.

Every part answers a `Request` with a `Response`, so the whole tenant can be driven in
process (tests, benchmarks) exactly as the HTTPS server drives it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """An HTTP request as the tenant sees it; header names are lower-case."""

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """An HTTP response the server writes back verbatim."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> Response:
    """Compact UTF-8 JSON, as Microsoft's endpoints send it; `headers` come after the type."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(
        status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    )

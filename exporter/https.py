"""HTTPS to the authority and Graph: which CAs to trust, passed on every single request.

The environment may set ``REQUESTS_CA_BUNDLE``, which silently overrides a session's
``verify``; so :class:`VerifiedSession` passes ``verify=`` explicitly on each call, and never
follows redirects (a redirect could carry the bearer token to another host).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, cast

import certifi
import requests
import urllib3
from zlib_ng import zlib_ng

USER_AGENT = "siem-exporter"
# zlib-ng's stub types its error class as an instance; it is an exception class.
_INFLATE_ERROR = cast(type[Exception], zlib_ng.error)


def trust_bundle(extra_ca: str | None) -> str:
    """The CA file to verify against: the public roots, plus ``extra_ca`` when configured.

    An extra CA adds trust (a proxy's or a sovereign cloud's private root, or the simulator's);
    it never replaces verification.
    """
    if extra_ca is None:
        return certifi.where()
    combined = Path(certifi.where()).read_bytes() + b"\n" + Path(extra_ca).read_bytes()
    with tempfile.NamedTemporaryFile(prefix="siem-exporter-ca-", suffix=".pem", delete=False) as f:
        f.write(combined)
    return f.name


class VerifiedSession:
    """A requests session whose every request verifies against one CA file and stays put.

    It also serves as MSAL's ``http_client`` (MSAL calls ``get`` and ``post``).
    """

    def __init__(self, verify: str, timeout: float = 30.0) -> None:
        self.verify = verify
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._request("POST", url, **kwargs)

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send, and read the whole body in one read into one buffer.

        requests reads a body 10 kB at a time through several layers of Python and joins
        the pieces: for a Graph page of 12 MB that was a tenth of the collector's CPU.
        ``iter_content(None)`` reads it at once (one chunk: the join keeps it as it is);
        ``content`` holds the same bytes, read errors are requests' own, and the connection
        goes back to the pool once the body is read, as without ``stream``. A gzip'd body
        is read as it came and inflated here (:func:`inflate_gzip`).
        """
        kwargs["verify"] = self.verify
        kwargs["allow_redirects"] = False
        kwargs.setdefault("timeout", self.timeout)
        response = self._session.request(method, url, stream=True, **kwargs)
        if response.headers.get("Content-Encoding", "").strip().lower() == "gzip":
            try:
                compressed = response.raw.read(decode_content=False)
            except urllib3.exceptions.HTTPError as exc:
                raise requests.ConnectionError(f"reading the body failed: {exc}") from None
            response._content = inflate_gzip(compressed)
            response.headers["Content-Length"] = str(len(response._content))
            del response.headers["Content-Encoding"]
        else:
            response._content = b"".join(response.iter_content(None))
        return response

    def close(self) -> None:
        self._session.close()


def inflate_gzip(body: bytes) -> bytes:
    """A gzip'd body inflated, every member of it; ContentDecodingError for a damaged one.

    Graph compresses a page of sign-ins tenfold or more, and inflating its 12 MB is the
    largest single cost of reading it: zlib-ng does it in a third of the standard
    library's time. (urllib3 would inflate with the standard library, and copy the
    result twice more.) A body cut short or followed by anything but another member is
    refused, where the standard library's one-shot inflate would drop what follows. An
    empty body stays empty.
    """
    pieces: list[bytes] = []
    rest = body
    while rest:
        inflater = zlib_ng.decompressobj(zlib_ng.MAX_WBITS | 16)
        try:
            pieces.append(inflater.decompress(rest))
        except _INFLATE_ERROR as exc:
            raise requests.exceptions.ContentDecodingError(f"damaged gzip body: {exc}") from None
        if not inflater.eof:
            raise requests.exceptions.ContentDecodingError("damaged gzip body: it ends early")
        rest = inflater.unused_data
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def error_envelope(body: bytes) -> tuple[str, str]:
    """The ``error.code`` and ``error.message`` of a Microsoft API's error body (Graph's and
    the Management Activity API's share the envelope), or ``("unknown", "")``."""
    try:
        error = json.loads(body).get("error", {})
        return str(error.get("code", "unknown")), str(error.get("message", ""))[:200]
    except (ValueError, AttributeError):
        return "unknown", ""

"""HTTPS to the authority and Graph: which CAs to trust, passed on every single request.

The environment may set ``REQUESTS_CA_BUNDLE``, which silently overrides a session's
``verify``; so :class:`VerifiedSession` passes ``verify=`` explicitly on each call, and never
follows redirects (a redirect could carry the bearer token to another host).
"""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import certifi
import deflate
import requests
import urllib3

USER_AGENT = "siem-exporter"
_GZIP_MAGIC = b"\x1f\x8b\x08"  # ID1, ID2 and CM (deflate): how every gzip member begins
_GZIP_TRAILER = struct.Struct("<II")  # CRC-32 and ISIZE (length mod 2**32) of a member's data
_MAX_DEFLATE_RATIO = 1032  # DEFLATE's ceiling on inflated bytes per compressed byte
_MAX_ONE_SHOT_SIZE = 1 << 28  # 256 MiB: twice a page of 1000 events of 100 kB each


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
            inflated = inflate_gzip(compressed)
            # requests types content as bytes; a bytearray reads the same to json, msgspec
            # and memoryview, and copying 12 MB into bytes would cost as much as inflating.
            response._content = inflated  # type: ignore[assignment]
            response.headers["Content-Length"] = str(len(inflated))
            del response.headers["Content-Encoding"]
        else:
            response._content = b"".join(response.iter_content(None))
        return response

    def close(self) -> None:
        self._session.close()


def inflate_gzip(body: bytes) -> bytes | bytearray:
    """A gzip'd body inflated, every member of it; ContentDecodingError for a damaged one.

    Graph compresses a page of sign-ins tenfold or more, and inflating its 12 MB is the
    largest single cost of reading it. A body of one member, as every server sends, is
    inflated by libdeflate (:func:`_inflate_one_member`), three times faster than zlib-ng
    and ten times faster than urllib3's standard-library inflate; anything else takes the
    standard library's streaming inflate, member by member, which gives the exact verdict:
    a body cut short or followed by anything but another member is refused, where a
    one-shot inflate would drop what follows. An empty body stays empty.
    """
    whole = _inflate_one_member(body)
    if whole is not None:
        return whole
    pieces: list[bytes] = []
    rest = body
    while rest:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            pieces.append(inflater.decompress(rest))
        except zlib.error as exc:
            raise requests.exceptions.ContentDecodingError(f"damaged gzip body: {exc}") from None
        if not inflater.eof:
            raise requests.exceptions.ContentDecodingError("damaged gzip body: it ends early")
        rest = inflater.unused_data
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _inflate_one_member(body: bytes) -> bytearray | None:
    """``body`` inflated if it is one whole gzip member; None when that is not shown.

    libdeflate inflates into a buffer of the size the body's trailer states, and checks
    the first member's data against that member's own CRC-32 and length. The body is that
    one member when its last eight bytes are the same trailer: a body cut short, or with
    junk after the member, ends in other bytes (only junk made to end in a copy of that
    trailer would pass, and what comes back is still exactly the member the CRC-32 checked).
    A second member would begin right after the first one's trailer, so the body would hold
    that trailer followed by gzip's magic bytes: seen there, the streaming path decides. The
    buffer is allocated up front, so a stated length of zero, beyond what DEFLATE can
    inflate the body to, or beyond any page (a damaged trailer, most likely) is left to the
    streaming path too.
    """
    if len(body) < _GZIP_TRAILER.size + len(_GZIP_MAGIC):
        return None
    trailer = body[-_GZIP_TRAILER.size :]
    crc, size = _GZIP_TRAILER.unpack(trailer)
    if not 0 < size <= min(_MAX_DEFLATE_RATIO * len(body), _MAX_ONE_SHOT_SIZE):
        return None
    try:
        whole = deflate.gzip_decompress(body, size)
    except deflate.DeflateError:
        return None
    if len(whole) != size or deflate.crc32(whole) != crc or trailer + _GZIP_MAGIC in body:
        return None
    return whole


def error_envelope(body: bytes) -> tuple[str, str]:
    """The ``error.code`` and ``error.message`` of a Microsoft API's error body (Graph's and
    the Management Activity API's share the envelope), or ``("unknown", "")``."""
    try:
        error = json.loads(body).get("error", {})
        return str(error.get("code", "unknown")), str(error.get("message", ""))[:200]
    except (ValueError, AttributeError):
        return "unknown", ""

"""Writing a batch of messages to a stream connection without first joining it into one buffer.

A page of real sign-ins is 12 MB of messages. Joining the frames into one ``bytes`` to hand
it to ``sendall`` copies all of it once more in user space; a scatter-gather write
(``sendmsg``) lets the kernel copy each frame straight from where it lies. TLS sockets
cannot gather (the record layer needs one buffer), so they still get the joined bytes.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

# Linux's IOV_MAX: the most buffers one sendmsg takes.
_MAX_BUFFERS = 1024


def write_parts(sock: socket.socket, parts: Sequence[bytes | memoryview]) -> None:
    """Write ``parts`` in order, all of them, or raise ``OSError`` (``TimeoutError`` when the
    receiver stops reading for longer than the socket's timeout)."""
    if isinstance(sock, ssl.SSLSocket):
        sock.sendall(b"".join(parts))
        return
    pending = list(parts)
    start = 0
    while start < len(pending):
        sent = sock.sendmsg(pending[start : start + _MAX_BUFFERS])
        # Skip the parts the kernel took whole; keep the rest of one it took in part.
        while start < len(pending) and sent >= len(pending[start]):
            sent -= len(pending[start])
            start += 1
        if sent:
            pending[start] = memoryview(pending[start])[sent:]

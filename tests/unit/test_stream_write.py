"""``write_parts`` puts every byte of every part on the wire, in order, however the kernel
splits the writes: more parts than one ``sendmsg`` takes, parts cut in the middle by a full
send buffer, empty parts, views."""

from __future__ import annotations

import socket
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.stream_write import write_parts


def _received_while_writing(parts: list[bytes | memoryview]) -> bytes:
    """What the far end of a connection with a small send buffer reads while we write."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.settimeout(10)
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := theirs.recv(1000):  # small reads: the writer keeps meeting a full buffer
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        write_parts(ours, parts)
    finally:
        ours.shutdown(socket.SHUT_WR)
        reader.join(10)
        ours.close()
        theirs.close()
    return b"".join(chunks)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=40), st.booleans())
def test_every_part_arrives_whole_and_in_order(parts: list[bytes], as_views: bool) -> None:
    sent: list[bytes | memoryview] = [memoryview(p) if as_views else p for p in parts]
    assert _received_while_writing(sent) == b"".join(parts)


def test_more_parts_than_one_gathered_write_takes() -> None:
    parts = [b"%d " % n for n in range(5000)]  # a page of 1000 events is 2000 parts or more
    assert _received_while_writing(list(parts)) == b"".join(parts)


def test_a_part_larger_than_the_send_buffer_is_written_in_pieces() -> None:
    parts = [b"head ", bytes(range(256)) * 2000, b" tail"]
    assert _received_while_writing(list(parts)) == b"".join(parts)

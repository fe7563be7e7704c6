"""Graph's gzip'd pages inflated by the collector: every member, nothing dropped, and a
damaged body refused as a failed read (which is retried), never taken for a page."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from exporter.https import inflate_gzip


@given(
    st.lists(
        st.tuples(st.binary(max_size=3000), st.integers(min_value=0, max_value=9)),
        min_size=1,
        max_size=4,
    )
)
def test_every_member_is_inflated_in_order(members: list[tuple[bytes, int]]) -> None:
    body = b"".join(gzip.compress(data, level) for data, level in members)

    assert inflate_gzip(body) == b"".join(data for data, _ in members)


@pytest.mark.parametrize(
    "members",
    [
        pytest.param([b'{"value":[]}', b'{"value":[]}'], id="the-first-member-repeated"),
        pytest.param([b"page " * 300, b"more", b"page " * 300], id="first-and-last-alike"),
        pytest.param([b"a" * 100, b"b" * 100], id="first-and-last-of-one-length"),
    ],
)
def test_a_first_member_like_the_last_does_not_pass_for_the_whole_body(
    members: list[bytes],
) -> None:
    """A first member as long as the last is told from a whole body by the trailer's CRC-32;
    one identical to the last passes both checks of the trailer: only its own trailer
    followed by another member tells."""
    body = b"".join(gzip.compress(data, 6) for data in members)

    assert inflate_gzip(body) == b"".join(members)


def test_a_page_of_a_megabyte_and_more_comes_back_byte_for_byte() -> None:
    page = b'{"value":[' + b",".join(b'{"id":"%d","n":"%s"}' % (n, b"x" * n) for n in range(2000))
    page += b"]}"

    assert inflate_gzip(gzip.compress(page, 1)) == page


def test_an_empty_body_stays_empty() -> None:
    assert inflate_gzip(b"") == b""


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda body: body[:-3], id="cut-in-the-trailer"),
        pytest.param(lambda body: body[: len(body) // 2], id="cut-in-the-middle"),
        pytest.param(lambda body: body + b"junk", id="trailing-junk"),
        pytest.param(lambda body: body[:-4] + b"\xff\xff\xff\xff", id="trailer-says-4-GiB"),
        pytest.param(lambda body: body[:-8] + b"\0\0\0\0" + body[-4:], id="trailer-crc-wrong"),
        pytest.param(lambda body: body + gzip.compress(b"more")[:-1], id="a-second-member-cut"),
        pytest.param(lambda body: b"not gzip at all", id="not-gzip"),
        pytest.param(lambda body: body[:12] + bytes([body[12] ^ 0xFF]) + body[13:], id="flipped"),
    ],
)
def test_a_damaged_body_is_a_failed_read(damage: Callable[[bytes], bytes]) -> None:
    body = gzip.compress(b'{"value":[{"id":"1"}]}' * 50)

    with pytest.raises(requests.RequestException, match="damaged gzip body"):
        inflate_gzip(damage(body))

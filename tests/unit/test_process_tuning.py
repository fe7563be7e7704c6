"""The collector process keeps the memory of a page's buffers for the next page (glibc)."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE_BUFFER = 12 << 20  # a page of 1000 sign-ins, inflated or compacted

# Run in a process of its own: the allocator's settings are the whole process's.
PROBE = f"""
import ctypes, sys
from exporter.process_tuning import prepare_for_a_long_run

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "prepared":
    prepare_for_a_long_run()
mapped = libc.mallinfo2().hblks
buffer = bytearray({PAGE_BUFFER})
mapped = libc.mallinfo2().hblks - mapped
del buffer
print(mapped, libc.mallinfo2().keepcost)
"""


def probe(mode: str) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def has_mallinfo2() -> bool:
    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not has_mallinfo2(), reason="glibc's allocator (2.33 or later) only")
def test_a_page_buffer_comes_from_the_heap_and_its_memory_stays_after_it_is_freed() -> None:
    """A buffer of a page's size is not a mapping of its own, and once freed its memory is
    kept at the heap's top for the next page rather than returned to the kernel (where
    the next page would fault every 4 kB of it in again)."""
    mapped, kept = probe("prepared")
    assert mapped == 0
    assert kept >= PAGE_BUFFER

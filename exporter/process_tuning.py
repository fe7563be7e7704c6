"""Settings a long-running collector process makes once, before its source threads start.

Both follow from the shape of the work: every page is a few buffers of 12 MB (the page
as it came, inflated, compacted) and thousands of short-lived objects, over and over.
"""

from __future__ import annotations

import ctypes
import gc
import logging

from exporter.logs import fields

log = logging.getLogger(__name__)

# glibc's mallopt(3) parameters and the values set for them.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: what is smaller comes from the heap
TRIM_THRESHOLD = 128 << 20  # above a thread heap's 64 MiB: free memory is kept for reuse


def prepare_for_a_long_run() -> None:
    """Keep page-sized buffers and start-up's objects out of the way of every page after."""
    _keep_freed_page_memory()
    _set_aside_start_up_objects()


def _keep_freed_page_memory() -> None:
    """Let glibc's allocator reuse the memory of a page's buffers for the next page.

    By default glibc serves a buffer of 12 MB from a fresh mapping and unmaps it when it
    is freed, or, once its adaptive thresholds have moved, serves it from a thread's heap
    and returns the heap's free top to the kernel; either way the next page's buffers are
    mapped again, page-faulting in every 4 kB of them. That cost the collector a fifth of
    its CPU on a machine whose page faults are slow. With these two thresholds fixed, the
    buffers come from the heap and their memory stays for the next page: the resident size
    stays at its peak between pages instead of falling. Other C libraries (musl has no
    ``mallopt``) keep their own behaviour.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    settled = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(
        _M_TRIM_THRESHOLD, TRIM_THRESHOLD
    )
    if not settled:
        log.warning("malloc thresholds not set", extra=fields(mallopt="refused"))


def _set_aside_start_up_objects() -> None:
    """Move what start-up built (modules, config, clients, all living as long as the
    process) out of the cyclic garbage collector's way.

    Every page of sign-ins makes thousands of short-lived objects, so the collector runs
    often, and every few pages a full collection walked all of start-up's objects too:
    about 2 % of the CPU at pages of 1000 sign-ins.
    """
    gc.collect()
    gc.freeze()

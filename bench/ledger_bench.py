"""The ledger benchmark: per-event dedupe cost as the ledger grows, beside the seed's list.

One :class:`~exporter.ledger.Ledger` on disk is filled to each size in turn (10k, 100k, 1M,
5M entries by default). At each size, pages of 1000 events like the collector's go through
``delivered`` then ``record`` of the new ones: half of each page was delivered before (drawn
from the overlap, the ledger's newest 10,000 entries), half is new. Keys are 16 random-looking
bytes, as sign-in GUIDs are. The figure is the median over ``--repeats`` rounds of the
cost per event, and its ratio to the cost at the smallest size.

Beside it, in the same run, the seed script's approach: the previous run's ids in a list,
each new id tested with ``in``. That costs a scan of the list per id, so at large sizes only
a sample of lookups (at most ``--seed-seconds`` per round) is timed.

Then the peak RSS of a fresh process that opens the largest ledger and runs pages through
it, and the ledger's size on disk (``state.db`` + WAL) per million entries.

    python -m bench.ledger_bench [--sizes 10000,100000,1000000,5000000] [--repeats 3] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS_DIR, file_bytes, median, peak_rss_bytes, write_table
from exporter.ledger import Ledger

SOURCE = "signins"
PAGE = 1000
FILL_BATCH = PAGE
EPOCH = 1_700_000_000.0
SECONDS_PER_EVENT = 0.01
TARGET_GROWTH = 1.5
TARGET_RSS = 150e6
TARGET_DISK_PER_MILLION = 100e6


def key_of(index: int) -> bytes:
    """The 16-byte key of the ``index``-th event: reproducible, so nothing must be kept."""
    return hashlib.blake2b(index.to_bytes(8, "little"), digest_size=16).digest()


def time_of(index: int) -> float:
    """Event times increase with the index, as the ledger sees them in production."""
    return EPOCH + index * SECONDS_PER_EVENT


def fill(ledger: Ledger, start: int, stop: int) -> None:
    """Record events ``start .. stop - 1``, in large batches (filling is not measured)."""
    for first in range(start, stop, FILL_BATCH):
        last = min(first + FILL_BATCH, stop)
        ledger.record(SOURCE, [(key_of(i), time_of(i)) for i in range(first, last)], time_of(last))


def page_entries(size: int, page_number: int) -> tuple[list[tuple[bytes, float]], set[bytes]]:
    """One page as a poll sees it: the newest stretch of event time, half of it re-fetched.

    Page ``n`` holds the ``PAGE // 2`` newest events already delivered (the ledger's last
    ones, or the previous page's new half) and the ``PAGE // 2`` events just after them,
    new, newest first as Graph returns them. Returns the page's (key, event time) pairs and
    its new keys.
    """
    half = PAGE // 2
    first_new = size + page_number * half
    indices = range(first_new + half - 1, first_new - half - 1, -1)
    page = [(key_of(i), time_of(i)) for i in indices]
    return page, {key_of(i) for i in range(first_new, first_new + half)}


def run_pages(ledger: Ledger, size: int, pages: int) -> float:
    """Seconds per event for ``pages`` pages of lookup, then record of the new events.

    The ledger must hold exactly events ``0 .. size - 1``; afterwards it holds
    ``size + pages * PAGE // 2``. RuntimeError if the ledger found the wrong events.
    """
    prepared = [page_entries(size, number) for number in range(pages)]
    found = 0
    began = time.perf_counter()
    for page, new_keys in prepared:
        delivered = ledger.delivered(SOURCE, page)
        found += len(delivered)
        ledger.record(SOURCE, [(k, t) for k, t in page if k not in delivered], time_of(size))
        if delivered & new_keys:
            raise RuntimeError("the ledger claims a new event was delivered")
    elapsed = time.perf_counter() - began
    if found != pages * (PAGE // 2):
        raise RuntimeError(f"the ledger found {found} of {pages * (PAGE // 2)} re-fetched events")
    return elapsed / (pages * PAGE)


def seed_ids(size: int) -> list[str]:
    """The seed's state: the previous run's ids, as the GUID strings it kept in a text file."""
    return [str(uuid.UUID(bytes=key_of(i))) for i in range(size)]


def seed_lookup_cost(previous: list[str], budget_seconds: float) -> float:
    """Seconds per new id with the seed's ``id in previous_ids``.

    A new id is absent, so each test scans the whole list: the seed's real cost for new
    events. Timed on as many lookups as fit in ``budget_seconds`` (at least 5, at most 1000).
    """
    size = len(previous)
    fresh = [str(uuid.UUID(bytes=key_of(size + n))) for n in range(1000)]
    done, began = 0, time.perf_counter()
    for candidate in fresh:
        if candidate in previous:
            raise RuntimeError("a new id was found in the previous run's list")
        done += 1
        if done >= 5 and time.perf_counter() - began > budget_seconds:
            break
    return (time.perf_counter() - began) / done


def _hold_and_measure(
    path: str, pages: int, size: int, report: multiprocessing.connection.Connection
) -> None:
    """Child process: open the ledger, run pages through it, report the peak RSS."""
    before = peak_rss_bytes(os.getpid())
    ledger = Ledger(path)
    try:
        run_pages(ledger, size, pages)
        count = ledger.count(SOURCE)
    finally:
        ledger.close()
    report.send((before, peak_rss_bytes(os.getpid()), count))


def peak_rss_of_holder(path: Path, pages: int, size: int) -> tuple[int, int, int]:
    """(RSS before opening, peak RSS, entries) of a fresh process using the ledger at ``path``."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_hold_and_measure, args=(str(path), pages, size, sender))
    process.start()
    deadline = time.monotonic() + 900
    while not receiver.poll(1.0):
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the ledger holder stopped without a report ({process.exitcode})")
    before, peak, count = receiver.recv()
    process.join()
    return before, peak, count


@dataclass(frozen=True)
class SizeResult:
    size: int
    entries: int
    ledger_cost: float
    seed_cost: float
    disk_bytes: int


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.2f} µs"


def benchmark(
    sizes: list[int],
    repeats: int,
    pages: int,
    seed_seconds: float,
    results_dir: Path,
    name: str = "ledger",
) -> dict[str, float]:
    """Measure every size; write the table; return the headline figures."""
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        path = Path(tmp) / "state.db"
        ledger = Ledger(path)
        filled = 0
        try:
            for size in sorted(sizes):
                fill(ledger, filled, size)
                filled = size
                costs = []
                for _ in range(repeats):
                    costs.append(run_pages(ledger, filled, pages))
                    filled += pages * (PAGE // 2)
                previous = seed_ids(size)
                seed = median(seed_lookup_cost(previous, seed_seconds) for _ in range(repeats))
                del previous
                disk = file_bytes(path, path.with_name("state.db-wal"))
                results.append(SizeResult(size, filled, median(costs), seed, disk))
        finally:
            ledger.close()
        before, peak, held = peak_rss_of_holder(path, pages, filled)
        closed_disk = file_bytes(path, path.with_name("state.db-wal"))
    base, top = results[0], results[-1]
    growth = top.ledger_cost / base.ledger_cost
    disk_per_million = top.disk_bytes * 1e6 / top.entries
    rows: list[tuple[object, ...]] = [
        (
            f"{r.size:,}",
            _us(r.ledger_cost),
            f"{r.ledger_cost / base.ledger_cost:.2f}",
            _us(r.seed_cost),
            f"{r.seed_cost / base.seed_cost:,.1f}",
            f"{r.seed_cost / r.ledger_cost:,.1f}",
            f"{r.disk_bytes / 1e6:,.1f} MB",
            f"{r.disk_bytes / r.entries:,.1f} MB",
        )
        for r in results
    ]
    summary = [
        f"Dedupe cost at {top.size:,} entries is {growth:.2f}x the cost at {base.size:,} "
        f"(target ≤ {TARGET_GROWTH}x: {'met' if growth <= TARGET_GROWTH else 'not met'}).",
        f"Peak RSS of a process holding the {held:,}-entry ledger and running {pages} pages "
        f"through it: {peak / 1e6:.1f} MB ({before / 1e6:.1f} MB before opening it; target "
        f"< {TARGET_RSS / 1e6:.0f} MB: {'met' if peak < TARGET_RSS else 'not met'}).",
        f"Disk per million entries (state.db + WAL, at the largest size): "
        f"{disk_per_million / 1e6:.1f} MB; after close (WAL checkpointed): "
        f"{closed_disk * 1e6 / held / 1e6:.1f} MB (target < {TARGET_DISK_PER_MILLION / 1e6:.0f} MB: "
        f"{'met' if disk_per_million < TARGET_DISK_PER_MILLION else 'not met'}).",
        f"Medians of {repeats} rounds of {pages} pages of {PAGE} events (half re-fetched, half "
        "new; lookup then record of the new) per size, in one run; the seed's figure is an "
        f"absent id tested with `in` against a list of that many ids, timed for up to "
        f"{seed_seconds:g} s per round. Ratios: against the smallest size, and ledger against "
        "seed at the same size.",
        "Command: `python -m bench.ledger_bench "
        f"--sizes {','.join(str(s) for s in sizes)} --repeats {repeats} --pages {pages}`.",
    ]
    write_table(
        name,
        (
            "entries",
            "ledger per event",
            "ratio to smallest",
            "seed list per event",
            "seed ratio to smallest",
            "seed / ledger",
            "disk (db + WAL)",
            "disk per million",
        ),
        rows,
        summary,
        results_dir,
    )
    return {
        "growth": growth,
        "peak_rss_bytes": float(peak),
        "disk_bytes_per_million": disk_per_million,
        "entries_held": float(held),
        "smallest_cost": base.ledger_cost,
        "seed_growth": top.seed_cost / base.seed_cost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_bench", description=__doc__)
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000,5000000",
        help="comma-separated ledger sizes, smallest first is the baseline",
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds per size, for medians")
    parser.add_argument("--pages", type=int, default=20, help="pages of 1000 per round")
    parser.add_argument("--seed-seconds", type=float, default=2.0, help="seed timing cap per round")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="sizes 1000 and 20000, written to ledger-smoke.md: does it still work?",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.pages, args.seed_seconds = "1000,20000", 3, 0.2
    sizes = [int(s) for s in args.sizes.split(",")]
    name = "ledger-smoke" if args.smoke else "ledger"
    benchmark(sizes, args.repeats, args.pages, args.seed_seconds, args.results_dir, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

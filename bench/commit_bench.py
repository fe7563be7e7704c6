"""What a durable ledger commit costs: one page of keys recorded with ``synchronous=FULL``.

The ledger commits each delivered page in one transaction. Under WAL, SQLite's ``NORMAL``
skips the fsync at commit, and a power loss may then roll back the most recent commits, so
more than the page in flight could be sent again; ``FULL`` syncs the WAL at every commit.
The baseline, measured in the same run on the same disk, is ``NORMAL``. The bound that puts
the figure in proportion: Graph allows 5 requests per 10 s per tenant, so at most one page
of new events is committed every two seconds.

    python -m bench.commit_bench [--pages 200] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import RESULTS_DIR, median, write_table
from exporter.ledger import Ledger

PAGE = 1000
PAGES_PER_SECOND_BOUND = 0.5  # 5 requests per 10 s


def commit_seconds(directory: Path, synchronous: str, pages: int) -> float:
    """Median wall time of recording one page of ``PAGE`` keys, over ``pages`` commits."""
    ledger = Ledger(directory / f"state-{synchronous.lower()}.db")
    try:
        ledger._db.execute(f"PRAGMA synchronous={synchronous}")  # the baseline differs only here
        times = []
        for page in range(pages):
            rows = [(uuid.uuid4().bytes, 1.7e9 + page + i / PAGE) for i in range(PAGE)]
            started = time.perf_counter()
            ledger.record("signins", rows, recorded_at=1.7e9)
            times.append(time.perf_counter() - started)
    finally:
        ledger.close()
    return median(times)


def benchmark(pages: int, rounds: int, results_dir: Path, name: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="commit-bench-", dir=Path.cwd()) as scratch:
        normal = median(commit_seconds(Path(scratch), "NORMAL", pages) for _ in range(rounds))
        full = median(commit_seconds(Path(scratch), "FULL", pages) for _ in range(rounds))
    share = full * PAGES_PER_SECOND_BOUND
    write_table(
        name,
        ["synchronous", "per page commit", "ratio to NORMAL", "share of a second at the budget"],
        [
            ["NORMAL (baseline)", f"{normal * 1e3:.2f} ms", "1.00", "-"],
            ["FULL (shipped)", f"{full * 1e3:.2f} ms", f"{full / normal:.2f}", f"{share:.2%}"],
        ],
        [
            f"Medians of {rounds} rounds of {pages} commits of {PAGE} keys each, in a scratch "
            "directory under the working directory (the disk the state would be on). The last "
            "column is the time spent committing at Graph's bound of one page every two seconds."
        ],
        results_dir=results_dir,
    )
    return {"normal": normal, "full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a few commits, to check it runs")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.smoke:
        benchmark(5, 1, args.results_dir, "commit-smoke")
    else:
        benchmark(args.pages, args.rounds, args.results_dir, "commit")


if __name__ == "__main__":
    main()

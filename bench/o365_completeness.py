"""Completeness of the Office 365 Management Activity API: ``--api management_activity``.

The Graph benchmark's question for the API of issue 18: every record once, at what cost?
Ours (the shipped source, loop and ledger) beside the two designs peers ship
(:mod:`bench.o365_strategies`), on the same seeded records and blobs
(:mod:`bench.o365_model`), in virtual time, scored against the ground truth:

- eligible: records visible (the first blob holding them listable) before the horizon's end;
  every strategy keeps running for a drain after it, so what is listable is listed.
- missing: eligible, never delivered by the end of the drain.
- duplicates: deliveries beyond the first of each record.
- requests: every request sent (AF429s included); listings and blob downloads apart.
- latency: first delivery minus visibility, over the eligible records delivered.

Ratios are against ``lookback24h`` measured in the same run: the design most peers ship.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import write_table
from bench.o365_model import (
    BLOB_PERIOD,
    BUDGET,
    DUPLICATE_SHARE,
    DUPLICATE_SPREAD,
    LISTING_LAG,
    LISTING_PAGE,
    RECORD_LATENESS,
    Feed,
)
from bench.o365_strategies import OURS, POLL, STRATEGIES, RunStats, World

VOLUMES = {"20k": 20_000, "100k": 100_000, "200k": 200_000, "1M": 1_000_000}
DEFAULT_VOLUME = "100k"
DEFAULT_DAYS = 3.0  # the longest visibility (3 days) fits, so late blobs come up mid-run
DEFAULT_DRAIN = 7200.0  # a listable blob is listed within minutes by any design that lists it
SMOKE = ("20k", 0.5, 3600.0)
BASELINE = "lookback24h"
HEADER = (
    "volume",
    "strategy",
    "eligible",
    "missing",
    "duplicates",
    "requests",
    f"requests / {BASELINE}",
    "listings",
    "blob fetches",
    "AF429s",
    "latency p50",
    "latency p99",
    "latency max",
    f"p99 / {BASELINE}",
    "wall",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One strategy's score on one volume."""

    volume: str
    strategy: str
    eligible: int
    missing: int
    duplicates: int
    unique: int
    stats: RunStats
    latency_p50: float | None
    latency_p99: float | None
    latency_max: float | None
    wall_seconds: float


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def score(world: World, volume: str, strategy: str, stats: RunStats, wall: float) -> Outcome:
    """One run against the ground truth."""
    feed, first = world.feed, world.log.first
    eligible = missing = 0
    latencies = []
    for index, visible in enumerate(feed.visible):
        if visible >= feed.end:
            continue
        eligible += 1
        if first[index]:
            latencies.append(first[index] - visible)
        else:
            missing += 1
    latencies.sort()
    unique = sum(1 for when in first if when)
    return Outcome(
        volume,
        strategy,
        eligible,
        missing,
        world.log.sent - unique,
        unique,
        stats,
        _quantile(latencies, 0.5),
        _quantile(latencies, 0.99),
        latencies[-1] if latencies else None,
        wall,
    )


def run_one(feed: Feed, volume: str, strategy: str) -> Outcome:
    """Run one strategy on ``feed`` from a fresh world and score it."""
    world = World(feed)
    started = time.perf_counter()
    stats = STRATEGIES[strategy](world)
    wall = time.perf_counter() - started
    return score(world, volume, strategy, stats, wall)


def run_volume(
    volume: str, days: float, drain: float, seed: int, strategies: Sequence[str]
) -> list[Outcome]:
    """Every strategy on the same records; progress on stderr."""
    logging.getLogger("exporter").setLevel(logging.CRITICAL)  # expected errors, not news
    feed = Feed(VOLUMES[volume], days, seed, drain)
    outcomes = []
    for strategy in strategies:
        outcome = run_one(feed, volume, strategy)
        outcomes.append(outcome)
        print(
            f"# o365 {volume} {strategy}: missing {outcome.missing}, duplicates "
            f"{outcome.duplicates}, {outcome.wall_seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return outcomes


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.2f} %)" if whole and part else str(part)


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "-"


def rows(outcomes: Sequence[Outcome]) -> list[list[object]]:
    """The table's rows, with ratios against the baseline of the same volume."""
    base = {o.volume: o for o in outcomes if o.strategy == BASELINE}
    table: list[list[object]] = []
    for o in outcomes:
        b = base.get(o.volume)
        base_requests = b.stats.requests if b else None
        base_p99 = b.latency_p99 if b else None
        table.append(
            [
                o.volume,
                o.strategy,
                o.eligible,
                _percent(o.missing, o.eligible),
                _percent(o.duplicates, o.unique),
                o.stats.requests,
                _ratio(o.stats.requests, base_requests),
                o.stats.listings,
                o.stats.fetches,
                o.stats.throttled,
                _duration(o.latency_p50),
                _duration(o.latency_p99),
                _duration(o.latency_max),
                _ratio(o.latency_p99, base_p99),
                f"{o.wall_seconds:.0f} s",
            ]
        )
    return table


def _bands(bands: Sequence[tuple[float, float, float]]) -> str:
    return ", ".join(
        f"{share:.0%} {_duration(low)}-{_duration(high)}" for share, low, high in bands
    )


def notes(
    command: str, days: float, drain: float, seed: int, outcomes: Sequence[Outcome]
) -> list[str]:
    """What the table measured, how to reproduce it, and the verdict for ours."""
    ours = [o for o in outcomes if o.strategy == "ours"]
    return [
        f"Reproduce: `{command}` (deterministic for the seed; wall times vary).",
        f"Model (bench/o365_model.py): one content type; records Poisson over a horizon of "
        f"{days:g} simulated day(s) then a drain of {_duration(drain)}; seed {seed}. A record "
        f"joins the blob of the {BLOB_PERIOD / 60:g}-minute period in which it became "
        f"available, {_bands(RECORD_LATENESS)} after its CreationTime (log-uniform within "
        f"each band); a blob is listable {_bands(LISTING_LAG)} after its contentCreated; "
        f"{DUPLICATE_SHARE:.0%} of records also sit in a second blob up to "
        f"{_duration(DUPLICATE_SPREAD)} later. Visible = the first blob holding the record is "
        "listable: 30 min to 3 days after CreationTime. Listing windows at most 24 h, starting "
        f"at most 7 days back (AF20055), {LISTING_PAGE} entries per page, blobs expire after 7 "
        f"days (AF20051); {BUDGET[0]} requests per sliding {BUDGET[1]:g} s per tenant, over "
        "it HTTP 403 AF429 (no Retry-After) without consuming budget; 0.5 s per request.",
        "Eligible = visible before the horizon's end. Missing = eligible, never delivered by "
        "the end of the drain. Duplicates as a share of unique deliveries. Requests include "
        "AF429s and the subscription start; listings and blob fetches apart. Latency = first "
        f"delivery minus visibility. Ratios against `{BASELINE}` of the same run.",
        f"ours: the real SourceLoop, ManagementActivitySource, ManagementHttp and ledger "
        f"(only the HTTP session is modelled), poll_interval {OURS.poll_interval:g} s, "
        f"lookback {_duration(OURS.lookback)}, max_lookback {_duration(OURS.max_lookback)}, "
        f"budget {BUDGET[0]}/{BUDGET[1]:g} s. Peers every {POLL:g} s: lookback24h lists the "
        "last 24 h each run and keeps a blob-id file (no record dedupe); cursor lists "
        "[cursor, now) and moves the cursor to the newest contentCreated listed + 1 s.",
        "Requests of ours by tier (`siem_exporter_tier_requests_total`):\n"
        + "\n".join(
            f"- {o.volume}: " + ", ".join(f"{tier} {n}" for tier, n in o.stats.requests_by_tier)
            for o in ours
        ),
        "Target for ours: missing 0 and duplicates 0: "
        + "; ".join(
            f"{o.volume} {'met' if o.missing == o.duplicates == 0 else 'NOT met'} "
            f"(missing {o.missing}, duplicates {o.duplicates})"
            for o in ours
        ),
    ]


def _choose(text: str, defaults: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} for management_activity: {unknown}")
    return items or list(defaults)


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m bench.completeness --api management_activity``: writes completeness-o365.md.

    ``--volumes`` and ``--strategies`` keep their meaning with this API's own choices; left at
    the Graph defaults they mean this API's defaults.
    """
    volumes_text = "" if args.volumes == parser.get_default("volumes") else args.volumes
    strategies_text = "" if args.strategies == parser.get_default("strategies") else args.strategies
    try:
        volumes = _choose(volumes_text, [DEFAULT_VOLUME], list(VOLUMES), "volume")
        strategies = _choose(strategies_text, list(STRATEGIES), list(STRATEGIES), "strategy")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    smoke_volume, smoke_days, smoke_drain = SMOKE
    if args.smoke and not volumes_text:
        volumes = [smoke_volume]
    days = args.days or (smoke_days if args.smoke else DEFAULT_DAYS)
    drain = args.drain if args.drain is not None else smoke_drain if args.smoke else DEFAULT_DRAIN
    outcomes = [o for v in volumes for o in run_volume(v, days, drain, args.seed, strategies)]
    command = (
        f"python -m bench.completeness --api management_activity --volumes {','.join(volumes)} "
        f"--days {days:g} --drain {drain:g} --seed {args.seed}"
    )
    write_table(
        "completeness-o365" + ("-smoke" if args.smoke else ""),
        HEADER,
        rows(outcomes),
        notes(command, days, drain, args.seed, outcomes),
        Path(args.results_dir),
    )
    return 0

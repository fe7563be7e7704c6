"""Completeness benchmark: does a collector deliver every event, once, and at what API cost?

Every strategy of :mod:`bench.strategies` runs against the same seeded events of each
volume and lateness profile (:mod:`bench.model`), in virtual time, and is scored against the
ground truth:

- horizon and drain: events are scored over the horizon (3 days; 10M/day: 1 day), then every
  strategy keeps running (and events keep coming) for a drain (``DEFAULT_DRAIN``: 1 h, and
  ours' ``max_lookback`` plus an hour for the heavy tail), so a design that fetches late
  events on a slow schedule is judged after it had its chance.
- eligible: events visible before the horizon's end.
- never delivered: eligible, not delivered by the end of the drain. Delivered too late:
  eligible, first delivered more than ``--sla`` (default ours' ``max_lookback`` plus an
  hour: every profile's lateness fits in it) after it became visible. Missing = the sum. Slow: delivered more than an hour after becoming visible
  (informative, not missing).
- duplicates: deliveries beyond the first of each event.
- requests: every request sent (429s included); ev/req = unique events delivered per request.
- blocked: virtual seconds spent waiting for the budget or a Retry-After.
- backlog: events visible but not yet delivered, averaged (one sample a minute) over the two
  hours ending at 30 % of the horizon and over its last two hours: a single instant would
  mostly show where the fresh tier was in its cycle.
- latency: first delivery minus availability, over the eligible events delivered.

``python -m bench.completeness`` runs 100k/day and 1M/day for 3 days and 10M/day for 1 day,
every profile and strategy, and writes one table per volume to
``bench/results/completeness-<volume>.md``. ``--api management_activity`` asks the same of the
Office 365 Management Activity API instead (:mod:`bench.o365_completeness`).
"""

from __future__ import annotations

import argparse
import bisect
import logging
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.best import best_latencies
from bench.common import RESULTS_DIR, write_table
from bench.model import PROFILES, Events
from bench.strategies import (
    BUDGET,
    DEFAULT_STRATEGIES,
    OURS,
    REQUEST_SECONDS,
    STRATEGIES,
    RunStats,
    World,
)

VOLUMES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
DEFAULT_DAYS = {"100k": 3.0, "1M": 3.0, "10M": 1.0}
DEFAULT_SLA = OURS.max_lookback + 3600.0
# How long a profile can make an event wait after the horizon: (a) and (c) (whose incident
# ends mid-run) no more than 30 min of lateness; (b) up to 24 h, which ours fetches with its
# deepest sweep, at an age of max_lookback.
DEFAULT_DRAIN = {"a": 3600.0, "b": DEFAULT_SLA, "c": 3600.0}
SMOKE_DRAIN = 3600.0
SLOW = 3600.0
BEST_RATIO = 1.5
LATE_BEYOND = OURS.lookback + OURS.poll_interval  # what README's fresh window covers
KEEPS_UP_SLACK = 0.1  # a backlog that grew by less than this between early and late
BACKLOG_SPAN = 2 * 3600.0
BACKLOG_EARLY = 0.3  # share of the horizon: before (c)'s incident, past the start-up
HEADER = (
    "profile",
    "strategy",
    "eligible",
    "missing",
    "delivered late",
    "never delivered",
    "slow",
    "duplicates",
    "requests",
    "429s",
    "ev/req",
    "blocked",
    "backlog early",
    "backlog late",
    "latency p50",
    "latency p99",
    "latency p99.9",
    "latency max",
    "late p99",
    "late max",
    "release max",
    "guaranteed",
    "lost within guarantee",
    "wall",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One strategy's score on one volume and profile."""

    volume: str
    profile: str
    strategy: str
    eligible: int
    delivered_late: int
    never_delivered: int
    slow: int
    duplicates: int
    unique: int
    requests: int
    throttled: int
    blocked: float
    backlog_early: int
    backlog_late: int
    latency_p50: float | None
    latency_p99: float | None
    latency_p999: float | None
    latency_max: float | None
    late_p99: float | None  # events later than the fresh window of README's advice
    late_max: float | None
    release_max: float | None  # events an incident held back, from their release
    guaranteed_lateness: float | None
    lost_within_guarantee: int | None
    wall_seconds: float
    requests_by_tier: tuple[tuple[str, int], ...] = ()
    best_p99: float | None = None  # bench.best: the square-root allocation, true lateness
    best_max: float | None = None

    @property
    def missing(self) -> int:
        return self.delivered_late + self.never_delivered

    @property
    def per_request(self) -> float:
        return self.unique / self.requests if self.requests else 0.0


def _quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _backlog(available: Sequence[float], delivered: Sequence[float], at: float) -> int:
    """Visible by ``at`` and not delivered by then (both sequences sorted)."""
    return bisect.bisect_right(available, at) - bisect.bisect_right(delivered, at)


def _mean_backlog(
    available: Sequence[float], delivered: Sequence[float], until: float, span: float
) -> int:
    """The backlog sampled once a minute over ``[until - span, until)``, averaged."""
    samples = [
        _backlog(available, delivered, until - span + minute * 60.0)
        for minute in range(max(1, int(span // 60)))
    ]
    return round(sum(samples) / len(samples))


@dataclass(slots=True)
class Measure:
    """What reached the SIEM against the ground truth, before it is summarised.

    Apart from :class:`Outcome` so that a combined run can pool its sources' events into one
    score (quantiles do not add up, the events do).
    """

    start: float
    end: float
    eligible: int = 0
    delivered_late: int = 0
    never_delivered: int = 0
    slow: int = 0
    lost_within_guarantee: int = 0
    release_max: float | None = None
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    late_latencies: list[float] = field(default_factory=list)
    visible_at: list[float] = field(default_factory=list)
    delivered_at: list[float] = field(default_factory=list)

    def merge(self, other: Measure) -> Measure:
        """Both sources' events as one stream (same horizon)."""
        releases = [r for r in (self.release_max, other.release_max) if r is not None]
        return Measure(
            self.start,
            self.end,
            self.eligible + other.eligible,
            self.delivered_late + other.delivered_late,
            self.never_delivered + other.never_delivered,
            self.slow + other.slow,
            self.lost_within_guarantee + other.lost_within_guarantee,
            max(releases) if releases else None,
            self.sent + other.sent,
            self.latencies + other.latencies,
            self.late_latencies + other.late_latencies,
            self.visible_at + other.visible_at,
            self.delivered_at + other.delivered_at,
        )


def measure(world: World, sla: float, guaranteed: float | None) -> Measure:
    """Compare what reached the SIEM with the ground truth; one pass over the events."""
    events = world.events
    horizon = events.end
    m = Measure(events.start, events.end, sent=world.log.sent)
    released_at = events.incident[1] if events.incident else None
    for time_us, available, first in zip(
        events.times, events.available, world.log.first, strict=True
    ):
        if first and first < available:
            raise AssertionError("an event was delivered before it was visible: model bug")
        if available > horizon:
            continue
        m.eligible += 1
        lost = not first or first - available > sla
        if not first:
            m.never_delivered += 1
        else:
            m.latencies.append(first - available)
            if available - time_us / 1e6 > LATE_BEYOND:
                m.late_latencies.append(first - available)
            if available == released_at:
                m.release_max = max(m.release_max or 0.0, first - available)
            m.delivered_late += lost
            m.slow += first - available > SLOW
        if lost and guaranteed is not None and available - time_us / 1e6 <= guaranteed:
            m.lost_within_guarantee += 1
    m.delivered_at = [first for first in world.log.first if first]
    m.visible_at = list(events.available)
    return m


def summarise(
    m: Measure,
    volume: str,
    profile: str,
    strategy: str,
    stats: RunStats,
    wall: float,
) -> Outcome:
    """The figures of one table row."""
    delivered_at = sorted(m.delivered_at)
    visible_at = sorted(m.visible_at)
    latencies = sorted(m.latencies)
    late_latencies = sorted(m.late_latencies)
    early = m.start + BACKLOG_EARLY * (m.end - m.start)
    guaranteed = stats.guaranteed_lateness
    return Outcome(
        volume=volume,
        profile=profile,
        strategy=strategy,
        eligible=m.eligible,
        delivered_late=m.delivered_late,
        never_delivered=m.never_delivered,
        slow=m.slow,
        duplicates=m.sent - len(delivered_at),
        unique=len(delivered_at),
        requests=stats.requests,
        throttled=stats.throttled,
        blocked=stats.blocked,
        backlog_early=_mean_backlog(visible_at, delivered_at, early, BACKLOG_SPAN),
        backlog_late=_mean_backlog(visible_at, delivered_at, m.end, BACKLOG_SPAN),
        latency_p50=_quantile(latencies, 0.5),
        latency_p99=_quantile(latencies, 0.99),
        latency_p999=_quantile(latencies, 0.999),
        latency_max=latencies[-1] if latencies else None,
        late_p99=_quantile(late_latencies, 0.99),
        late_max=late_latencies[-1] if late_latencies else None,
        release_max=m.release_max,
        guaranteed_lateness=guaranteed,
        lost_within_guarantee=None if guaranteed is None else m.lost_within_guarantee,
        wall_seconds=wall,
        requests_by_tier=stats.requests_by_tier,
    )


def score(
    world: World, volume: str, strategy: str, stats: RunStats, sla: float, wall: float
) -> Outcome:
    """One strategy's run on one source, scored."""
    m = measure(world, sla, stats.guaranteed_lateness)
    return summarise(m, volume, world.events.profile.name, strategy, stats, wall)


def run_one(events: Events, volume: str, strategy: str, sla: float = DEFAULT_SLA) -> Outcome:
    """Run one strategy on ``events`` from a fresh world and score it."""
    world = World(events)
    started = time.perf_counter()
    stats = STRATEGIES[strategy](world)
    wall = time.perf_counter() - started
    return score(world, volume, strategy, stats, sla, wall)


def run_profile(
    volume: str,
    profile: str,
    days: float,
    drain: float,
    seed: int,
    strategies: Sequence[str],
    sla: float,
) -> list[Outcome]:
    """Every strategy on one volume and profile, on the same events; progress on stderr."""
    logging.getLogger("exporter").setLevel(logging.ERROR)
    events = Events(VOLUMES[volume], days, PROFILES[profile], seed, drain)
    outcomes = []
    ours = any(strategy.startswith("ours") for strategy in strategies)
    best = best_latencies(events, OURS, BUDGET) if ours else None
    for strategy in strategies:
        outcome = run_one(events, volume, strategy, sla)
        if best is not None and strategy.startswith("ours"):
            outcome = replace(outcome, best_p99=best.p99, best_max=best.maximum)
        outcomes.append(outcome)
        print(
            f"# {volume} {profile} {strategy}: missing {outcome.missing}, "
            f"duplicates {outcome.duplicates}, {outcome.wall_seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return outcomes


def keeps_up(outcome: Outcome, floor: float = 1.0) -> bool:
    """The backlog at the horizon's end is within ``KEEPS_UP_SLACK`` of the early one, or
    at most ``floor`` (a low-volume source's backlog is a handful of events, mere noise)."""
    return outcome.backlog_late <= max(outcome.backlog_early * (1 + KEEPS_UP_SLACK), floor)


def _percent(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.2f} %)" if whole and part else str(part)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def row(outcome: Outcome) -> list[object]:
    """One table row."""
    lost_guaranteed = outcome.lost_within_guarantee
    return [
        outcome.profile,
        outcome.strategy,
        outcome.eligible,
        _percent(outcome.missing, outcome.eligible),
        outcome.delivered_late,
        outcome.never_delivered,
        outcome.slow,
        _percent(outcome.duplicates, outcome.unique),
        outcome.requests,
        outcome.throttled,
        f"{outcome.per_request:.1f}",
        _duration(outcome.blocked),
        outcome.backlog_early,
        outcome.backlog_late,
        _duration(outcome.latency_p50),
        _duration(outcome.latency_p99),
        _duration(outcome.latency_p999),
        _duration(outcome.latency_max),
        _duration(outcome.late_p99),
        _duration(outcome.late_max),
        _duration(outcome.release_max),
        _duration(outcome.guaranteed_lateness),
        "-" if lost_guaranteed is None else lost_guaranteed,
        f"{outcome.wall_seconds:.0f} s",
    ]


def verdicts(volume: str, outcomes: Sequence[Outcome]) -> list[str]:
    """The targets for ours (and its variants) at this volume, each met or not, with the figure."""
    lines = []

    def check(label: str, ok: bool, figure: str) -> None:
        lines.append(f"- {label}: {'met' if ok else 'NOT met'} ({figure})")

    heavy = volume == "10M"
    for o in outcomes:
        if not o.strategy.startswith("ours"):
            continue
        tag = f"{o.strategy} ({o.profile})"
        if heavy and o.profile == "b":
            lost = o.lost_within_guarantee
            check(
                f"{tag} nothing lost within the guaranteed lateness",
                lost == 0,
                "no guarantee gauge exported"
                if lost is None
                else f"{lost} lost within {_duration(o.guaranteed_lateness)}",
            )
            continue
        check(
            f"{tag} missing 0, duplicates 0",
            o.missing == 0 and o.duplicates == 0,
            f"missing {o.missing}, duplicates {o.duplicates}",
        )
        if heavy:
            check(
                f"{tag} keeps up (late backlog within {KEEPS_UP_SLACK:.0%} of the early one)",
                keeps_up(o),
                f"backlog {o.backlog_early} -> {o.backlog_late}",
            )
        for label, figure, target in _latency_targets(volume, o):
            check(
                f"{tag} {label} within {_duration(target)}",
                figure is not None and figure <= target,
                _duration(figure),
            )
        for label, ours, best in (
            ("p99", o.latency_p99, o.best_p99),
            ("max", o.latency_max, o.best_max),
        ):
            if ours is not None and best:
                check(
                    f"{tag} {label} at most {BEST_RATIO:g} x the best the budget allows",
                    ours <= BEST_RATIO * best,
                    f"{_duration(ours)} vs {_duration(best)}: {ours / best:.2f}",
                )
        if not heavy:
            check(
                f"{tag} p50 delivery latency within 60 s",
                o.latency_p50 is not None and o.latency_p50 <= 60.0,
                _duration(o.latency_p50),
            )
    return lines


def _latency_targets(volume: str, o: Outcome) -> list[tuple[str, float | None, float]]:
    """Issue 11's latency targets for ours at this volume and profile."""
    minute = 60.0
    targets = {
        ("100k", "a"): [("p99", o.latency_p99, 2 * minute)],
        ("100k", "b"): [("max", o.latency_max, 15 * minute)],
        ("1M", "a"): [("p99", o.latency_p99, 5 * minute), ("max", o.latency_max, 10 * minute)],
        ("1M", "b"): [("p99.9", o.latency_p999, 75 * minute)],
        ("1M", "c"): [("release max", o.release_max, 15 * minute)],
        ("10M", "a"): [("p99", o.latency_p99, 30 * minute)],
    }
    return targets.get((volume, o.profile), [])


def notes(
    volume: str,
    days: float,
    drains: dict[str, float],
    sla: float,
    seed: int,
    outcomes: Sequence[Outcome],
) -> list[str]:
    """What the table measured, how, and the verdicts for ours."""
    source = OURS
    return [
        f"{VOLUMES[volume]:,} events/day over a horizon of {days:g} simulated day(s), then a "
        "drain of "
        + ", ".join(f"{_duration(d)} for ({p})" for p, d in drains.items())
        + f"; seed {seed}; same events for every strategy of a profile. Budget 5 requests "
        "per sliding 10 s (429 + Retry-After, "
        f"not consuming budget), pages of 1000 newest first, result set fixed at the first "
        f"page, {REQUEST_SECONDS} s per request.",
        "Profiles: "
        + "; ".join(f"({p.name}) {p.description}" for p in PROFILES.values())
        + ". The incident of (c) is centred in the run.",
        "Eligible = visible before the horizon's end. Missing = delivered more than "
        f"{_duration(sla)} after becoming visible (delivered late) + never delivered by the end "
        f"of the drain. Slow = delivered more than {_duration(SLOW)} after becoming visible "
        "(not missing). Duplicates as a share of unique deliveries. ev/req = unique events "
        "delivered per request (429s included). Backlog = visible, not yet delivered, sampled "
        "each minute and averaged over the 2 h ending at 30 % of the horizon (early) and over "
        "its last 2 h (late). Latency = first "
        "delivery minus availability. Guaranteed = "
        "`siem_exporter_guaranteed_lateness_seconds` at the end of the run, when exported; "
        "lost within guarantee counts missing events no later than it. Late p99 and late max: "
        f"over the events more than {_duration(LATE_BEYOND)} late (README's fresh window). "
        "Release max: the longest wait, from its release, of an event an incident held back. "
        "Best: the latency our planner reaches when told the true lateness (bench/best.py).",
        f"ours: the real SourceLoop and ledger, poll_interval {source.poll_interval:g} s, "
        f"lookback {source.lookback:g} s, max_lookback {source.max_lookback:g} s, page_size "
        f"{source.page_size}. Baselines: nonoverlap [last, now) every 10 min; seed ge now-6h "
        "every 3 min, deduped against the previous run, 5 s pause on 429; checkpoint gt newest "
        "seen and le now-7min every 5 min; halfopen [last_end, now-30s) every 60 s.",
        "Requests by tier (`siem_exporter_tier_requests_total`):\n"
        + "\n".join(
            f"- {o.strategy} ({o.profile}): "
            + ", ".join(f"{tier} {count}" for tier, count in o.requests_by_tier)
            for o in outcomes
            if o.requests_by_tier
        ),
        "Targets for ours:\n" + "\n".join(verdicts(volume, outcomes)),
    ]


def _parse_list(text: str, known: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.completeness", description=__doc__)
    parser.add_argument("--volumes", default="100k,1M,10M", help="of 100k, 1M, 10M")
    parser.add_argument("--profiles", default="a,b,c", help="of a, b, c")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--days", type=float, help="simulated days (default 3; 10M: 1)")
    parser.add_argument("--drain", type=float, help="seconds run after the horizon")
    parser.add_argument(
        "--sla", type=float, default=DEFAULT_SLA, help="seconds from visible to delivered"
    )
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--jobs", type=int, default=1, help="profiles run in parallel processes")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="100k/day, a 12 h horizon, a 1 h drain; tables named *-smoke",
    )
    parser.add_argument(
        "--mix",
        help="events a day of interactive, non-interactive, service-principal and directory-"
        "audit events, e.g. 1M,5M,1M,100k: ours on four sources sharing one budget "
        "(--volumes and --strategies ignored; default horizon half a day); writes "
        "completeness-combined.md",
    )
    parser.add_argument(
        "--api",
        choices=("graph", "management_activity"),
        default="graph",
        help="management_activity: the Office 365 Management Activity API's model "
        "(bench/o365_completeness.py; its own volumes and strategies); writes "
        "completeness-o365.md",
    )
    args = parser.parse_args(argv)
    if args.api == "management_activity":
        from bench.o365_completeness import run_command as run_o365  # imported when asked

        return run_o365(parser, args)
    if args.mix is not None:
        from bench.combined import run_command  # it builds on this module: imported late

        return run_command(parser, args)
    try:
        volumes = _parse_list(args.volumes, list(VOLUMES), "volume")
        profiles = _parse_list(args.profiles, list(PROFILES), "profile")
        strategies = _parse_list(args.strategies, list(STRATEGIES), "strategy")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.smoke:
        volumes = ["100k"] if args.volumes == parser.get_default("volumes") else volumes
        args.days = args.days or 0.5
        args.drain = SMOKE_DRAIN if args.drain is None else args.drain
    days = {v: args.days or DEFAULT_DAYS[v] for v in volumes}
    drains = {p: DEFAULT_DRAIN[p] if args.drain is None else args.drain for p in profiles}
    tasks = [
        (volume, profile, days[volume], drains[profile], args.seed, strategies, args.sla)
        for volume in volumes
        for profile in profiles
    ]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(run_profile, *zip(*tasks, strict=True)))
    else:
        results = [run_profile(*task) for task in tasks]
    for volume in volumes:
        outcomes = [o for batch in results for o in batch if o.volume == volume]
        write_table(
            f"completeness-{volume}" + ("-smoke" if args.smoke else ""),
            HEADER,
            [row(o) for o in outcomes],
            notes(volume, days[volume], drains, args.sla, args.seed, outcomes),
            args.results_dir,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

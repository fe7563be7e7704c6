"""Completeness on one budget: every sign-in stream and the directory audits, as separate sources.

Graph's identity reports (sign-ins of every type, directory audits) share one budget of 5
requests per 10 s per app and tenant. A SOC collects them as separate sources, so the
question the single-source tables cannot answer is whether the real collector, wired as
``exporter.service`` wires one budget family (one :class:`RequestBudget`, one
:class:`BudgetShares`, one ledger, a loop per source in a thread of its own), still loses and
duplicates nothing and keeps up when the streams' volumes add up.

Each source has its own name, endpoint and seeded events with the profile's lateness (an
incident of (c) holds back every stream at once, as an outage on Microsoft's side would);
every source's model draws from one :class:`bench.model.Throttle`, and the loops take turns
on one :class:`bench.model.TurnClock`, so a run is deterministic for a seed. Each source is
scored as in :mod:`bench.completeness_score`, and all of them together as one stream.

The table also gives what the plan costs, in events fetched per event delivered, by tier,
and from it the physical ceiling of one app registration: 43,200 requests a day times 1,000
events a page, divided by the fetches per event the plan needs (the fresh tier, the shallow
sweeps and any catch-up, in full pages of requests as measured, plus one for the deepest
sweep, which reads every event once at ``max_lookback`` and so never runs in a run shorter
than that). The rescans and the early sweep are not part of that need: they spend what is
left (the early sweep, or what its stream saves by querying its fresh window less often),
and shrink to nothing as the volume grows.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

from bench.common import write_table
from bench.completeness import DEFAULT_DRAIN, SMOKE_DRAIN, duration, parse_list, percent
from bench.completeness_score import (
    LATE_BEYOND,
    SLOW,
    Outcome,
    keeps_up,
    measure,
    settled_after,
    summarise,
)
from bench.model import DAY, PROFILES, Events, Throttle, TurnClock
from bench.strategies import BUDGET, OURS, RunStats, World, run_sources
from exporter.config import SourceConfig
from exporter.graph_query import GraphSettings
from exporter.schedule import CATCH_UP
from exporter.tiers import DEEPEST, EARLY_SWEEP, RESCAN_PREFIX

BETA_SIGN_INS = "/beta/auditLogs/signIns"
SOURCES: tuple[SourceConfig, ...] = (
    replace(OURS, name="interactive"),
    replace(
        OURS,
        name="noninteractive",
        settings=GraphSettings(BETA_SIGN_INS, "createdDateTime", ("nonInteractiveUser",)),
    ),
    replace(
        OURS,
        name="serviceprincipal",
        settings=GraphSettings(BETA_SIGN_INS, "createdDateTime", ("servicePrincipal",)),
    ),
    replace(
        OURS,
        name="directoryaudits",
        settings=GraphSettings("/v1.0/auditLogs/directoryAudits", "activityDateTime"),
    ),
)
# A day holds (c)'s 6 h incident with 9 h either side; the deepest sweep (25 h) never runs
# in it, the ceiling adds its read. (b) runs longer by default: see horizon_days.
DEFAULT_DAYS = 1.0
PAGE_EVENTS = 1000
REQUESTS_PER_DAY = BUDGET.rate * DAY  # 43,200
ALL = "all"
HEADER = (
    "profile",
    "source",
    "events/day",
    "eligible",
    "missing",
    "duplicates",
    "requests",
    "requests/day",
    "429s",
    "fetches/event",
    "pages/event",
    "backlog early",
    "backlog late",
    "keeps up",
    "latency p50",
    "latency p99",
    "latency p99.9",
    "latency max",
    "late p99",
    "late max",
    "release max",
    "guaranteed",
    "lost within guarantee",
)


def parse_volume(text: str) -> int:
    """``100k``, ``1M``, ``1.5M`` or a plain number: events a day."""
    text = text.strip()
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    number = float(text[:-1] if scale > 1 else text)
    if number <= 0 or not math.isfinite(number):
        raise ValueError(f"not a volume: {text!r}")
    return round(number * scale)


def parse_mix(text: str) -> tuple[int, ...]:
    """Events a day of each of :data:`SOURCES`, in order, from ``1M,5M,1M,100k``."""
    volumes = tuple(parse_volume(item) for item in text.split(","))
    if len(volumes) != len(SOURCES):
        names = ", ".join(source.name for source in SOURCES)
        raise ValueError(f"--mix takes {len(SOURCES)} volumes ({names}), got {len(volumes)}")
    return volumes


def _volume_text(per_day: float) -> str:
    if per_day >= 1_000_000:
        return f"{per_day / 1_000_000:g}M"
    return f"{per_day / 1_000:g}k" if per_day >= 1_000 else f"{per_day:g}"


@dataclass(frozen=True, slots=True)
class SourceResult:
    """One source's score in a combined run (``name`` :data:`ALL` for the pooled streams)."""

    name: str
    per_day: float
    outcome: Outcome
    stats: RunStats
    run_days: float  # horizon and drain: what requests are spread over

    @property
    def fetches_per_event(self) -> float:
        """Events the pages returned, new or not, per event delivered."""
        fetched = sum(count for _, count in self.stats.fetched_by_tier)
        return fetched / self.outcome.unique if self.outcome.unique else 0.0

    @property
    def page_fetches_per_event(self) -> float:
        """What the budget paid per event, in full pages: requests x page size / events."""
        return self.outcome.requests * PAGE_EVENTS / max(1, self.outcome.unique)

    @property
    def plan_fetches_per_event(self) -> float:
        """What the plan needs per event, in full pages: the fresh tier, the shallow sweeps
        and any catch-up as measured, plus one read by the deepest sweep (not the early
        sweep: like the rescans, it is paid from what the plans leave)."""
        needed = sum(
            count
            for tier, count in self.stats.requests_by_tier
            if not tier.startswith(RESCAN_PREFIX) and tier not in (DEEPEST, EARLY_SWEEP)
        )
        return needed * PAGE_EVENTS / max(1, self.outcome.unique) + 1.0

    @property
    def keeps_up(self) -> bool | None:
        """The backlog did not grow, give or take the events of one fresh window (None: the
        horizon was too short to tell)."""
        return keeps_up(self.outcome, self.per_day / DAY * (OURS.lookback + OURS.poll_interval))


@dataclass(frozen=True, slots=True)
class CombinedRun:
    """Every source of one profile on one budget, and all of them pooled."""

    profile: str
    sources: tuple[SourceResult, ...]
    total: SourceResult
    wall_seconds: float


def run_combined(
    mix: Sequence[int], days: float, profile: str, drain: float, seed: int, sla: float
) -> CombinedRun:
    """The sources of :data:`SOURCES` at ``mix`` events a day, on one budget, scored."""
    logging.getLogger("exporter").setLevel(logging.ERROR)
    stop = threading.Event()
    streams = [
        Events(per_day, days, PROFILES[profile], seed + offset, drain)
        for offset, per_day in enumerate(mix)
    ]
    clock = TurnClock(streams[0].start, streams[0].stop, stop)
    throttle = Throttle(clock.now, BUDGET.requests, BUDGET.per)
    worlds = [World(events, clock, stop, throttle) for events in streams]
    started = time.perf_counter()
    stats = run_sources(list(zip(SOURCES, worlds, strict=True)), clock, stop, clock.run)
    wall = time.perf_counter() - started
    run_days = days + drain / DAY
    label = ",".join(_volume_text(per_day) for per_day in mix)
    results = []
    pooled = None
    for source, world, stat, per_day in zip(SOURCES, worlds, stats, mix, strict=True):
        m = measure(world, sla, stat.guaranteed_lateness)
        pooled = m if pooled is None else pooled.merge(m)
        outcome = summarise(m, label, profile, source.name, stat, wall)
        results.append(SourceResult(source.name, per_day, outcome, stat, run_days))
    assert pooled is not None, "SOURCES is not empty"
    total_stats = _pool(stats)
    total = SourceResult(
        ALL,
        sum(mix),
        summarise(pooled, label, profile, ALL, total_stats, wall),
        total_stats,
        run_days,
    )
    print(
        f"# combined {label} {profile}: missing {total.outcome.missing}, "
        f"duplicates {total.outcome.duplicates}, {wall:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return CombinedRun(profile, tuple(results), total, wall)


def _pool(stats: Sequence[RunStats]) -> RunStats:
    """The sources' costs added up; the guarantee is the weakest source's."""
    by_tier: Counter[str] = Counter()
    fetched: Counter[str] = Counter()
    planned: Counter[str] = Counter()
    for stat in stats:
        by_tier.update(dict(stat.requests_by_tier))
        fetched.update(dict(stat.fetched_by_tier))
        planned.update(dict(stat.planned_by_tier))
    guarantees = [s.guaranteed_lateness for s in stats if s.guaranteed_lateness is not None]
    return RunStats(
        sum(s.requests for s in stats),
        sum(s.throttled for s in stats),
        sum(s.blocked for s in stats),
        min(guarantees) if guarantees else None,
        tuple(sorted(by_tier.items())),
        tuple(sorted(fetched.items())),
        tuple(sorted(planned.items())),
    )


def row(result: SourceResult) -> list[object]:
    """One table row."""
    o = result.outcome
    lost = o.lost_within_guarantee
    return [
        o.profile,
        f"**{result.name}**" if result.name == ALL else result.name,
        _volume_text(result.per_day),
        o.eligible,
        percent(o.missing, o.eligible),
        percent(o.duplicates, o.unique),
        o.requests,
        f"{o.requests / result.run_days:,.0f}",
        o.throttled,
        f"{result.fetches_per_event:.2f}",
        f"{result.page_fetches_per_event:.2f}",
        "-" if o.backlog_early is None else o.backlog_early,
        o.backlog_late,
        _verdict_text(result.keeps_up),
        duration(o.latency_p50),
        duration(o.latency_p99),
        duration(o.latency_p999),
        duration(o.latency_max),
        duration(o.late_p99),
        duration(o.late_max),
        duration(o.release_max),
        duration(o.guaranteed_lateness),
        "-" if lost is None else lost,
    ]


def ceiling(result: SourceResult) -> float:
    """Events a day one app registration's budget could read with this run's plan."""
    plan = result.plan_fetches_per_event
    return REQUESTS_PER_DAY * PAGE_EVENTS / plan if plan else math.inf


def _verdict_text(keeps: bool | None) -> str:
    return "not measured" if keeps is None else "yes" if keeps else "NO"


def horizon_days(profile: str, days: float | None) -> float:
    """``days`` when given; by default a day, or longer where the profile's late events need
    longer to settle: the early backlog window must lie in the first half of the horizon for
    keeping up to be judged (:func:`bench.completeness_score.early_backlog_end`), so (b), up
    to 24 h late, runs 2.25 days."""
    if days:
        return days
    return max(DEFAULT_DAYS, 2 * settled_after(PROFILES[profile].lateness.max_lateness) / DAY)


def notes(
    mix: Sequence[int],
    horizons: dict[str, float],
    drains: dict[str, float],
    sla: float,
    seed: int,
    runs: Sequence[CombinedRun],
) -> list[str]:
    """What the table measured, how, where each source's requests went, and the verdicts."""
    source = OURS
    sources = ", ".join(
        f"{s.name} ({s.settings.endpoint}"
        + (
            f", signInEventTypes {'/'.join(s.settings.sign_in_event_types)}"
            if s.settings.sign_in_event_types
            else ""
        )
        + f", {_volume_text(per_day)}/day)"
        for s, per_day in zip(SOURCES, mix, strict=True)
    )
    lines = [
        f"{len(SOURCES)} sources on one budget: {sources}; {_volume_text(sum(mix))} events a "
        "day together. Horizon "
        + ", ".join(
            f"{horizons[p]:g} simulated day(s) then a drain of {duration(d)} for ({p})"
            for p, d in drains.items()
        )
        + f"; seed {seed} (source i: seed + i). Budget {BUDGET.requests} requests per sliding "
        f"{BUDGET.per:g} s for all sources together (429 + Retry-After, not consuming budget); "
        "the collector side as exporter.service wires one family: one RequestBudget, one "
        "BudgetShares, one ledger, one SourceLoop per source, each in its own thread, taking "
        "turns on one virtual clock (deterministic for a seed). Every source: poll_interval "
        f"{source.poll_interval:g} s, lookback {source.lookback:g} s, max_lookback "
        f"{source.max_lookback:g} s, page_size {source.page_size}.",
        "Per source as in the single-source tables: eligible = visible before the horizon's "
        f"end; missing = delivered more than {duration(sla)} after becoming visible + never "
        "delivered by the end of the drain; backlog = visible, not delivered, averaged over "
        "the 2 h ending at 30 % of the horizon or, if later, 3 h past the profile's longest "
        "lateness, when the late events' flow has settled (early), and over its last 2 h "
        "(late); latency = first delivery "
        f"minus availability; late p99/max over events more than {duration(LATE_BEYOND)} "
        "late; release max = the longest wait, from its release, of an event (c)'s incident "
        f"held back; slow = more than {duration(SLOW)} (counted, not missing). Requests/day "
        "spread over horizon and drain. Fetches/event = events the pages returned (new or "
        "not) per event delivered (a fresh query stretches to fill its last page, so a quiet "
        "source reads each event many times at no extra request); pages/event = requests x "
        f"{PAGE_EVENTS} / events delivered, what the budget paid per event in full pages. "
        f"Keeps up: the late backlog is within 10 % of the early one, or within the events "
        f"of one fresh window (lookback + poll interval). **{ALL}** pools the sources' events.",
    ]
    for run in runs:
        lines.append(
            f"Requests by tier, ({run.profile}) (`siem_exporter_tier_requests_total`; in "
            "brackets what the tier's plans priced, `tier_planned_requests_per_second` "
            "integrated over the run), then events fetched by tier per event delivered:\n"
            + "\n".join(
                f"- {r.name}: "
                + ", ".join(_sent_and_planned(r.stats))
                + "; fetched per event: "
                + ", ".join(
                    f"{tier} {count / max(1, r.outcome.unique):.2f}"
                    for tier, count in r.stats.fetched_by_tier
                    if count
                )
                for r in (*run.sources, run.total)
            )
        )
    lines.append(
        "Physical ceiling of one app registration (43,200 requests a day x 1,000 events a "
        "page / fetches per event the plan needs, in full pages: the requests of the fresh "
        f"tier, the shallow sweeps and any {CATCH_UP} x {PAGE_EVENTS} / events delivered, + 1 "
        "for the deepest sweep at max_lookback, which reads every event once (counted so, "
        "not as measured: a one-day run never reaches it); rescans and the early sweep "
        f"({EARLY_SWEEP}) excluded: they spend what is left, or what a stream saves by "
        "querying its fresh window less often, and shrink to nothing near the ceiling):\n"
        + "\n".join(
            f"- ({run.profile}): {run.total.plan_fetches_per_event:.2f} fetches per event "
            f"needed ({run.total.page_fetches_per_event:.2f} paid, rescans included): ceiling "
            f"{ceiling(run.total) / 1e6:.1f}M events a day, "
            f"{(1 - BUDGET.reserve) * ceiling(run.total) / 1e6:.1f}M after the "
            f"{BUDGET.reserve:.0%} reserve"
            for run in runs
        )
    )
    lines.append("Targets:\n" + "\n".join(verdicts(runs)))
    return lines


def _sent_and_planned(stats: RunStats) -> list[str]:
    """Each tier's requests sent, and what its plans priced beside them."""
    planned = dict(stats.planned_by_tier)
    return [
        f"{tier} {count} ({planned[tier]:,.0f})" if tier in planned else f"{tier} {count}"
        for tier, count in stats.requests_by_tier
    ]


def verdicts(runs: Sequence[CombinedRun]) -> list[str]:
    """Missing 0, duplicates 0 and keeping up, per source and pooled, each met or not."""
    lines = []
    for run in runs:
        for r in (*run.sources, run.total):
            o = r.outcome
            ok = o.missing == 0 and o.duplicates == 0 and r.keeps_up
            lines.append(
                f"- ({run.profile}) {r.name} missing 0, duplicates 0, keeps up: "
                f"{'met' if ok else 'NOT met'} (missing {o.missing}, duplicates "
                f"{o.duplicates}, backlog {o.backlog_early} -> {o.backlog_late}, keeps up "
                f"{_verdict_text(r.keeps_up)})"
            )
    return lines


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``python -m bench.completeness --mix``: the sources on one budget, one table."""
    try:
        mix = parse_mix(args.mix)
        profiles = parse_list(args.profiles, list(PROFILES), "profile")
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    if args.smoke and args.drain is None:
        args.drain = SMOKE_DRAIN
    drains = {p: DEFAULT_DRAIN[p] if args.drain is None else args.drain for p in profiles}
    horizons = {p: horizon_days(p, args.days) for p in profiles}
    tasks = [(mix, horizons[p], p, drains[p], args.seed, args.sla) for p in profiles]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(run_combined, *zip(*tasks, strict=True)))
    else:
        runs = [run_combined(*task) for task in tasks]
    write_table(
        "completeness-combined" + ("-smoke" if args.smoke else ""),
        HEADER,
        [row(r) for run in runs for r in (*run.sources, run.total)],
        notes(mix, horizons, drains, args.sla, args.seed, runs),
        args.results_dir,
    )
    return 0

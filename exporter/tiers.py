"""Which stretches of event time to ask the API for, and how often: pure, clock-free planning.

Graph allows a few requests per 10 seconds per tenant, and every page an overlapping window
fetches again spends that budget. One fixed overlap cannot both deliver fast and catch events
that turn up hours late, so a source is polled in tiers that share one ledger:

- ``fresh``: every ``interval`` (at least ``poll_interval``), the last ``window`` seconds
  (at least ``lookback`` plus the interval, so successive queries overlap by ``lookback``).
  It catches the bulk of events within about one interval of their arrival.
- sweeps, deepest last: each keeps a *frontier* in event time and, once a band of
  ``interval`` seconds has aged past the tier's ``age``, queries the whole bands from the
  frontier up to ``now - age`` and moves the frontier up. Every stretch of event time is
  thus asked for exactly once at an age of at least ``age``: any event at most ``age`` late
  is visible by then and caught. The deepest sweep's age is ``max_lookback``, so lateness
  up to ``max_lookback`` is covered as long as it keeps up; shallower sweeps only shorten
  the wait for moderately late events.

Sizes come from what the collector measures: the arrival-lag distribution (a decaying
histogram) sizes the fresh window, the event rate in events per second of event time (as
the shallow sweeps count it in their settled bands) prices each tier in pages, and the
budget decides how often the fresh tier can run and how many sweeps it can afford. Windows
are stretched to nearly fill their last page, which is free.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

FRESH = "fresh"
DEEPEST = "deepest"
RESCAN_PREFIX = "rescan-"  # the rescans of spare budget, exporter.rescan
EDGE_SLACK = 1e-6  # seconds: band edges computed two ways meet within rounding
WAIT_MERGE_RATIO = 1.5  # neighbouring bands of lateness this close in wait read as one
MAX_SHALLOW_SWEEPS = 3
SHALLOW_SHARE_OF_FRESH = 0.3  # each shallow sweep fetches every event once more: keep them few
FRESH_QUANTILE = 0.95
HEADROOM = 1.25
MIN_RATE = 1e-6  # events/s below which a source is treated as silent
LAG_HALF_LIFE = 6 * 3600.0
MIN_LAG_SAMPLES = 50
DEEPEST_INTERVAL_CAP = 3600.0
# Where the first shallow sweep looks: past the 15-30 minutes that non-interactive sign-ins
# are commonly late (reference/graph-api.md), so that only the rare extreme waits for the
# deepest sweep.
FIRST_SWEEP_AGE = 45 * 60.0
# The early sweep: past the 5 minutes within which Microsoft once put 99 % of sign-ins and
# audits (reference/graph-api.md), so that the few per cent the fresh window misses
# (it covers FRESH_QUANTILE of arrival lags) arrive within minutes, not at FIRST_SWEEP_AGE.
EARLY_SWEEP = "sweep-0"
EARLY_SWEEP_AGE = 10 * 60.0
# How far short of its last page a stretched window stops (fill_pages): the spread of the
# events it holds, a Poisson count's, and the measured rate's relative error.
FILL_SIGMAS = 2.0
RATE_ERROR = 0.01
# How finely the fresh interval is slowed until the tiers fit the budget (or pay for the
# early sweep): each step leaves up to this share of the source's budget unspent, and the
# busiest stream, which is the one slowed, needs it most.
SLOWING_STEP = 1.05
# The slowest fresh interval, in multiples of ``lookback``: past it a stream's tiers no
# longer fit its share, and the plan overspends rather than leave events waiting longer.
SLOWEST_FRESH_LOOKBACKS = 8
LAG_BUCKETS = (
    1.0,
    2.0,
    5.0,
    10.0,
    15.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    172800.0,
    604800.0,
)


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """The bounds a source's config sets on every plan."""

    poll_interval: float
    lookback: float
    max_lookback: float
    page_size: int


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: queried every ``interval``; ``age`` is the lateness it guarantees.

    For the fresh tier ``window`` is how far back each query reaches; a sweep queries from
    its frontier to ``now - age``.
    """

    name: str
    interval: float
    age: float
    window: float
    requests_per_second: float  # the planned spend, which the scheduler reserves for it

    @property
    def is_fresh(self) -> bool:
        return self.name == FRESH

    @property
    def is_rescan(self) -> bool:
        """A rescan's ``age`` and ``age + window`` bound the band of age it re-reads."""
        return self.name.startswith(RESCAN_PREFIX)


@dataclass
class LagHistogram:
    """Observed arrival lags in fixed buckets, decaying with a half-life: a cheap quantile."""

    counts: list[float] = field(default_factory=lambda: [0.0] * (len(LAG_BUCKETS) + 1))
    at: float = 0.0

    def observe(self, lags: Iterable[float], now: float) -> None:
        """Add a poll's lags, after decaying what was there by the time since the last call."""
        if self.at:
            factor = 0.5 ** (max(0.0, now - self.at) / LAG_HALF_LIFE)
            self.counts = [c * factor for c in self.counts]
        self.at = now
        for lag in lags:
            index = next((i for i, bound in enumerate(LAG_BUCKETS) if lag <= bound), -1)
            self.counts[index] += 1

    def mass(self, low: float, high: float) -> float:
        """The (decayed) count of lags in ``(low, high]``, interpolated linearly within buckets."""
        total, lower = 0.0, 0.0
        for bound, count in zip((*LAG_BUCKETS, math.inf), self.counts, strict=True):
            if count and high > lower and low < bound:
                if math.isinf(bound):
                    total += count if math.isinf(high) else 0.0  # no shape to interpolate
                else:
                    overlap = min(high, bound) - max(low, lower)
                    total += count * max(0.0, overlap) / (bound - lower)
            lower = bound
        return total

    def quantile(self, q: float) -> float | None:
        """The lag below which a share ``q`` of lags fall; None with too few samples.

        Interpolated linearly within the bucket, as PromQL's ``histogram_quantile`` does;
        beyond the last bound it is infinite.
        """
        total = sum(self.counts)
        if total < MIN_LAG_SAMPLES:
            return None
        running, lower = 0.0, 0.0
        for bound, count in zip((*LAG_BUCKETS, math.inf), self.counts, strict=True):
            if count and running + count >= q * total:
                if math.isinf(bound):
                    return bound
                return lower + (bound - lower) * (q * total - running) / count
            running += count
            lower = bound
        return lower


def pages_for(events: float, page_size: int) -> int:
    """Requests one query needs: at least one, even for nothing."""
    return max(1, math.ceil(events / page_size - 1e-9))


def fill_pages(window: float, rate: float, page_size: int) -> float:
    """Stretch ``window`` to hold as many events as its last page can carry anyway.

    Not to the brim: the events in a stretch of time vary (a Poisson count's spread is its
    square root) and so does the measured rate, and one event too many costs a whole page,
    half as much again for a two-page band. The stretch stops ``FILL_SIGMAS`` spreads short,
    where the expected cost per event is lowest (about 2: 100 events short of 2,000).
    """
    if rate < MIN_RATE:
        return window
    capacity = pages_for(rate * window, page_size) * page_size
    spread = math.sqrt(capacity + (RATE_ERROR * capacity) ** 2)
    return max(window, (capacity - FILL_SIGMAS * spread) / rate)


def plan_tiers(
    policy: SourcePolicy,
    rate: float,
    lag_quantile: float | None,
    budget_rate: float,
    room: float | None = None,
) -> tuple[Tier, ...]:
    """The tiers for a source producing ``rate`` events/s on a budget of ``budget_rate`` req/s.

    ``budget_rate`` is this source's share of the tenant's budget, less the reserve (what
    the tiers leave of it goes to :mod:`exporter.rescan`); ``lag_quantile`` the
    measured arrival lag (first seen minus event time) that the fresh tier should cover.
    Two sweeps are always planned: the deepest, at ``max_lookback``, which is what covers
    it, and a first shallow one, which catches what the fresh window misses within about an
    hour rather than at ``max_lookback``. The fresh tier gets what is left: it is slowed down
    (fewer, wider queries re-fetch less) until all three fit. An early sweep at
    ``EARLY_SWEEP_AGE`` finds what the fresh window misses (it covers ``FRESH_QUANTILE`` of
    arrival lags, so a few per cent) within minutes instead of at ``FIRST_SWEEP_AGE``. It
    fetches every event once more. ``room`` is what the other sources' tiers leave
    (:class:`exporter.budget.BudgetShares`; None: plan no early sweep); the early sweep is
    paid from what of it the required tiers leave, which would otherwise go to rescans: it
    comes before them because the events it finds are many more than the hours-late ones
    rescans look for. Where that is too little, the fresh tier is slowed down to pay for it,
    but only as far as :func:`_worth_slowing` allows. Further shallow sweeps shorten
    the wait of moderately late events but fetch every event once more each, so they are
    added only while all shallow sweeps together cost under ``SHALLOW_SHARE_OF_FRESH`` of
    the fresh tier. Shallow ages start at ``FIRST_SWEEP_AGE`` (or twice the fresh tier's
    guarantee) and are spaced geometrically towards ``max_lookback``, closer to the young
    end, where most late events are.
    """
    page = policy.page_size
    deepest = _sweep(
        DEEPEST, policy.max_lookback, _deepest_interval(policy), rate, page, stretch=False
    )
    interval = policy.poll_interval
    while True:
        fresh = _fresh(policy, interval, rate, lag_quantile)
        shallow = _shallow_sweeps(policy, fresh, rate, 1)
        spend = _spend((fresh, *shallow, deepest))
        if spend <= budget_rate or interval >= policy.lookback * SLOWEST_FRESH_LOOKBACKS:
            break
        interval *= SLOWING_STEP
    cap = budget_rate
    early = [] if room is None else _early_sweep(policy, fresh, rate, shallow)
    if early and room is not None:
        allowance = max(spend, min(room, budget_rate))
        if spend + _spend(early) > allowance:
            slowed = _slowed_for_early(policy, rate, lag_quantile, fresh, deepest, allowance)
            if slowed is not None:
                fresh, early, shallow = slowed
            else:
                early = []
        if early:
            cap = allowance
    affordable = min(
        cap - _spend((fresh, *early, deepest)),
        SHALLOW_SHARE_OF_FRESH * fresh.requests_per_second,
    )
    for count in range(MAX_SHALLOW_SWEEPS, 1, -1):
        candidates = _shallow_sweeps(policy, fresh, rate, count)
        if _spend(candidates) <= affordable:
            shallow = candidates
            break
    return (fresh, *early, *shallow, deepest)


def outgrown(tiers: Iterable[Tier], rate: float, page_size: int) -> bool:
    """Whether ``rate`` fills a window or band of ``tiers`` past the pages it was planned for.

    Windows are stretched to just short of their last page (:func:`fill_pages`), so a rate a
    few per cent above the plan's costs a page more on every query of that tier: a
    two-page band then costs half as much again. The deepest sweep's band is not stretched
    (its pages grow with the rate anyway) and rescans are planned apart.
    """
    return any(
        pages_for(rate * t.window, page_size) > round(t.requests_per_second * t.interval)
        for t in tiers
        if t.name != DEEPEST and not t.is_rescan
    )


def _spend(tiers: Iterable[Tier]) -> float:
    return sum(t.requests_per_second for t in tiers)


def _fresh(policy: SourcePolicy, interval: float, rate: float, lag: float | None) -> Tier:
    """The fresh tier at ``interval``: its window covers ``lookback`` and the measured lag.

    The measured lag already includes up to one interval of waiting for the next query, so
    it is a window length by itself; ``lookback`` is an overlap, so it adds the interval.
    """
    wanted = max(policy.lookback + interval, 0.0 if lag is None else lag * HEADROOM)
    limit = max(policy.max_lookback, policy.lookback) + interval
    window = min(fill_pages(wanted, rate, policy.page_size), limit)
    cost = pages_for(rate * window, policy.page_size) / interval
    age = min(window - interval, max(policy.max_lookback, policy.lookback))
    return Tier(FRESH, interval, age, window, cost)


def _deepest_interval(policy: SourcePolicy) -> float:
    """Short bands: an event at most ``max_lookback`` late is delivered within that plus one."""
    return max(min(policy.max_lookback / 4, DEEPEST_INTERVAL_CAP), policy.poll_interval)


def _early_sweep(
    policy: SourcePolicy, fresh: Tier, rate: float, shallow: Sequence[Tier]
) -> list[Tier]:
    """The early sweep at ``EARLY_SWEEP_AGE`` (or twice the fresh guarantee), if that is
    well below every later tier's age; otherwise none (the fresh window already reaches
    past what it would catch)."""
    age = max(EARLY_SWEEP_AGE, 2 * fresh.age, fresh.interval)
    later = min((t.age for t in shallow), default=policy.max_lookback)
    if age * 2 > later:
        return []
    interval = _sweep_interval(age, fresh.interval, rate, policy.page_size)
    return [_sweep(EARLY_SWEEP, age, interval, rate, policy.page_size)]


def _slowed_for_early(
    policy: SourcePolicy,
    rate: float,
    lag: float | None,
    fresh: Tier,
    deepest: Tier,
    allowance: float,
) -> tuple[Tier, list[Tier], list[Tier]] | None:
    """The fastest fresh tier that leaves room for an early sweep within ``allowance`` (with
    the first shallow sweep and the deepest), that sweep and the shallow one; None when
    every such fresh tier is slower than :func:`_worth_slowing` allows."""
    shallow = _shallow_sweeps(policy, fresh, rate, 1)
    early = _early_sweep(policy, fresh, rate, shallow)
    if not early:
        return None
    later = shallow[0].age if shallow else deepest.age
    limit = fresh.interval + _worth_slowing(early[0].age, later)
    interval = fresh.interval * SLOWING_STEP
    while interval <= limit:
        slower = _fresh(policy, interval, rate, lag)
        shallow = _shallow_sweeps(policy, slower, rate, 1)
        early = _early_sweep(policy, slower, rate, shallow)
        if not early:
            break
        if _spend((slower, *early, *shallow, deepest)) <= allowance:
            return slower, early, shallow
        interval *= SLOWING_STEP
    return None


def _worth_slowing(early_age: float, later_age: float) -> float:
    """How many seconds the fresh tier may slow down to pay for an early sweep.

    Mean wait over all the source's events: the ``FRESH_QUANTILE`` the fresh tier finds wait
    half the slowdown longer; the rest (what the fresh window misses, as sized) is found by
    the early sweep about ``later_age - early_age`` sooner than by the next sweep. Slowing
    down pays while the first is smaller: ``q * d / 2 < (1 - q) * (later - early)``.
    """
    q = FRESH_QUANTILE
    return 2 * (1 - q) / q * max(0.0, later_age - early_age)


def _shallow_sweeps(policy: SourcePolicy, fresh: Tier, rate: float, count: int) -> list[Tier]:
    """``count`` sweeps from ``FIRST_SWEEP_AGE`` (or twice the fresh guarantee) upwards."""
    low = max(2 * fresh.age, fresh.interval, FIRST_SWEEP_AGE)
    high = policy.max_lookback
    if high <= low:
        return []
    ages = [low * (high / low) ** (i / (count + 1)) for i in range(count)]
    return [
        _sweep(
            f"sweep-{i + 1}",
            age,
            _sweep_interval(age, fresh.interval, rate, policy.page_size),
            rate,
            policy.page_size,
        )
        for i, age in enumerate(ages)
    ]


def _sweep_interval(age: float, fresh_interval: float, rate: float, page_size: int) -> float:
    """A quarter of the age, but never more often than the fresh tier or than a page fills."""
    return max(age / 4, fresh_interval, page_size / rate if rate >= MIN_RATE else 0.0)


def _sweep(
    name: str, age: float, interval: float, rate: float, page_size: int, stretch: bool = True
) -> Tier:
    """A sweep; ``stretch`` fills its band's last page (not for the deepest: its band is a bound)."""
    if stretch:
        interval = fill_pages(interval, rate, page_size)
    cost = pages_for(rate * interval, page_size) / interval
    return Tier(name, interval, age, interval, cost)


def sweep_due(now: float, tier: Tier, frontier: float) -> bool:
    """A sweep runs once a full band of ``interval`` seconds has aged past its ``age``."""
    return now - tier.age - frontier >= tier.interval


def whole_bands_end(now: float, tier: Tier, frontier: float) -> float:
    """Where a sweep due at ``now`` stops: after the whole bands of ``interval`` that have aged
    past its ``age``.

    A band was sized to fill its last page (:func:`fill_pages`); a sweep that starts a few
    seconds late (the loop was waiting for the budget) and read up to ``now - age`` would
    read a band a few seconds longer, and often one more page for them. The rest of the
    stretch is the next band's start, read when that band is due; every event is still
    read once it has aged past ``age``, within one ``interval`` as before.
    """
    bands = max(1, math.floor((now - tier.age - frontier) / tier.interval + EDGE_SLACK))
    return frontier + bands * tier.interval


def sweep_behind(now: float, tier: Tier, frontier: float) -> float:
    """How much event time beyond one band awaits the sweep: 0 when it keeps up."""
    return max(0.0, now - tier.age - frontier - tier.interval)


def late_event_waits(tiers: Sequence[Tier]) -> list[tuple[float, float]]:
    """How promptly each band of lateness is found: (lateness up to, longest wait), shallow first.

    The wait is counted from when the event became visible. The fresh tier finds an event
    at most its ``age`` late at its next query, within one ``interval``. A rescan finds an
    event as late as its band within one ``interval`` (see :mod:`exporter.rescan`). A sweep
    finds an event later than ``x`` once the band holding it has aged past the sweep's
    ``age``: within ``age + interval`` of its event time, so at most ``age + interval - x``
    after it became visible. Each stretch of lateness takes the best of the tiers covering
    it; neighbours whose waits are within ``WAIT_MERGE_RATIO`` are stated as one, with the
    longer wait.
    """
    top = max((t.age for t in tiers if not t.is_rescan), default=0.0)  # max_lookback
    ends = (t.age + t.window for t in tiers if t.is_rescan)
    edges = sorted({0.0, *(min(top, edge) for edge in (*(t.age for t in tiers), *ends))})
    waits: list[tuple[float, float]] = []
    for low, high in itertools.pairwise(edges):
        candidates = [w for t in tiers if (w := _wait(t, low, high)) is not None]
        if not candidates:
            break
        wait = min(candidates)
        if waits and max(wait, waits[-1][1]) <= WAIT_MERGE_RATIO * min(wait, waits[-1][1]):
            waits[-1] = (high, max(wait, waits[-1][1]))
        else:
            waits.append((high, wait))
    return waits


def longest_wait(tiers: Sequence[Tier], lateness: float) -> float:
    """The longest an event ``lateness`` late waits after it becomes visible: the first tier
    to find it (infinite when no tier covers that lateness)."""
    waits = [w for t in tiers if (w := _wait(t, lateness, lateness)) is not None]
    return min(waits, default=math.inf)


def _wait(tier: Tier, low: float, high: float) -> float | None:
    """The longest ``tier`` makes an event between ``low`` and ``high`` late wait, if it finds it."""
    if tier.is_rescan:
        covers = tier.age <= low + EDGE_SLACK and high <= tier.age + tier.window + EDGE_SLACK
        return tier.interval if covers else None
    if high > tier.age:
        return None
    return tier.interval if tier.is_fresh else tier.age + tier.interval - low


def describe_waits(waits: Sequence[tuple[float, float]]) -> str:
    """The plan in plain words, for the log: "late events up to 45m are found within 1m, ..."."""
    bands = [f"up to {_short(late)} within {_short(wait)}" for late, wait in waits]
    return "late events " + ", ".join(bands) if bands else "no lateness is covered"


def _short(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            value = seconds / size
            return (
                f"{value:.0f}{unit}" if value >= 10 or value.is_integer() else f"{value:.1f}{unit}"
            )
    return f"{seconds:.0f}s"


def guaranteed_lateness(tiers: Sequence[Tier], behind: dict[str, float]) -> float:
    """The deepest lateness certain to be caught now: the oldest age among tiers keeping up."""
    keeping_up = [t.age for t in tiers if behind.get(t.name, 0.0) <= t.interval]
    return max(keeping_up, default=0.0)


def eviction_horizon(
    frontiers: Iterable[float], in_flight: Iterable[float] = (), clock_skew: float = 600.0
) -> float:
    """Ledger entries with an event time before this can never be returned again.

    Sweeps only move their frontiers forward and the fresh tier stays newer than all of
    them, so no new query starts before the oldest frontier; a query already under way
    (``in_flight``: the starts of running queries) may still return events from before
    it, pages later. ``clock_skew`` covers a Graph clock that runs ahead of ours.
    """
    return min((*frontiers, *in_flight)) - clock_skew

"""Which query of a source runs when, and what a finished one moves: pure, on a given ``now``.

A source runs several kinds of query (the tiers of :mod:`exporter.tiers`: the fresh
query, the guarantee sweeps, the deepest sweep; the rescans of spare budget of
:mod:`exporter.rescan`; one-off catch-ups of stretches the fresh query left uncovered).
Each kind falls due by its own rule, at most one query per tier is under way, and the loop
pulls one page at a time from the query :meth:`QuerySchedule.pick` names. Nothing here
touches the ledger, the metrics or a socket: the loop asks what to launch, says what
happened (a page fetched, a query completed or abandoned) and persists the checkpoints it
is handed, before the queries that depend on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.rescan import band_of
from exporter.tiers import (
    DEEPEST,
    FRESH,
    Tier,
    eviction_horizon,
    sweep_behind,
    sweep_due,
    whole_bands_end,
)

CHECKPOINT_LAST_COMPLETE = "last_complete"
CHECKPOINT_NEWEST_EVENT = "newest_event_time"
CHECKPOINT_FIRST_START = "first_start"
FRONTIER_PREFIX = "frontier:"
CREDIT_CAP = 20.0  # requests a tier may bank while it has nothing to fetch
RUN_RETRY_DELAY = 30.0
GAP_TOLERANCE = 1.0  # seconds of uncovered event time not worth a query
CATCH_UP = "catch-up"  # one-off queries for gaps the fresh tier left, see _queue_catch_up


@dataclass(frozen=True, slots=True)
class Launch:
    """A query to begin: events with ``start <= time (<= end)``, as of ``asof``.

    ``end`` is None for the fresh query (open-ended). ``backlog`` marks a first read of a
    stretch before every tier has read its own once: what it finds may be events that were
    visible before the process started, not late ones. ``persist`` holds checkpoints the
    loop must write before the query begins (a crash must not lose what they protect).
    """

    tier: Tier
    start: float
    end: float | None
    asof: float
    backlog: bool
    persist: Mapping[str, float] = field(default_factory=dict)


class QuerySchedule:
    """One source's queries: when each falls due, which goes next, what completion moves.

    Restarts resume from the checkpoints of the previous process (``stored``: the names
    above, and a frontier per sweep under ``FRONTIER_PREFIX``). ``max_lookback`` is the
    source's: no query reaches further back than that.
    """

    def __init__(
        self,
        tiers: tuple[Tier, ...],
        stored: Mapping[str, float],
        now: float,
        max_lookback: float,
    ) -> None:
        self.tiers = tiers
        self.max_lookback = max_lookback
        self.rescans: tuple[Tier, ...] = ()
        self.last_complete = stored.get(CHECKPOINT_LAST_COMPLETE)
        self.last_fresh_start = self.last_complete
        self.newest_event_time = stored.get(CHECKPOINT_NEWEST_EVENT)
        self.first_start = stored.get(CHECKPOINT_FIRST_START)
        self.previous_fresh_start: float | None = None
        self.frontiers: dict[str, float] = {}
        self.retired: set[str] = set()  # sweeps this process ran and a later plan dropped
        self.credits: dict[str, float] = {}
        self.not_before: dict[str, float] = {}
        self.rescan_starts: dict[str, float] = {}
        self.completed_tiers: set[str] = set()
        self.warmed = False  # every tier of the schedule has completed a run since the start
        self.dark_from: float | None = None
        self.catch_up: tuple[float, float] | None = None
        self.active: dict[str, Launch] = {}
        self._credit_at = now

    @property
    def all(self) -> tuple[Tier, ...]:
        """Every tier that runs: fresh, the sweeps, deepest, then the rescans of spare budget."""
        return self.tiers + self.rescans

    # -- plans ---------------------------------------------------------------------------

    def unknown_sweeps(self, tiers: tuple[Tier, ...]) -> list[str]:
        """The sweeps of ``tiers`` this process has not run yet: the loop looks up stored
        frontiers for them."""
        known = self.frontiers.keys() | self.retired
        return [t.name for t in tiers if not t.is_fresh and t.name not in known]

    def adopt(
        self, tiers: tuple[Tier, ...], stored: Mapping[str, float], now: float
    ) -> dict[str, float]:
        """Take up a new plan; a sweep seen for the first time starts one band behind its age.

        ``stored`` maps sweep names to the frontiers an earlier process persisted; a sweep
        resumes there, but never below the deepest sweep's frontier. A sweep the plan drops
        gives up its frontier: it no longer holds back what the ledger may forget, so one
        that an earlier process dropped may have a stored frontier the ledger has forgotten
        past, and the deepest sweep has read what lies below. A sweep dropped and planned
        again in this process starts afresh (the deepest sweep covers the stretch between).
        Returns the new frontiers, which the loop persists at once: a crash before the
        first sweep must not move them on.
        """
        self.tiers = tiers
        planned = {t.name for t in tiers if not t.is_fresh}
        for name in self.frontiers.keys() - planned:
            del self.frontiers[name]
            self.retired.add(name)
        floor = self.frontiers.get(DEEPEST, stored.get(DEEPEST, -math.inf))
        new: dict[str, float] = {}
        for tier in tiers:
            if tier.is_fresh or tier.name in self.frontiers:
                continue
            frontier = None if tier.name in self.retired else stored.get(tier.name)
            if frontier is None:
                frontier = now - tier.age - tier.interval
                new[FRONTIER_PREFIX + tier.name] = frontier
            elif frontier < floor:
                frontier = floor
                new[FRONTIER_PREFIX + tier.name] = frontier
            self.frontiers[tier.name] = frontier
        return new

    def stop_dropped(self) -> list[str]:
        """Stop the queries under way of sweeps the plan no longer has; their names.

        The deepest sweep reads what they would have: a sweep dropped by the first plan
        with a measured rate (the first plan, on no measurement, affords every sweep) would
        otherwise go on reading, after a restart up to a day of events, page by page in
        whatever turns nothing else takes.
        """
        planned = {t.name for t in self.tiers}
        stopped = [
            name
            for name, launch in self.active.items()
            if name not in planned and not launch.tier.is_rescan and name != CATCH_UP
        ]
        for name in stopped:
            del self.active[name]
        return stopped

    # -- when each tier falls due --------------------------------------------------------

    def _due(self, tier: Tier, now: float) -> bool:
        if tier.name in self.active or now < self.not_before.get(tier.name, 0.0):
            return False
        if tier.is_rescan:
            return now >= self.rescan_starts.get(tier.name, -math.inf) + tier.interval
        if tier.is_fresh:
            return self.last_fresh_start is None or now >= self.last_fresh_start + tier.interval
        return sweep_due(now, tier, self.frontiers[tier.name])

    def next_due(self, now: float) -> float:
        """When the next query falls due (the loop sleeps until then while nothing runs)."""
        moments = []
        for tier in self.all:
            if tier.is_rescan:
                due = self.rescan_starts.get(tier.name, now - tier.interval) + tier.interval
            elif tier.is_fresh:
                due = (self.last_fresh_start or now) + tier.interval
            else:
                due = self.frontiers[tier.name] + tier.age + tier.interval
            moments.append(max(due, self.not_before.get(tier.name, 0.0)))
        if self.catch_up is not None:
            moments.append(self.not_before.get(CATCH_UP, now))
        return min(moments)

    def launches(self, now: float) -> list[Launch]:
        """The queries due now, each marked under way until completed or abandoned."""
        launches = []
        for tier in self.all:
            if not self._due(tier, now):
                continue
            persist: dict[str, float] = {}
            if tier.is_rescan:
                start, end = self._rescan_range(now, tier)
                self.rescan_starts[tier.name] = now
                if end - start <= GAP_TOLERANCE:
                    continue
            elif tier.is_fresh:
                start, end = self._fresh_start(now, tier, persist), None
                if self.last_complete is not None:
                    start = self._cover_fresh_gap(self.last_complete - tier.age, start, tier)
                self.last_fresh_start = now
            else:
                start = self.frontiers[tier.name]
                end = whole_bands_end(now, tier, start)
            launches.append(self._launch(tier, start, end, now, persist))
        idle = CATCH_UP not in self.active and now >= self.not_before.get(CATCH_UP, 0.0)
        if self.catch_up is not None and idle:
            start, end = self.catch_up
            self.catch_up = None
            catch_up = Tier(CATCH_UP, self.tiers[0].interval, 0.0, end - start, 0.0)
            launches.append(self._launch(catch_up, start, end, now, {}))
        return launches

    def _launch(
        self, tier: Tier, start: float, end: float | None, now: float, persist: dict[str, float]
    ) -> Launch:
        backlog = not self.warmed and tier.name not in self.completed_tiers
        launch = Launch(tier, start, end, now, backlog, persist)
        self.active[tier.name] = launch
        return launch

    def _rescan_range(self, now: float, tier: Tier) -> tuple[float, float]:
        """From the band's old edge at its last rescan to its young edge now.

        So every event as late as the band that became visible since then is in range,
        whatever band edges it drifted across meanwhile (see :mod:`exporter.rescan`); never
        before the oldest frontier, below which the ledger forgets what it sent.
        """
        band = band_of(tier)
        since = self.rescan_starts.get(tier.name, now - tier.interval)
        return max(since - band.high, min(self.frontiers.values())), now - band.low

    def _fresh_start(self, now: float, tier: Tier, persist: dict[str, float]) -> float:
        """The fresh window's start; until a first fresh query completes, where the first began.

        Sweeps only reach back from their own frontiers, so the first window's older part
        would otherwise be left to chance if the first query is cut short.
        """
        start = now - tier.window
        if self.last_complete is not None:
            return start
        if self.first_start is None:
            self.first_start = start
            persist[CHECKPOINT_FIRST_START] = start
            return start
        return max(min(start, self.first_start), now - self.max_lookback)

    def _cover_fresh_gap(self, covered_from: float, start: float, tier: Tier) -> float:
        """The fresh query's start, reaching back over what late or failed runs left uncovered.

        A gap up to one window (a run that started late while other tiers held the budget)
        costs a fraction of a page when the fresh query simply starts earlier, but at least a
        whole request as a query of its own. A longer one (Graph was down) is queued as a
        catch-up on leftover budget, so the fresh tier stays fresh.
        """
        if start - covered_from <= tier.window:
            return min(start, covered_from)
        self._queue_catch_up(covered_from, start)
        return start

    def _queue_catch_up(self, start: float, end: float) -> None:
        """Ask once, on leftover budget, for events with ``start <= time <= end``.

        Used for stretches the fresh tier did not cover in time (it ran late, failed, or the
        API held events back); without it they would wait for the sweep whose age covers
        them. Bounded below by the oldest frontier, which eviction respects (every plan has
        the deepest sweep, so there is one).
        """
        start = max(start, min(self.frontiers.values()))
        if end - start <= GAP_TOLERANCE:
            return
        if self.catch_up is not None:
            start, end = min(start, self.catch_up[0]), max(end, self.catch_up[1])
        self.catch_up = (start, end)

    # -- which query goes next -----------------------------------------------------------

    def pick(self, now: float) -> str:
        """The query whose tier is furthest below its planned share of requests (fresh on ties).

        Rescans never go while a fresh query has pages to fetch: they spend what the budget
        has to spare, and a fresh query waiting behind them would deliver everything later.
        Among themselves the one whose next rescan falls due first goes first (earliest
        deadline): a band rescanned every minute is not held up by a deep band's hundreds
        of pages, and one that read a long backlog does not then wait for others' credits.

        A catch-up query does the shallow sweeps' job (fetching what the fresh window missed)
        for the stretch it covers, so while one runs it takes their turns and the rescans'
        too: after an incident it reads the released stretch once, and rescans sharing the
        budget with it would read the same stretch again, each at its own period, so the
        last of the release would wait for the slowest band.
        """
        elapsed = max(0.0, now - self._credit_at)
        self._credit_at = now
        for tier in self.all:
            credit = self.credits.get(tier.name, 0.0) + tier.requests_per_second * elapsed
            self.credits[tier.name] = min(CREDIT_CAP, credit)
        runs = [run for run in self.active.values() if not run.tier.is_rescan]
        if CATCH_UP in self.active:
            runs = [
                run for run in runs if run.tier.is_fresh or run.tier.name in (CATCH_UP, DEEPEST)
            ]
        rescans = [run for run in self.active.values() if run.tier.is_rescan]
        if rescans and FRESH not in self.active and CATCH_UP not in self.active:
            runs.append(min(rescans, key=lambda run: run.asof + run.tier.interval))
        best = max(runs, key=lambda run: (self.credits.get(run.tier.name, 0.0), run.tier.is_fresh))
        return best.tier.name

    def fetched(self, name: str) -> None:
        """A page of ``name``'s query was requested: one request of its credit spent."""
        self.credits[name] = self.credits.get(name, 0.0) - 1.0

    # -- what finishing moves ------------------------------------------------------------

    def abandoned(self, name: str, now: float, retry_after: float | None = None) -> None:
        """A query failed for good: its tier retries later; nothing it did not finish counts.

        ``retry_after`` overrides the usual delay (a refused permission is asked for slowly).
        """
        launch = self.active.pop(name)
        delay = min(RUN_RETRY_DELAY, launch.tier.interval) if retry_after is None else retry_after
        self.not_before[name] = now + delay
        if launch.tier.is_rescan:  # the next rescan reaches back over what this one did not read
            self.rescan_starts[name] = launch.start + band_of(launch.tier).high
        if name == CATCH_UP and launch.end is not None:
            self._queue_catch_up(launch.start, launch.end)

    def completed(self, name: str, newest_event_time: float | None = None) -> dict[str, float]:
        """A query read its last page: move its tier on; returns the checkpoints to persist.

        ``newest_event_time`` is the newest event a fresh query saw, for the incident watch.
        """
        launch = self.active.pop(name)
        self._mark_completed(launch.tier)
        checkpoints: dict[str, float] = {}
        if launch.tier.is_fresh:
            self._complete_fresh(launch, newest_event_time, checkpoints)
        elif name in self.frontiers:
            assert launch.end is not None
            self.frontiers[name] = launch.end
            checkpoints[FRONTIER_PREFIX + name] = launch.end
        return checkpoints

    def _mark_completed(self, tier: Tier) -> None:
        """Once every tier has completed a run, every age up to ``max_lookback`` was read.

        Until then a tier's first run reads its stretch for the first time and cannot tell
        lateness from the backlog of before the start. After it, a stretch is always one some
        tier read before, so a rescan band that a replan creates finds late events, not
        backlog, from its first run.
        """
        self.completed_tiers.add(tier.name)
        if not self.warmed:
            self.warmed = all(t.name in self.completed_tiers for t in self.all)

    def _complete_fresh(
        self, launch: Launch, newest_event_time: float | None, checkpoints: dict[str, float]
    ) -> None:
        if newest_event_time is not None:
            self.newest_event_time = max(newest_event_time, self.newest_event_time or 0.0)
            checkpoints[CHECKPOINT_NEWEST_EVENT] = self.newest_event_time
        self.previous_fresh_start = launch.start
        self.last_complete = launch.asof
        checkpoints[CHECKPOINT_LAST_COMPLETE] = launch.asof
        self._watch_for_incident(launch)

    def _watch_for_incident(self, launch: Launch) -> None:
        """After nothing new was visible for longer than the fresh tier's age, catch up at once.

        When the API holds events back (an incident) and then releases them, they are older
        than the fresh window and would wait for the sweep whose age covers them, hours
        perhaps. So the stretch from the last event seen before going dark to the start of
        the first fresh query that sees events again is queried once, on the leftover budget.
        Events held back from before the last one seen count too: the shallow sweeps passed
        them while they were invisible, so the stretch reaches back as far as those sweeps do.
        """
        fresh = self.tiers[0]
        # Measured when the query began (its result set is fixed then), not when its last
        # page came in: a long query under a busy budget is not an incident.
        newest = self.newest_event_time
        quiet = None if newest is None else launch.asof - newest
        if quiet is not None and quiet > fresh.age:
            if self.dark_from is None:
                self.dark_from = newest
            return
        if self.dark_from is None:
            return
        reach = max([fresh.window, *(t.age + t.interval for t in self.tiers[1:-1])])
        self._queue_catch_up(self.dark_from - reach, launch.start)
        self.dark_from = None

    def eviction_horizon(self) -> float:
        """Ledger entries older than this can never be returned again (queries under way count)."""
        return eviction_horizon(self.frontiers.values(), [a.start for a in self.active.values()])

    def behind(self, now: float) -> dict[str, float]:
        """How far each tier is behind its schedule, in seconds (0 when on time or running)."""
        behind: dict[str, float] = {}
        for tier in self.all:
            if tier.is_fresh or tier.is_rescan:
                last = self.last_fresh_start if tier.is_fresh else self.rescan_starts.get(tier.name)
                late = now - (last or now) - tier.interval
                behind[tier.name] = max(0.0, late) if tier.name not in self.active else 0.0
            else:
                behind[tier.name] = sweep_behind(now, tier, self.frontiers[tier.name])
        return behind

"""The request budget and the retry delays: pure arithmetic, driven by a manual clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.budget import BudgetShares, RequestBudget, next_slot
from exporter.clock import ManualClock
from exporter.errors import Interrupted
from exporter.retry import MAX_RETRY_AFTER, backoff, parse_retry_after


@given(
    st.integers(min_value=1, max_value=20),
    st.floats(min_value=0.5, max_value=60),
    st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=60),
)
def test_budget_never_allows_more_than_its_requests_in_any_window(
    requests: int, per: float, gaps: list[float]
) -> None:
    clock = ManualClock(1000.0)
    budget = RequestBudget(requests, per, clock)
    sent = []
    for gap in gaps:
        clock.advance(gap)
        budget.acquire()
        sent.append(clock.now())
    for i in range(len(sent) - requests):
        assert sent[i + requests] - sent[i] >= per - 1e-9


def test_budget_waits_are_reported_and_block_until_is_honoured() -> None:
    clock = ManualClock(0.0)
    budget = RequestBudget(5, 10.0, clock)
    waits = [budget.acquire() for _ in range(6)]
    assert waits[:5] == [0.0] * 5
    assert waits[5] == 10.0
    budget.block_until(clock.now() + 7.5)
    assert budget.acquire() == 7.5


def test_a_shorter_retry_after_never_shortens_a_longer_block() -> None:
    clock = ManualClock(0.0)
    budget = RequestBudget(5, 10.0, clock)
    budget.block_until(60.0)
    budget.block_until(5.0)
    assert budget.acquire() == 60.0


def test_next_slot_is_now_when_the_window_has_room() -> None:
    assert next_slot([1.0, 2.0], 3.0, 5, 10.0, 0.0) == 3.0
    assert next_slot([1.0, 2.0], 3.0, 2, 10.0, 0.0) == 11.0
    assert next_slot([], 3.0, 2, 10.0, 8.0) == 8.0


def test_retry_after_forms() -> None:
    now = datetime(2026, 5, 11, 9, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("2.128", now) == 2.128
    assert parse_retry_after("7", now) == 7.0
    later = datetime(2026, 5, 11, 9, 0, 30, tzinfo=UTC)
    assert parse_retry_after(format_datetime(later, usegmt=True), now) == 30.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("nan", now) is None
    assert parse_retry_after("-5", now) == 0.0
    assert parse_retry_after("99999999", now) == MAX_RETRY_AFTER


@given(st.text(max_size=40), st.floats(min_value=0, max_value=2e9))
def test_retry_after_never_raises_and_stays_in_range(header: str, now: float) -> None:
    delay = parse_retry_after(header, now)
    assert delay is None or 0.0 <= delay <= MAX_RETRY_AFTER


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_capped_jittered_and_growing(attempt: int, seed: int) -> None:
    delay = backoff(attempt, base=1.0, cap=60.0, rng=random.Random(seed))
    ceiling = min(60.0, 2.0**attempt)
    assert ceiling / 2 <= delay <= ceiling


def test_budget_shares_give_a_busy_source_what_a_quiet_one_leaves() -> None:
    shares = BudgetShares(0.5, 2)
    assert shares.available("signins") == 0.5
    shares.publish("directoryAudits", 0.02, 1.0)
    assert shares.available("signins") == 0.48
    shares.publish("signins", 0.45, 1.0)
    assert shares.available("directoryAudits") == 0.25, "never less than an equal share"


class FixedDraw(random.Random):
    """A random source whose every draw is ``value``: the extremes of the jitter."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_doubles_from_one_second_and_is_capped_at_a_minute() -> None:
    low, high = FixedDraw(0.0), FixedDraw(0.999999)
    assert [backoff(n, rng=low) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert 59.99 < backoff(10, rng=high) <= 60.0
    assert 59.99 < backoff(10_000, rng=high) <= 60.0
    assert 0.5 <= backoff(0) <= 1.0


def test_backoff_draws_its_jitter_from_the_injected_source_only() -> None:
    draws = [backoff(3, rng=random.Random(seed)) for seed in range(20)]
    assert draws == [backoff(3, rng=random.Random(seed)) for seed in range(20)]
    assert len(set(draws)) > 1


class EarlyWakingClock(ManualClock):
    """Sleeps at most ``step`` seconds at a time, as a real sleep may wake early."""

    def __init__(self, step: float, stop_at: float = float("inf")) -> None:
        super().__init__(1000.0)
        self.step = step
        self.stop_at = stop_at

    def sleep(self, seconds: float) -> bool:
        super().sleep(min(seconds, self.step))
        return self.now() >= self.stop_at


def test_a_free_slot_is_taken_at_once_and_a_wait_is_slept_and_summed() -> None:
    clock = EarlyWakingClock(step=3.0)
    budget = RequestBudget(1, 10.0, clock)
    assert budget.acquire() == 0.0
    assert budget.acquire() == 10.0, "three wake-ups of 3, 3, 3 and one of 1 second"
    assert clock.now() == 1010.0


def test_a_shutdown_while_waiting_for_the_budget_is_reported() -> None:
    clock = EarlyWakingClock(step=3.0, stop_at=1005.0)
    budget = RequestBudget(1, 10.0, clock)
    budget.acquire()
    with pytest.raises(Interrupted):
        budget.acquire()
    assert clock.now() == 1006.0, "stopped at the second wake-up, 6 s in"

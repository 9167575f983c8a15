"""The one wait loop: its edges decide how long fleet waits for a gate, a lock, a reload."""

from __future__ import annotations

from fleet.host.poll import poll, wait_until


class FakeClock:
    """Time that passes only when slept (or when an attempt costs some)."""

    def __init__(self, cost: float = 0.0) -> None:
        self.now = 100.0
        self.cost = cost
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def attempts(clock: FakeClock, answers: list[object]):
    calls: list[float] = []

    def attempt() -> object:
        calls.append(clock.now)
        clock.now += clock.cost
        return answers.pop(0) if answers else None

    return attempt, calls


def test_a_first_pass_returns_at_once() -> None:
    clock = FakeClock()
    attempt, calls = attempts(clock, ["yes"])
    assert poll(attempt, lambda r: r == "yes", timeout=10, interval=1, clock=clock) == "yes"
    assert calls == [100.0] and clock.naps == []


def test_a_pass_at_the_deadline_still_counts() -> None:
    clock = FakeClock()
    attempt, calls = attempts(clock, [None, None, "yes"])
    assert poll(attempt, lambda r: r == "yes", timeout=2, interval=1, clock=clock) == "yes"
    assert calls == [100.0, 101.0, 102.0]


def test_never_passing_returns_the_last_result_after_the_whole_timeout() -> None:
    clock = FakeClock()
    attempt, calls = attempts(clock, ["a", "b", "c", "d", "e"])
    assert poll(attempt, lambda r: r == "yes", timeout=3, interval=1, clock=clock) == "d"
    assert calls == [100.0, 101.0, 102.0, 103.0] and clock.naps == [1, 1, 1]


def test_fit_never_sleeps_past_the_deadline() -> None:
    """A health check promised an answer within its timeout: no sleep that would overshoot."""
    clock = FakeClock()
    attempt, calls = attempts(clock, ["a", "b", "c", "d"])
    assert poll(attempt, lambda r: r == "yes", timeout=2.5, interval=1, clock=clock,
                fit=True) == "c"
    assert calls == [100.0, 101.0, 102.0] and clock.now == 102.0


def test_an_interval_longer_than_the_timeout_means_one_attempt_with_fit() -> None:
    clock = FakeClock()
    attempt, calls = attempts(clock, ["a", "b"])
    assert poll(attempt, lambda r: r == "yes", timeout=1, interval=5, clock=clock,
                fit=True) == "a"
    assert calls == [100.0] and clock.naps == []


def test_slow_attempts_count_against_the_timeout() -> None:
    clock = FakeClock(cost=2.0)
    attempt, calls = attempts(clock, ["a", "b", "c", "d"])
    poll(attempt, lambda r: r == "yes", timeout=3, interval=1, clock=clock)
    assert calls == [100.0, 103.0]  # the second ends at 105, past 103: no third


def test_wait_until_is_a_yes_or_no() -> None:
    clock = FakeClock()
    answers = [False, False, True]
    assert wait_until(lambda: answers.pop(0), timeout=5, interval=0.5, clock=clock)
    assert clock.naps == [0.5, 0.5]
    assert not wait_until(lambda: False, timeout=1, interval=0.5, clock=clock)

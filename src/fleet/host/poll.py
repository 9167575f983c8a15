"""Waiting for the machine: the one loop that retries a check until it passes or time is up.

Readiness on a server is only ever observed (a vassal answers, nginx's old workers exit, a
lock frees up), so every wait is the same loop; a clock passed in lets unit tests run it
without real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """What poll needs of time: the `time` module itself, or a fake in tests."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float, /) -> None: ...


def poll(attempt: Callable[[], T], done: Callable[[T], bool], *, timeout: float,
         interval: float, clock: Clock = time, fit: bool = False) -> T:
    """Call `attempt` until `done(result)` or `timeout` seconds passed; returns the last result.

    There is always one attempt. Without `fit`, one more attempt follows the sleep that
    crosses the deadline (a wait is never cut short of its whole timeout); with `fit`, no
    sleep is started that would end past the deadline (the caller promised an answer within
    the timeout, e.g. a health check's own).
    """
    deadline = clock.monotonic() + timeout
    while True:
        result = attempt()
        if done(result):
            return result
        now = clock.monotonic()
        if (now + interval > deadline) if fit else (now >= deadline):
            return result
        clock.sleep(interval)


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float,
               clock: Clock = time) -> bool:
    """poll for a yes/no condition: True as soon as `check()` is, False at the deadline."""
    return poll(check, bool, timeout=timeout, interval=interval, clock=clock)


class RealTime:
    """The real clock with another way to sleep: callers that let a test record the naps."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep

    def monotonic(self) -> float:
        return time.monotonic()

"""One fleet run at a time. A kernel lock (flock) dies with its holder, so a killed run never
leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fleet.errors import LockError


def holder(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def run_lock(path: str, wait: float = 0.0,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock for the block; wait up to `wait` seconds for another run to finish."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = holder(path)
                if time.monotonic() >= deadline:
                    raise LockError(f"another fleet run (PID {pid}) holds {path}; "
                                    "try again when it has finished") from None
                if on_wait and not told:
                    on_wait(f"waiting for the fleet run with PID {pid} to finish")
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)

"""One fleet run at a time. A kernel lock (flock) dies with its holder, so a killed run never
leaves a stale lock behind."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fleet.errors import LockError
from fleet.host.poll import wait_until


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
        told = False

        def taken() -> bool:
            nonlocal told
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if on_wait and wait > 0 and not told:
                    on_wait(f"waiting for the fleet run with PID {holder(path)} to finish")
                    told = True
                return False

        if not wait_until(taken, timeout=wait, interval=0.2):
            raise LockError(f"another fleet run (PID {holder(path)}) holds {path}; "
                            "try again when it has finished")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@contextmanager
def unless_held(path: str) -> Iterator[bool]:
    """Take the lock only if no one holds it, without waiting: True for the block while it is
    ours, False when another process holds it (or it cannot be opened). For housekeeping that
    must not run beside that process and can wait for the next run."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)

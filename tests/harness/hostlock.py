"""The one-booted-server lock, shared by every test session in this network namespace: the
servers share the host's port 80, so only one may be booted at a time."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from ._util import HarnessError

# Port 80 is per network namespace, so the "one booted server" lock is too.
HOST_LOCK = Path(f"/run/fleet-tests-booted-net{os.stat('/proc/self/ns/net').st_ino}.lock")
# How long boot() waits for another session's server to go away before failing.
LOCK_WAIT = float(os.environ.get("FLEET_TEST_LOCK_WAIT", "1800"))
# Seconds each boot of this session waited for the lock: a test's setup time includes them,
# so the session's summary reports them (tests/e2e/conftest.py) beside --durations.
WAITED: list[float] = []


def take_host_lock() -> IO[str]:
    """Wait for the lock (saying so once) and hold it until the returned file is closed."""
    fh = open(HOST_LOCK, "a")  # noqa: SIM115 - held while booted
    started = time.monotonic()
    deadline = started + LOCK_WAIT
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if told:
                WAITED.append(time.monotonic() - started)
            return fh
        except BlockingIOError:
            if time.monotonic() >= deadline:
                fh.close()
                raise HarnessError(
                    f"another test session kept a server booted for {LOCK_WAIT:.0f}s "
                    f"(lock {HOST_LOCK}); servers share port 80, so one at a time"
                ) from None
            if not told:
                print(f"[fleet-tests] waiting for another session's server ({HOST_LOCK})")
                told = True
            time.sleep(1)

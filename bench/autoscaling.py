"""Autoscaling: workers of a `processes = "1-8"` app over time while load rises, holds and
falls (uWSGI's cheaper subsystem), sampled every second from /proc.

    sudo .venv/bin/python bench/autoscaling.py [--max 8] [--hold 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import apply, machine, start
from tests.e2e.helpers import proc_table
from tests.e2e.load import Load
from tests.harness import BareServer, GitRemote


def workers(server: BareServer) -> int:
    """Processes of the app's user minus its master."""
    return max(sum(p["user"] == "elastic" for p in proc_table(server)) - 1, 0)


def sample(server: BareServer, seconds: float, phase: str, rows: list) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rows.append((phase, round(time.monotonic() - T0, 1), workers(server)))
        time.sleep(1)


T0 = time.monotonic()


def main() -> None:
    global T0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=8, help="the range's maximum")
    parser.add_argument("--hold", type=float, default=30, help="seconds per load level")
    args = parser.parse_args()
    rows: list[tuple[str, float, int]] = []
    failed = sent = 0
    with tempfile.TemporaryDirectory() as tmp, GitRemote() as remote:
        server = start(remote, Path(tmp))
        try:
            apply(server, f'[apps.elastic]\nrepo = "{remote.url("pulse")}"\n'
                          f'domains = ["elastic.test"]\nprocesses = "1-{args.max}"\n')
            T0 = time.monotonic()
            sample(server, 10, "quiet", rows)
            for threads in (2, 4, 8, 16):
                with Load("elastic.test", "/slow?s=0.2", threads=threads,
                          limit=args.hold + 5) as load:
                    sample(server, args.hold, f"{threads} clients", rows)
                sent, failed = sent + load.sent, failed + load.failed
            sample(server, 90, "quiet again", rows)
        finally:
            server.destroy()
    print(f"machine: {machine()}")
    print(f"{'phase':<12} {'t (s)':>6} {'workers':>8}")
    for phase, t, count in rows:
        print(f"{phase:<12} {t:>6} {count:>8} {'#' * count}")
    peak = max(c for _, _, c in rows)
    print(f"peak {peak} workers (max {args.max}); {sent} requests, {failed} failed; "
          f"back to {rows[-1][2]} worker(s) at the end")


if __name__ == "__main__":
    main()

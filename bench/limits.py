"""Limits: a healthy app's requests/s and p99 alone, then beside each hostile load of
tests/apps/hostile-limits (hog, spin, fork, sleep), the hostile app with its limits on
(memory, cpu, tasks, timeout) and off (the same app without the keys), interleaved in one
run on one server. The neighbour is measured with wrk on loopback inside the server; the
hostile requests come from this host. Prints the medians and the ratios against alone.

    sudo .venv/bin/python bench/limits.py [--seconds 10] [--rounds 2] [--connections 16]

On a server without cgroup v2 controllers (the test servers here) only what uWSGI and
RLIMIT_NPROC enforce applies; the mechanisms fleet reports are printed first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import APPS, apply, machine, start
from tests.e2e.load import Load
from tests.harness import BareServer, GitRemote
from tests.harness.server import NoResponse

APPS_ON_OFF = {"on": "hog-on", "off": "hog-off"}
LIMITS = 'memory = "128M"\ncpu = 50\ntasks = 48\ntimeout = 5\n'
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}
URL = "http://127.0.0.1:80/"  # minbase has no /etc/services: wrk cannot resolve "http"
TASKS = """
import os, pwd, sys
uid, n = pwd.getpwnam(sys.argv[1]).pw_uid, 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat("/proc/" + pid).st_uid == uid:
            n += len(os.listdir("/proc/" + pid + "/task"))
    except OSError:
        pass
print(n)
"""


def hostile_loads() -> dict[str, Callable[[str], Load]]:
    """Each hostile load by name: a Load against the given hostile app's domain. /fork is
    one request (one bomb lives 20 s, longer than a measurement); /sleep holds both workers
    (two requests, no queue behind them); /hog and /spin go on for the whole measurement."""
    return {
        "hog": lambda host: Load(host, "/hog", threads=2, limit=300),
        "spin": lambda host: Load(host, "/spin?s=10", threads=2, limit=300),
        "fork": lambda host: Load(host, "/fork", threads=1, max_requests=1, limit=300),
        "sleep": lambda host: Load(host, "/sleep?s=600", threads=2, max_requests=2,
                                   limit=300),
    }


def fleet_toml(remote: GitRemote) -> str:
    hostile = f'repo = "{remote.url("hostile-limits")}"\nprocesses = 2\n'
    return (f'[apps.calm]\nrepo = "{remote.url("pulse")}"\ndomains = ["calm.test"]\n\n'
            f'[apps.hog-on]\n{hostile}domains = ["hog-on.test"]\n{LIMITS}'
            '[apps.hog-on.health]\npath = "/health"\n\n'
            f'[apps.hog-off]\n{hostile}domains = ["hog-off.test"]\n'
            '[apps.hog-off.health]\npath = "/health"\n')


def status(server: BareServer) -> dict:
    out = server.run(["/usr/local/bin/fleet", "status", "--json"], check=True,
                     timeout=120).stdout
    return json.loads(out)["apps"]


def tasks_of(server: BareServer, user: str) -> int:
    """Threads of every process of `user` (what RLIMIT_NPROC counts), from /proc."""
    return int(server.run(["python3", "-c", TASKS, user], check=True).stdout)


def healthy(server: BareServer, host: str) -> bool:
    try:
        return server.http("/health", host=host, timeout=2).status == 200
    except NoResponse:
        return False


def settle(server: BareServer, app: str, host: str, quiet: int) -> None:
    """Back to a quiet hostile app before the next measurement: its workers answer and its
    user runs no more tasks than `quiet` (a bomb's processes end after 20 s). Workers
    that still do not answer after 10 s, held by /sleep (limits off: the default 55 s
    harakiri) or /spin, are killed once so that the master respawns them."""
    start, killed = time.monotonic(), False
    while time.monotonic() - start < 120:
        answers = healthy(server, host)
        if answers and tasks_of(server, app) <= quiet:
            return
        if not answers and not killed and time.monotonic() - start > 10:
            pids = status(server)[app]["workers"]["pids"]
            server.run(["kill", "-9", *map(str, pids)])
            killed = True
        time.sleep(1)
    print(f"warning: {app} did not settle within 120 s (tasks {tasks_of(server, app)}, "
          f"quiet {quiet}); measuring on", file=sys.stderr, flush=True)


def wrk(server: BareServer, seconds: int, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, errors) of the neighbour; errors are counted, not refused."""
    out = server.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                      "-H", "Host: calm.test", URL], check=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M).groups()  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    errors += sum(int(n) for n in socket.groups()) if socket else 0
    return rps, float(value) * UNITS[unit], errors


def mechanisms(server: BareServer) -> str:
    limits = status(server)["hog-on"].get("limits", {})
    return "; ".join(f"{key} {value.get('limit')}: {value.get('mechanism')}"
                     for key, value in limits.items() if "mechanism" in value)


def measure_round(server: BareServer, args: argparse.Namespace, n: int,
                  results: dict[str, list[tuple[float, float, int]]],
                  quiet: dict[str, int]) -> None:
    results["alone"].append(wrk(server, args.seconds, args.connections))
    for kind, load in hostile_loads().items():
        for mode, app in APPS_ON_OFF.items():
            with load(f"{app}.test") as hostile:
                time.sleep(1)  # the hostile load has taken hold
                results[f"{kind}, limits {mode}"].append(
                    wrk(server, args.seconds, args.connections))
            settle(server, app, f"{app}.test", quiet[app])
            rps, p99, errors = results[f"{kind}, limits {mode}"][-1]
            print(f"round {n + 1}: {kind}, limits {mode}: {rps:.0f} req/s, p99 {p99:.1f} ms, "
                  f"{errors} errors; hostile requests {hostile.sent}", file=sys.stderr,
                  flush=True)
    results["alone"].append(wrk(server, args.seconds, args.connections))  # and at the end
    for rps, p99, _ in results["alone"][-2:]:
        print(f"round {n + 1}: alone: {rps:.0f} req/s, p99 {p99:.1f} ms", file=sys.stderr)


def report(args: argparse.Namespace, results: dict[str, list[tuple[float, float, int]]],
           how: str) -> None:
    print(f"limits on: {LIMITS.strip().replace(chr(10), ', ')}, processes = 2")
    print(f"enforced on this server as: {how}")
    print(f"neighbour: wrk -t2 -c{args.connections} -d{args.seconds}s on loopback inside the "
          f"server, {args.rounds} interleaved rounds (alone at the start and end of each), "
          "medians; errors summed")
    print("| hostile load | requests/s | p99 ms | errors | req/s vs alone | p99 vs alone |")
    print("|---|---|---|---|---|---|")
    med = {name: (statistics.median(r for r, _, _ in v), statistics.median(p for _, p, _ in v),
                  sum(e for _, _, e in v)) for name, v in results.items()}
    base_rps, base_p99, _ = med["alone"]
    for name, (rps, p99, errors) in med.items():
        print(f"| {name} | {rps:.0f} | {p99:.1f} | {errors} | {rps / base_rps:.2f}x | "
              f"{p99 / base_p99:.2f}x |")
    print("command: sudo .venv/bin/python bench/limits.py " + " ".join(sys.argv[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    names = ["alone"] + [f"{kind}, limits {mode}" for kind in hostile_loads()
                         for mode in APPS_ON_OFF]
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    with GitRemote() as remote, tempfile.TemporaryDirectory() as tmp:
        remote.create_repo("hostile-limits", APPS / "hostile-limits")
        server = start(remote, Path(tmp))
        try:
            apply(server, fleet_toml(remote))
            server.run("apt-get install -y -q wrk >/dev/null", check=True, timeout=600)
            how = mechanisms(server)
            wrk(server, 3, args.connections)  # warm-up
            # Tasks of each hostile app at rest (the master's threads, the workers), plus one.
            quiet = {app: tasks_of(server, app) + 1 for app in APPS_ON_OFF.values()}
            for n in range(args.rounds):  # interleaved: drift hits every case alike
                measure_round(server, args, n, results, quiet)
        finally:
            server.destroy()
    report(args, results, how)


if __name__ == "__main__":
    main()

"""No-op apply at scale: wall time of a `fleet apply` that changes nothing, with 1, 30 and 100
apps on one bare server (copies of tests/apps/pulse under their own names and domains, one git
repo, apps added in steps), the median of 5 runs at each size, the least-squares fit
base + per-app cost against the goal (issue 19: <= 0.2 s + 0.015 s per app), and how many
commands one no-op apply runs (counted from `fleet -v`, which prints each one).

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.64.0/24 .venv/bin/python bench/noop.py \
        [--apps 1,30,100] [--runs 5] [--base REV]

With --base, the pyz of commit REV (built by its own build.py) runs the same no-op applies on
the same server, interleaved with this tree's run by run, and the ratio new/base is printed:
the number to trust on a shared host, where absolute times drift with the load.

The server sits on a private bridge (tests/harness/bridged.py): it takes no host lock and
shares no port with other sessions' servers. Times are measured inside the server: the wall
time, and the CPU time (user + system of fleet and every command it ran), which a busy shared
host inflates far less than the wall time: on 2 cores shared by several sessions, a no-op
that takes 0.4 s of CPU can take 2 s of wall time waiting for a core.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import bridged, machine
from provisioning import timed_apply
from startup import build_base
from tests.harness.bridged import BridgedServer

GOAL_BASE, GOAL_PER_APP = 0.2, 0.015
# What every run pays before fleet's own work, measured on the same server: Python's start,
# shiv's (the zipapp's bootstrap, no fleet code), and `fleet --version` (fleet's entry point).
FLOORS = (("python3 -c pass", "python3 -c pass"),
          ("shiv's start", "env SHIV_INTERPRETER=1 fleet -c pass"),
          ("fleet --version", "fleet --version"))
# Run by the server's python3: one no-op apply (argv), its JSON to /root/apply.json; prints
# the wall seconds, the CPU seconds of it and its children, and its exit code.
TIMER = r"""
import resource, subprocess, sys, time
with open("/root/apply.json", "w") as out:
    start = time.perf_counter()
    code = subprocess.run(sys.argv[1:], stdout=out).returncode
    wall = time.perf_counter() - start
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall, used.ru_utime + used.ru_stime, code)
"""


def toml(url: str, count: int) -> str:
    return "".join(f'[apps.p{i:03d}]\nrepo = "{url}"\ndomains = ["p{i:03d}.test"]\n\n'
                   for i in range(1, count + 1))


def commands(server: BridgedServer) -> collections.Counter[str]:
    """The commands one no-op apply runs, by program (fleet -v prints `$ ARGV` for each)."""
    err = server.run("fleet -v apply /root/fleet.toml 2>&1 >/dev/null", timeout=3600).stdout
    return collections.Counter(line[2:].split()[0] for line in err.splitlines()
                               if line.startswith("$ ") and len(line) > 2)


def timed(server: BridgedServer, command: str) -> tuple[float, float]:
    """Wall and CPU seconds of one command inside the server (its stdout to /root/apply.json)."""
    out = server.run(f"python3 /root/timer.py {command}", timeout=3600).stdout.split()
    if len(out) != 3 or out[2] != "0":
        raise SystemExit(f"{command} failed: {out}")
    return float(out[0]), float(out[1])


def timed_noop(server: BridgedServer, fleet: str) -> tuple[float, float, dict]:
    """Wall and CPU seconds of one `FLEET apply /root/fleet.toml --json`, and its JSON."""
    wall, used = timed(server, f"{fleet} apply /root/fleet.toml --json")
    return wall, used, json.loads(server.read_file("/root/apply.json"))


def fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares base + per-app cost through (apps, seconds)."""
    xs, ys = list(points), list(points.values())
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
             / sum((x - mx) ** 2 for x in xs))
    return my - slope * mx, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="1,30,100", help="app counts, in growing order")
    parser.add_argument("--runs", type=int, default=5, help="no-op applies per size")
    parser.add_argument("--base", help="commit whose pyz runs the same no-ops, interleaved")
    args = parser.parse_args()
    counts = [int(n) for n in args.apps.split(",")]
    print(f"machine: {machine()}", flush=True)
    noop: dict[int, list[float]] = {}
    old: dict[int, list[float]] = {}
    cpu: dict[str, dict[int, list[float]]] = {"fleet": {}, "base": {}}
    grow: dict[int, float] = {}
    ran: dict[int, collections.Counter[str]] = {}
    floors: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp, bridged(Path(tmp), "noop") as (server, url):
        if args.base:
            server.copy_in(build_base(args.base, Path(tmp)), "/root/base.pyz", 0o755)
        server.write_file("/root/fleet.toml", toml(url, counts[0]))
        server.write_file("/root/timer.py", TIMER)
        begin = time.monotonic()
        server.run("sh /root/bootstrap /root/fleet.pyz apply /root/fleet.toml",
                   timeout=3600, check=True)
        print(f"cold apply of {counts[0]} apps: {time.monotonic() - begin:.1f} s",
              file=sys.stderr, flush=True)
        if args.base:  # python3 is there now; the first start extracts the zipapp
            server.run("python3 /root/base.pyz --version", check=True)
        for count in counts:
            server.write_file("/root/fleet.toml", toml(url, count))
            grow[count], _ = timed_apply(server, "--prune /root/fleet.toml")
            print(f"apply to {count} apps: {grow[count]:.1f} s", file=sys.stderr, flush=True)
            ran[count] = commands(server)
            if count == counts[0]:
                floors = {name: [timed(server, command) for _ in range(args.runs)]
                          for name, command in FLOORS}
            for _ in range(args.runs):
                for fleet, times, name in [("fleet", noop, "fleet")] + (
                        [("python3 /root/base.pyz", old, "base")] if args.base else []):
                    seconds, used, data = timed_noop(server, fleet)
                    if data.get("changed") or data.get("failed"):
                        raise SystemExit(f"apply of {count} apps was no no-op: {data}")
                    times.setdefault(count, []).append(seconds)
                    cpu[name].setdefault(count, []).append(used)
            print(f"no-op at {count} apps: {noop[count]} (base: {old.get(count)})",
                  file=sys.stderr, flush=True)
    medians = {count: statistics.median(noop[count]) for count in counts}
    print(f"\nNo-op `fleet apply FILE` (median of {args.runs} runs; the apply that grew the "
          "server to that size; commands one no-op apply runs)")
    print("| apps | no-op s | min s | max s | growing apply s | commands | top commands |")
    print("|---|---|---|---|---|---|---|")
    for count in counts:
        top = ", ".join(f"{name} {n}" for name, n in ran[count].most_common(4))
        print(f"| {count} | {medians[count]:.2f} | {min(noop[count]):.2f} | "
              f"{max(noop[count]):.2f} | {grow[count]:.1f} | {sum(ran[count].values())} | "
              f"{top} |")
    if len(counts) > 1:
        base, per_app = fit(medians)
        met = base <= GOAL_BASE and per_app <= GOAL_PER_APP
        print(f"fit: {base:.3f} s + {per_app:.4f} s per app (goal <= {GOAL_BASE} s + "
              f"{GOAL_PER_APP} s per app: {'met' if met else 'not met'})")
    print(f"\nFloors (median of {args.runs}, same server)")
    print("| what | wall s | CPU s |\n|---|---|---|")
    for name, runs in floors.items():
        print(f"| {name} | {statistics.median(w for w, _ in runs):.3f} | "
              f"{statistics.median(c for _, c in runs):.3f} |")
    cpu_medians = {name: {count: statistics.median(times) for count, times in by_count.items()}
                   for name, by_count in cpu.items()}
    print(f"\nCPU seconds of the same no-op applies (user + system, fleet and its commands; "
          f"median of {args.runs})")
    print("| apps | this tree CPU s | min | max |" + (" base CPU s | this tree / base |"
                                                    if args.base else ""))
    print("|---|---|---|---|" + ("---|---|" if args.base else ""))
    for count in counts:
        mine = cpu_medians["fleet"][count]
        line = (f"| {count} | {mine:.3f} | {min(cpu['fleet'][count]):.3f} | "
                f"{max(cpu['fleet'][count]):.3f} |")
        if args.base:
            theirs = cpu_medians["base"][count]
            line += f" {theirs:.3f} | {mine / theirs:.2f} |"
        print(line)
    if len(counts) > 1:
        for name in ("fleet", "base") if args.base else ("fleet",):
            base, per_app = fit(cpu_medians[name])
            print(f"CPU fit, {'this tree' if name == 'fleet' else 'base'}: {base:.3f} s + "
                  f"{per_app:.4f} s per app")
    if args.base:
        before = {count: statistics.median(old[count]) for count in counts}
        print(f"\nSame runs, interleaved: base {args.base} against this tree")
        print("| apps | base s | this tree s | this tree / base |\n|---|---|---|---|")
        for count in counts:
            print(f"| {count} | {before[count]:.2f} | {medians[count]:.2f} | "
                  f"{medians[count] / before[count]:.2f} |")
        if len(counts) > 1:
            base, per_app = fit(before)
            print(f"base fit: {base:.3f} s + {per_app:.4f} s per app")
    subnet = os.environ.get("FLEET_TEST_BRIDGE_SUBNET", "10.213.64.0/24")
    print(f"command: sudo FLEET_TEST_BRIDGE_SUBNET={subnet} .venv/bin/python bench/noop.py "
          + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

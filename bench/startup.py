"""Startup: how long `fleet --version`, `fleet status` and `fleet status --json` take on a
server with 10 apps (copies of tests/apps/pulse), for the pyz built from a base commit (default
main) and the one built from this tree, measured in the same run inside the server.

Each pyz extracts into its own SHIV_ROOT (their preambles would otherwise delete each other's
extraction). The first `--version` of each is timed on its own (extraction, and compiling for
the new build); every command then runs once to warm up (the old build writes its bytecode
then), then `--runs` times, old and new interleaved with two floors (`python3 -c pass`, and the new
pyz starting without fleet); medians and new/old ratios are printed.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.X.0/24 .venv/bin/python bench/startup.py \
        [--runs 10] [--apps 10] [--base main]

The server sits on a private bridge (bench/_common.py `bridged`): no host lock to wait for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, apply, bridged, machine
from tests.harness import BareServer

# Run by the server's python3: argv[1] is a JSON list of [variant, command line, env] to run
# in that order; prints the seconds each took, wall and CPU (user + system of the command
# and the processes it waited for), and fails on a non-zero exit. On a shared, loaded host
# the CPU seconds move much less than the wall seconds.
TIMER = r"""
import json, os, resource, subprocess, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
times = []
for variant, argv, env in json.loads(sys.argv[1]):
    start, used = time.perf_counter(), cpu()
    proc = subprocess.run(argv, env=dict(os.environ, **env), capture_output=True)
    elapsed, used = time.perf_counter() - start, cpu() - used
    if proc.returncode != 0:
        sys.exit(f"{variant} {argv}: exit {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    times.append([variant, argv[1:], elapsed, used])
print(json.dumps(times))
"""
COMMANDS = (["--version"], ["status"], ["status", "--json"])
# The floors, measured in the same rounds: Python itself, and shiv's own start (the new pyz
# running `-c pass` in its interpreter mode: zip directory read twice, extraction found,
# site-packages added, preamble run; no fleet code).
FLOORS = (["python", ["python3", "-c", "pass"], {}],
          ["shiv", ["/root/fleet-new.pyz", "-c", "pass"],
           {"SHIV_ROOT": "/var/lib/fleet/bench-new", "SHIV_INTERPRETER": "1"}])


def build_base(rev: str, tmp: Path) -> Path:
    """The pyz of commit rev, built by that commit's own build.py from a `git archive`."""
    tree = tmp / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    out = tmp / "fleet-old.pyz"
    subprocess.run([sys.executable, str(tree / "build.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


def toml(repo: str, count: int) -> str:
    return "".join(f'[apps.s{i:02d}]\nrepo = "{repo}"\n'
                   f'domains = ["s{i:02d}.test"]\n\n' for i in range(1, count + 1))


def timed(server: BareServer, runs: list[list]) -> list[list]:
    server.write_file("/root/timer.py", TIMER)
    result = server.run(["python3", "/root/timer.py", json.dumps(runs)], timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"timing failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return json.loads(result.stdout)


def variant_run(variant: str, args: list[str]) -> list:
    return [variant, [f"/root/fleet-{variant}.pyz", *args],
            {"SHIV_ROOT": f"/var/lib/fleet/bench-{variant}"}]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--base", default="main", help="commit whose pyz is the old one")
    args = parser.parse_args()
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                          check=True, capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        old = build_base(base, Path(tmp))
        with bridged(Path(tmp), "startup") as (server, repo):
            server.copy_in(old, "/root/fleet-old.pyz", 0o755)
            server.copy_in(Path(tmp) / "fleet.pyz", "/root/fleet-new.pyz", 0o755)
            begin = time.monotonic()
            apply(server, toml(repo, args.apps), timeout=3600)
            print(f"apply of {args.apps} apps: {time.monotonic() - begin:.0f} s",
                  file=sys.stderr, flush=True)
            first = timed(server, [variant_run(v, ["--version"]) for v in ("old", "new")])
            timed(server, [variant_run(v, c) for c in COMMANDS for v in ("old", "new")])
            rounds = [run for _ in range(args.runs) for run in (
                *FLOORS, *(variant_run(v, c) for c in COMMANDS for v in ("old", "new")))]
            measured = timed(server, rounds)
    print(f"{args.apps} apps, {args.runs} interleaved runs each, inside the server; "
          f"old = {base}, new = this tree")
    print("| command | old s | new s | new / old | old CPU s | new CPU s | new / old CPU |\n"
          "|---|---|---|---|---|---|---|")
    extraction = {variant: seconds for variant, _, seconds, _ in first}
    print(f"| first `fleet --version` (extraction) | {extraction['old']:.3f} | "
          f"{extraction['new']:.3f} | {extraction['new'] / extraction['old']:.2f} | | | |")
    for command in COMMANDS:
        wall, cpu = ({v: median([run[index] for run in measured
                                 if run[0] == v and run[1] == command])
                      for v in ("old", "new")} for index in (2, 3))
        print(f"| `fleet {' '.join(command)}` (median) | {wall['old']:.3f} | {wall['new']:.3f} | "
              f"{wall['new'] / wall['old']:.2f} | {cpu['old']:.3f} | {cpu['new']:.3f} | "
              f"{cpu['new'] / cpu['old']:.2f} |")
    floor = {(name, index): median([run[index] for run in measured if run[0] == name])
             for name in ("python", "shiv") for index in (2, 3)}
    print(f"floors on the same server (medians, wall / CPU): `python3 -c pass` "
          f"{floor['python', 2]:.3f} / {floor['python', 3]:.3f} s; the new pyz with "
          f"SHIV_INTERPRETER=1 running `-c pass` {floor['shiv', 2]:.3f} / {floor['shiv', 3]:.3f} s")
    print(f"load average of the host after the runs: {os.getloadavg()[0]:.1f} "
          f"({os.cpu_count()} cores)")
    print("command: sudo FLEET_TEST_BRIDGE_SUBNET=... .venv/bin/python bench/startup.py "
          + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

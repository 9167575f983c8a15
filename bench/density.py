"""Density: many on-demand apps on one server, RSS asleep and wake-up latency.

Up to 100 small apps (copies of tests/apps/pulse, one git repo) on one bare server, all
`mode = "on-demand"` (idle = 5): the apply that adds the last app, the total RSS (and PSS)
of every uWSGI process once they all sleep, read from /proc, and the first-request latency of
each sleeping app through nginx (p50, p99, max). With --always, first the same apps all
`mode = "always"`, each answered once, for the memory they take awake.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.64.0/24 .venv/bin/python bench/density.py \
        [--apps 100] [--idle 5] [--always]

The server sits on a private bridge (tests/harness/bridged.py): no host lock.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from _common import bridged, machine
from tests.harness import BareServer

# Run by the server's python3: every uWSGI process (comm uwsgi*), its RSS and PSS in KiB.
MEMORY = r"""
import json, os
rows = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
        if not comm.startswith("uwsgi"):
            continue
        lines = open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:]
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        rows.append([int(pid), comm, int(fields["Rss"].split()[0]),
                     int(fields["Pss"].split()[0])])
    except (OSError, KeyError, ValueError):
        pass
print(json.dumps(rows))
"""
# Run by the server's python3: one GET / per Host through nginx, seconds to the full answer.
FIRST = r"""
import http.client, json, sys, time
out = []
for host in sys.argv[1:]:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
    conn.request("GET", "/", headers={"Host": host})
    response = conn.getresponse()
    response.read()
    out.append([host, response.status, time.perf_counter() - start])
    conn.close()
print(json.dumps(out))
"""


def toml(url: str, count: int, mode: str, idle: int) -> str:
    extra = f'mode = "on-demand"\nidle = {idle}\n' if mode == "on-demand" else ""
    return "".join(f'[apps.d{i:03d}]\nrepo = "{url}"\n'
                   f'domains = ["d{i:03d}.test"]\n{extra}\n' for i in range(1, count + 1))


def apply(server: BareServer, toml_text: str, first: bool = False) -> float:
    """Seconds of one `fleet apply --prune` of TOML_TEXT, measured inside the server (the
    first through bootstrap, which installs fleet)."""
    server.write_file("/root/fleet.toml", toml_text)
    command = ("sh /root/bootstrap /root/fleet.pyz apply /root/fleet.toml" if first
               else "fleet apply --prune /root/fleet.toml")
    out = server.run(f"s=$(date +%s.%N); {command} >/root/apply.out 2>&1; rc=$?; "
                     "e=$(date +%s.%N); echo $s $e $rc", timeout=3600).stdout.split()
    if out[2] != "0":
        raise SystemExit(f"{command} failed:\n{server.read_file('/root/apply.out')[-3000:]}")
    return float(out[1]) - float(out[0])


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `share` of them at or below."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * share)) - 1]


def memory(server: BareServer) -> list[list]:
    server.write_file("/root/memory.py", MEMORY)
    return json.loads(server.run(["python3", "/root/memory.py"], check=True).stdout)


def first_requests(server: BareServer, hosts: list[str]) -> list[list]:
    server.write_file("/root/first.py", FIRST)
    return json.loads(server.run(["python3", "/root/first.py", *hosts], check=True,
                                 timeout=600).stdout)


def wait_asleep(server: BareServer, limit: float = 120) -> float:
    """Seconds until only the Emperor is left (every vassal exited after idling)."""
    begin = time.monotonic()
    while time.monotonic() - begin < limit:
        if len(memory(server)) <= 1:
            return time.monotonic() - begin
        time.sleep(1)
    raise SystemExit(f"vassals still running after {limit} s: {memory(server)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--idle", type=int, default=5)
    parser.add_argument("--always", action="store_true",
                        help="first run them all always, for the memory they take awake")
    args = parser.parse_args()
    hosts = [f"d{i:03d}.test" for i in range(1, args.apps + 1)]
    print(f"machine: {machine()}", flush=True)
    always: list[list] = []
    warm: list[list] = []
    with tempfile.TemporaryDirectory() as tmp, bridged(Path(tmp), "density") as (server, url):
        first = True
        if args.always:
            seconds = apply(server, toml(url, args.apps, "always", args.idle), first=True)
            print(f"apply of {args.apps} always apps: {seconds:.0f} s", file=sys.stderr,
                  flush=True)
            warm = first_requests(server, hosts)  # every app answered once
            always = memory(server)
            first = False
        seconds = apply(server, toml(url, args.apps - 1, "on-demand", args.idle), first=first)
        print(f"apply to {args.apps - 1} on-demand apps: {seconds:.0f} s", file=sys.stderr,
              flush=True)
        add_last = apply(server, toml(url, args.apps, "on-demand", args.idle))
        time.sleep(args.idle)
        slept = wait_asleep(server)
        asleep = memory(server)
        first_answers = first_requests(server, hosts)
        awake = memory(server)
        time.sleep(args.idle)
        again = wait_asleep(server)
    bad = [r for r in warm + first_answers if r[1] != 200]
    if bad:
        raise SystemExit(f"non-200 answers: {bad}")
    latencies = [r[2] * 1000 for r in first_answers]
    print(f"{args.apps} apps (tests/apps/pulse, 2 processes each), on-demand, idle = {args.idle}")
    print("| state | uWSGI processes | total RSS MiB | total PSS MiB |\n|---|---|---|---|")
    rows = [("all always, each answered once", always)] if args.always else []
    rows += [("all on-demand, asleep", asleep),
             ("on-demand, right after the last wake-up", awake)]
    for label, found in rows:
        print(f"| {label} | {len(found)} | {sum(r[2] for r in found) / 1024:.0f} | "
              f"{sum(r[3] for r in found) / 1024:.0f} |")
    if args.always:
        print(f"asleep / always RSS: {sum(r[2] for r in asleep) / sum(r[2] for r in always):.3f}")
    print(f"apply that adds app {args.apps} to {args.apps - 1} on-demand apps: {add_last:.2f} s")
    print(f"first request to a sleeping app, over the {args.apps}: "
          f"p50 {percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms, "
          f"max {max(latencies):.0f} ms, min {min(latencies):.0f} ms")
    print(f"all asleep {slept + args.idle:.0f} s after the apply; asleep again "
          f"{again + args.idle:.0f} s after the wake-ups")
    print("command: sudo FLEET_TEST_BRIDGE_SUBNET=10.213.64.0/24 .venv/bin/python "
          "bench/density.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""Density: 30 small apps (copies of tests/apps/pulse, one git repo) on one bare server, once
all `mode = "always"` and once all `mode = "on-demand"` (idle = 5) after they idled: total
RSS (and PSS) of every uWSGI process, read from /proc, and the first-request latency of each
sleeping app through nginx (median and max).

    sudo .venv/bin/python bench/density.py [--apps 30] [--idle 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import apply, machine, start
from tests.harness import BareServer, GitRemote

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


def toml(remote: GitRemote, count: int, mode: str, idle: int) -> str:
    extra = f'mode = "on-demand"\nidle = {idle}\n' if mode == "on-demand" else ""
    return "".join(f'[apps.d{i:02d}]\nrepo = "{remote.url("pulse")}"\n'
                   f'domains = ["d{i:02d}.test"]\n{extra}\n' for i in range(1, count + 1))


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
    parser.add_argument("--apps", type=int, default=30)
    parser.add_argument("--idle", type=int, default=5)
    args = parser.parse_args()
    hosts = [f"d{i:02d}.test" for i in range(1, args.apps + 1)]
    print(f"machine: {machine()}", flush=True)
    with GitRemote() as remote, tempfile.TemporaryDirectory() as tmp:
        server = start(remote, Path(tmp))
        try:
            begin = time.monotonic()
            apply(server, toml(remote, args.apps, "always", args.idle), timeout=3600)
            print(f"apply of {args.apps} always apps: {time.monotonic() - begin:.0f} s",
                  file=sys.stderr, flush=True)
            warm = first_requests(server, hosts)  # every app answered once
            always = memory(server)
            begin = time.monotonic()
            apply(server, toml(remote, args.apps, "on-demand", args.idle), timeout=3600)
            print(f"apply to on-demand: {time.monotonic() - begin:.0f} s", file=sys.stderr,
                  flush=True)
            time.sleep(args.idle)
            slept = wait_asleep(server)
            asleep = memory(server)
            first = first_requests(server, hosts)
            awake = memory(server)
            time.sleep(args.idle)
            again = wait_asleep(server)
        finally:
            server.destroy()
    bad = [r for r in warm + first if r[1] != 200]
    if bad:
        raise SystemExit(f"non-200 answers: {bad}")
    rss_always = sum(r[2] for r in always)
    rss_asleep = sum(r[2] for r in asleep)
    latencies = [r[2] * 1000 for r in first]
    print(f"{args.apps} apps (tests/apps/pulse, 2 processes each)")
    print("| state | uWSGI processes | total RSS MiB | total PSS MiB |\n|---|---|---|---|")
    for label, rows in (("all always, each answered once", always),
                        (f"all on-demand, asleep (idle = {args.idle})", asleep),
                        ("on-demand, right after one request each", awake)):
        print(f"| {label} | {len(rows)} | {sum(r[2] for r in rows) / 1024:.0f} | "
              f"{sum(r[3] for r in rows) / 1024:.0f} |")
    print(f"asleep / always RSS: {rss_asleep / rss_always:.3f} "
          f"({rss_always / 1024:.0f} -> {rss_asleep / 1024:.0f} MiB)")
    print(f"first request to a sleeping app: median {statistics.median(latencies):.0f} ms, "
          f"max {max(latencies):.0f} ms, min {min(latencies):.0f} ms "
          f"(always mode, warm: median "
          f"{statistics.median(r[2] * 1000 for r in warm):.1f} ms for a first request)")
    print(f"all asleep {slept + args.idle:.0f} s after the apply; asleep again "
          f"{again + args.idle:.0f} s after the wake-ups")
    print("command: sudo .venv/bin/python bench/density.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

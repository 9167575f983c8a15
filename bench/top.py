"""`fleet top` and `fleet metrics` cost: one sample of N apps (copies of tests/apps/pulse), each
with a big access log (--log-mb of lines an hour old, then --per-minute lines in the last
minute), against `fleet --version` (the pyz's own start) and `fleet status --json` in the same
interleaved runs inside the server.

`fleet metrics` is timed twice: its first run counts every log from the start (up to 64 MB
each), later runs only what was written since (the steady state of the 15 s timer).

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.62.0/24 .venv/bin/python bench/top.py \
        [--apps 10] [--runs 10] [--log-mb 50] [--per-minute 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import APPS, apply, machine
from startup import median, timed, toml
from tests.e2e.helpers import build_pyz, install_fleet
from tests.harness import GitRemote, install_signal_handlers
from tests.harness.bridged import BridgedServer
from tests.harness.network import BridgeNetwork

# Run by the server's python3: writes each app's access log in fleet's format.
WRITE_LOGS = r"""
import json, sys, time
apps, megabytes, per_minute = json.loads(sys.argv[1])
now = time.time()
def line(t, status, rt):
    return json.dumps({"time": round(t, 3), "status": status, "request_time": rt,
                       "upstream_time": str(rt), "bytes": 12, "remote_addr": "10.0.0.1",
                       "host": "x.test", "method": "GET", "uri": "/", "protocol": "HTTP/1.1",
                       "referer": "", "user_agent": "bench"}, separators=(",", ":")) + "\n"
for app in apps:
    old = line(now - 3600, 200, 0.004) * (megabytes * 2**20 // len(line(now, 200, 0.004)))
    recent = "".join(line(now - 60 + 60 * i / per_minute, 500 if i % 50 == 0 else 200,
                          0.001 + (i % 100) / 1000) for i in range(per_minute))
    with open(f"/var/log/nginx/fleet-{app}.access.log", "w") as handle:
        handle.write(old + recent)
"""
COMMANDS = (["--version"], ["status", "--json"], ["top", "--once", "--json"], ["metrics"])


def run(args: list[str]) -> list:
    return ["fleet", ["/usr/local/bin/fleet", *args], {}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--log-mb", type=int, default=50)
    parser.add_argument("--per-minute", type=int, default=3000)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    names = [f"s{i:02d}" for i in range(1, args.apps + 1)]
    install_signal_handlers()
    # A bridged server (FLEET_TEST_BRIDGE_SUBNET): no wait for the host-network lock.
    with BridgeNetwork() as network, GitRemote(listen=("127.0.0.1", network.gateway)) as remote, \
            tempfile.TemporaryDirectory() as tmp:
        remote.create_repo("pulse", APPS / "pulse")
        server = BridgedServer(network, 0, "bench-top")
        try:
            server.boot()
            install_fleet(server, build_pyz(Path(tmp) / "fleet.pyz"))
            apply(server, toml(remote, args.apps).replace(remote.url("pulse"), remote.url(
                "pulse", network.gateway)), timeout=3600)
            server.write_file("/root/logs.py", WRITE_LOGS)
            server.run(["python3", "/root/logs.py",
                        json.dumps([names, args.log_mb, args.per_minute])], check=True,
                       timeout=1800)
            first_metrics = timed(server, [run(["metrics"])])[0][2]
            timed(server, [run(c) for c in COMMANDS])  # warm up
            started = time.time()
            measured = timed(server, [run(c) for _ in range(args.runs) for c in COMMANDS])
            sample = json.loads(server.run(["/usr/local/bin/fleet", "top", "--once", "--json"],
                                           check=True).stdout)
        finally:
            server.destroy()
    print(f"{args.apps} apps, each log {args.log_mb} MB old + {args.per_minute} lines in the "
          f"last minute; {args.runs} interleaved runs inside the server (medians)")
    med = {tuple(c): median([s for _, argv, s in measured if argv == c]) for c in COMMANDS}
    base = med[("--version",)]
    print("| command | s | / `fleet --version` | / `fleet status --json` |\n|---|---|---|---|")
    for command in COMMANDS:
        seconds = med[tuple(command)]
        print(f"| `fleet {' '.join(command)}` | {seconds:.3f} | {seconds / base:.2f} | "
              f"{seconds / med[('status', '--json')]:.2f} |")
    print(f"| `fleet metrics`, first run (whole logs) | {first_metrics:.3f} | "
          f"{first_metrics / base:.2f} | |")
    seen = sample["apps"][names[0]]
    print(f"sample check ({time.time() - started:.0f} s after the logs' last minute began): "
          f"{names[0]} requests {seen['requests']}, 5xx {seen['5xx']}")
    print("command: sudo .venv/bin/python bench/top.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

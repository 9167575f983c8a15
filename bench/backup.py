"""Backups measured: an app (tests/apps/ledger) with about 1 GiB of data in its persist
directory (random files plus a SQLite database), then

- the first `fleet backup` (seconds, repository size),
- `fleet restore` of that snapshot (seconds),
- 1% of the data changed (a few MiB rewritten in place, rows added), `fleet backup` again
  (seconds, repository growth),

against a baseline in the same run: `cp -a` of the same directory (the cost of just reading
and writing the bytes once). Prints a markdown table. The server is on a private bridge
(FLEET_TEST_BRIDGE_SUBNET), so it does not wait for the host-network lock.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.61.0/24 .venv/bin/python bench/backup.py [--gib 1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import APPS, apply, machine
from tests.e2e.helpers import build_pyz, fleet_json, install_fleet
from tests.harness import BareServer, GitRemote, install_signal_handlers
from tests.harness.bridged import BridgedServer
from tests.harness.network import BridgeNetwork

HOST = "ledger.test"
DATA = "/srv/fleet/ledger/shared/instance"
REPO = "/var/backups/fleet/restic"
FILE_MIB = 64
DB_SCRIPT = """
import sqlite3, os, sys
c = sqlite3.connect(sys.argv[1]); c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT)")
n = int(sys.argv[2])
for start in range(0, n, 10000):
    c.executemany("INSERT INTO rows (body) VALUES (?)",
                  [(os.urandom(400).hex(),) for _ in range(min(10000, n - start))])
    c.commit()
"""


def toml(url: str) -> str:
    return f"""[server.backup]

[apps.ledger]
repo = "{url}"
domains = ["{HOST}"]
health = {{ path = "/health" }}
"""


def du(server: BareServer, path: str) -> int:
    return int(server.run(["du", "-sb", path], check=True).stdout.split()[0])


def timed(server: BareServer, *args: str) -> tuple[float, dict]:
    started = time.monotonic()
    run = fleet_json(server, *args, timeout=7200)
    if run.returncode != 0:
        raise SystemExit(f"fleet {args} failed: {run.result.stdout[-2000:]}{run.result.stderr}")
    return time.monotonic() - started, run.data


def fill(server: BareServer, gib: float) -> None:
    files = max(1, int(gib * 1024 * 0.9 / FILE_MIB))
    server.run(f"for i in $(seq 1 {files}); do head -c {FILE_MIB}M /dev/urandom > "
               f"{DATA}/blob$i; done", check=True, timeout=3600)
    rows = int(gib * 2**30 * 0.1 / 900)  # about a tenth of the data in the database
    server.run(["python3", "-c", DB_SCRIPT, f"{DATA}/ledger.db", str(rows)], check=True,
               timeout=3600)
    server.run(f"chown -R ledger:ledger {DATA}", check=True)


def change_one_percent(server: BareServer, gib: float) -> None:
    total_mib = int(gib * 1024 * 0.01)
    per_file = max(1, total_mib // 2)
    for name in ("blob1", "blob2"):
        server.run(f"head -c {per_file}M /dev/urandom | dd of={DATA}/{name} bs=1M seek=8 "
                   "conv=notrunc status=none", check=True)
    server.run(["runuser", "-u", "ledger", "--", "python3", "-c", DB_SCRIPT,
                f"{DATA}/ledger.db", "2000"], check=True, timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="data size in GiB")
    args = parser.parse_args()
    install_signal_handlers()
    with tempfile.TemporaryDirectory() as tmp, BridgeNetwork() as network, \
            GitRemote(listen=("127.0.0.1", network.gateway)) as remote:
        remote.create_repo("ledger", APPS / "ledger")
        server = BridgedServer(network, 0, "bench-backup")  # its own network: no host lock
        try:
            server.boot()
            install_fleet(server, build_pyz(Path(tmp) / "fleet.pyz"))
            apply(server, toml(remote.url("ledger", network.gateway)))
            fill(server, args.gib)
            data = du(server, DATA)
            started = time.monotonic()
            server.run(f"cp -a {DATA} /root/copy && sync", check=True, timeout=3600)
            copy = time.monotonic() - started
            server.run("rm -rf /root/copy", check=True)
            first, first_run = timed(server, "backup", "ledger")
            repo1 = du(server, REPO)
            restore, _ = timed(server, "restore", "ledger")
            change_one_percent(server, args.gib)
            second, second_run = timed(server, "backup", "ledger")
            repo2 = du(server, REPO)
        finally:
            server.destroy()
    mib = 2**20
    print(f"machine: {machine()}")
    print(json.dumps({"first": first_run, "second": second_run}, indent=1))
    print(f"\ndata: {data / mib:.0f} MiB\n")
    print("| step | seconds | x cp -a | repository |")
    print("|---|---|---|---|")
    print(f"| baseline: cp -a of the data | {copy:.1f} | 1.00 | |")
    print(f"| first fleet backup | {first:.1f} | {first / copy:.2f} | {repo1 / mib:.0f} MiB "
          f"({repo1 / data:.2f} x data) |")
    print(f"| fleet restore (latest) | {restore:.1f} | {restore / copy:.2f} | |")
    print(f"| fleet backup after a 1% change | {second:.1f} | {second / copy:.2f} | "
          f"+{(repo2 - repo1) / mib:.1f} MiB |")


if __name__ == "__main__":
    main()

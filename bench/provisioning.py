"""Provisioning cost: wall time of a cold `fleet apply` of 2 apps on a bare server, split by
step; wall time of a no-op `fleet apply` with 1, 10 and 30 apps; size of fleet.pyz and time
of `fleet --version` (median of 10). All apps are copies of tests/apps/pulse under their own
names and domains, from one git repo (identical requirements: pip's cache serves the venvs).

    sudo .venv/bin/python bench/provisioning.py [--apps 1,10,30] [--noop-runs 3]

Step times come from outside fleet: every line fleet prints (one per finished step, in
order) is stamped as it arrives inside the server; a step's time is the gap since the line
before it. The first step's time therefore includes bootstrap's exec and the zipapp's start.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

from _common import machine, start
from tests.harness import BareServer, GitRemote

STEP = re.compile(r"^(ok|changed|failed|would change)\s+(.*?)(?: \[[\d.]+ s\])?$")
STAMPED = r"""
{ %s 2>&1; echo "exit-status $?"; } | while IFS= read -r line; do
  printf '%%s %%s\n' "$(date +%%s.%%N)" "$line"
done
"""


def toml(remote: GitRemote, count: int) -> str:
    return "".join(f'[apps.p{i:02d}]\nrepo = "{remote.url("pulse")}"\n'
                   f'domains = ["p{i:02d}.test"]\n\n' for i in range(1, count + 1))


def stamped(server: BareServer, command: str, timeout: float = 3600) -> list[tuple[float, str]]:
    """The output lines of COMMAND inside the server, each with its arrival time."""
    out = server.run("date +%s.%N; " + STAMPED % command, timeout=timeout, check=True).stdout
    lines = [line for line in out.split("\n") if line]  # apt-get's progress has bare \r
    rows = [(float(lines[0]), "start")]
    for line in lines[1:]:
        stamp, _, text = line.partition(" ")
        rows.append((float(stamp), text.rstrip("\r")))
    if rows[-1][1] != "exit-status 0":
        raise SystemExit(f"{command} failed:\n" + "\n".join(t for _, t in rows[-60:]))
    return rows


def split_steps(rows: list[tuple[float, str]]) -> list[tuple[str, str, float]]:
    """(status, step, seconds) per fleet step line; bootstrap's own lines count apart."""
    steps = []
    last = rows[0][0]
    for stamp, text in rows[1:]:
        match = STEP.match(text)
        if match:
            steps.append((match[1], match[2], stamp - last))
            last = stamp
        elif text.startswith("bootstrap: ") and "installed" in text:
            steps.append(("-", "bootstrap: python3 + install the zipapp", stamp - last))
            last = stamp
    return steps


def timed_apply(server: BareServer, args: str, fleet: str = "fleet") -> tuple[float, dict]:
    """Wall time of `FLEET apply ARGS --json` measured inside the server, and its JSON."""
    out = server.run(f"s=$(date +%s.%N); {fleet} apply {args} --json >/root/apply.json; "
                     "rc=$?; e=$(date +%s.%N); echo $s $e $rc", timeout=3600).stdout.split()
    data = json.loads(server.read_file("/root/apply.json"))
    if out[2] != "0":
        raise SystemExit(f"fleet apply {args} exited {out[2]}:\n{json.dumps(data)[-3000:]}")
    return float(out[1]) - float(out[0]), data


def version_times(server: BareServer, runs: int = 10) -> list[float]:
    server.run("fleet --version", check=True)  # first run extracts the zipapp
    out = server.run(f"for i in $(seq {runs}); do s=$(date +%s.%N); fleet --version "
                     ">/dev/null; e=$(date +%s.%N); echo $s $e; done", check=True).stdout
    return [float(e) - float(s) for s, e in (line.split() for line in out.splitlines())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default="1,10,30", help="app counts for the no-op apply")
    parser.add_argument("--noop-runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.apps.split(",")]
    print(f"machine: {machine()}", flush=True)
    noop: dict[int, list[float]] = {}
    grow: dict[int, float] = {}
    with GitRemote() as remote, tempfile.TemporaryDirectory() as tmp:
        server = start(remote, Path(tmp))
        pyz_size = (Path(tmp) / "fleet.pyz").stat().st_size
        try:
            server.write_file("/root/fleet.toml", toml(remote, 2))
            rows = stamped(server, "COLUMNS=250 sh /root/bootstrap /root/fleet.pyz apply "
                                   "/root/fleet.toml")
            cold = rows[-1][0] - rows[0][0]
            steps = split_steps(rows)
            version = version_times(server)
            for count in counts:
                server.write_file("/root/fleet.toml", toml(remote, count))
                seconds, _ = timed_apply(server, "--prune /root/fleet.toml")
                grow[count] = seconds
                print(f"apply to {count} apps: {seconds:.1f} s", file=sys.stderr, flush=True)
                for _ in range(args.noop_runs):
                    seconds, data = timed_apply(server, "/root/fleet.toml")
                    if data.get("changed") or data.get("failed"):
                        raise SystemExit(f"apply of {count} apps was no no-op: {data}")
                    noop.setdefault(count, []).append(seconds)
        finally:
            server.destroy()
    print(f"\nCold `sh bootstrap fleet.pyz apply` of 2 apps on a bare server: {cold:.1f} s")
    print("| step | status | seconds |\n|---|---|---|")
    for status, name, seconds in steps:
        if seconds >= 0.05 or status == "changed":
            print(f"| {name} | {status} | {seconds:.2f} |")
    small = sum(s for st, _, s in steps if s < 0.05 and st != "changed")
    print(f"| (other steps, each < 0.05 s) | ok | {small:.2f} |")
    print(f"\nNo-op `fleet apply FILE` (median of {args.noop_runs}; the apply that grew the "
          "server to that many apps in brackets)")
    print("| apps | no-op seconds | per app | growing apply seconds |\n|---|---|---|---|")
    for count in counts:
        med = statistics.median(noop[count])
        print(f"| {count} | {med:.2f} | {med / count:.3f} | {grow[count]:.1f} |")
    if len(counts) > 1:
        a, b = counts[0], counts[-1]
        slope = (statistics.median(noop[b]) - statistics.median(noop[a])) / (b - a)
        print(f"no-op apply grows by {slope:.3f} s per app ({a} -> {b} apps)")
    print(f"\nfleet.pyz: {pyz_size / 1e6:.2f} MB ({pyz_size} bytes)")
    print(f"fleet --version inside the server: median {statistics.median(version):.3f} s, "
          f"min {min(version):.3f}, max {max(version):.3f} (10 runs, after the first)")
    print("command: sudo .venv/bin/python bench/provisioning.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

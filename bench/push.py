"""Rolling push cost: `fleet push` to two app servers and a front (tests/harness/cluster.py),
cold, as a no-op, and for a new commit with the fronts draining each app server while it
deploys (the default) vs `--no-drain`, interleaved, under continuous load through the front.

    sudo .venv/bin/python bench/push.py [--rounds 3] [--noop-runs 3] [--threads 4] [--rate 200]

Prints the medians and the ratio drain / no-drain of a push's wall time, the seconds each app
server spent out of rotation, and the requests sent and failed during each push.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import APPS, machine
from tests.e2e.helpers import build_pyz
from tests.e2e.load import Load
from tests.harness import default_suite, install_signal_handlers
from tests.harness.cluster import DOMAIN, Cluster, whoami_cluster


def timed_push(cluster: Cluster, *args: str) -> tuple[float, dict]:
    start = time.monotonic()
    code, report, stderr = cluster.push(*args)
    if code != 0:
        raise SystemExit(f"fleet push {' '.join(args)} failed:\n{stderr[-3000:]}")
    return time.monotonic() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="new-commit pushes per mode")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op pushes to time")
    parser.add_argument("--threads", type=int, default=4, help="concurrent load threads")
    parser.add_argument("--rate", type=float, default=200,
                        help="requests per second, about (each is a new connection: faster "
                             "runs out of the host's ports in TIME_WAIT over several rounds)")
    args = parser.parse_args()
    install_signal_handlers()
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build_pyz(Path(tmp) / "fleet.pyz")
        work = Path(tmp) / "work"
        work.mkdir()
        with whoami_cluster(default_suite(), pyz, APPS, work) as cluster:
            cold, _ = timed_push(cluster)
            noop = [timed_push(cluster)[0] for _ in range(args.noop_runs)]
            rows: dict[str, list[tuple[float, int, int, list[float]]]] = {
                "drain": [], "no-drain": []}
            version = 1
            for _ in range(args.rounds):
                for mode in rows:
                    version += 1
                    cluster.git.commit("whoami", {"wsgi.py": cluster.source.replace(
                        '"v1"', f'"v{version}"')})
                    with Load(DOMAIN, address=cluster.front.address, threads=args.threads,
                              pause=args.threads / args.rate) as load:
                        seconds, report = timed_push(
                            cluster, *(["--no-drain"] if mode == "no-drain" else []))
                    out = [h["rotation"]["back"][1] - h["rotation"]["out"][0]
                           for h in report["hosts"].values() if h.get("rotation")]
                    rows[mode].append((seconds, load.sent, load.failed, out))
                    reasons = sorted({f.split(":")[0] for f in load.failures})
                    print(f"{mode}: {seconds:.1f} s, {load.sent} sent, {load.failed} failed"
                          + (f" ({', '.join(reasons)}; first: {load.failures[0]})"
                             if reasons else ""), flush=True)
    print(f"machine: {machine()}")
    print(f"cold push (2 app servers + front, from bare): {cold:.1f} s")
    print(f"no-op push: median {statistics.median(noop):.1f} s "
          f"({', '.join(f'{s:.1f}' for s in noop)})")
    print()
    print("| push of a new commit | wall time (median) | out of rotation per server "
          "| requests sent | failed |")
    print("|---|---|---|---|---|")
    medians = {}
    for mode, runs in rows.items():
        medians[mode] = statistics.median(r[0] for r in runs)
        out = [o for r in runs for o in r[3]]
        print(f"| {mode} | {medians[mode]:.1f} s "
              f"({', '.join(f'{r[0]:.1f}' for r in runs)}) | "
              + (f"median {statistics.median(out):.1f} s" if out else "-")
              + f" | {sum(r[1] for r in runs)} | {sum(r[2] for r in runs)} |")
    print()
    print(f"ratio drain / no-drain (wall time): {medians['drain'] / medians['no-drain']:.2f}")


if __name__ == "__main__":
    main()

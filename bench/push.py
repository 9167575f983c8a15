"""Push at scale: `fleet push` to a cluster of `--apps` app servers and `--fronts` fronts
(tests/harness/cluster.py, default 20 + 2) on a private bridge: the first push, the no-op push
to 3 servers (app1, app2, front: the old test cluster, with --limit) and to all of them,
interleaved, and a rolling push of a new commit with `--batch 5` under continuous load
through every front.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.65.0/24 .venv/bin/python bench/push.py \\
        [--apps 20] [--fronts 2] [--batch 5] [--parallel 10] [--noop-runs 3] [--rounds 0] \\
        [--bare]

The servers start from the provisioned tree (python3, fleet's OS packages and sshd already
installed: tests/harness/rootfs.py), so the first push skips apt; what is measured is the
no-op and the rolling push, which install nothing either way. `--bare` boots bare servers
(the first push then provisions them: 12 of them took 1018 s on the shared 2-core host).

Prints the no-op growth from 3 servers to all (goal: at most 2x), every push's waves with
their times, the most app servers out of rotation at once, the requests sent and failed
through the fronts (goal: 0 failed), and the host's load average during each phase (the
servers and the operator share its cores). `--rounds N` also times N new-commit pushes with
draining (the default) against `--no-drain`, interleaved (the earlier bench: `--apps 2
--fronts 1 --rounds 3`).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from _common import APPS, machine
from tests.e2e.helpers import build_pyz
from tests.e2e.load import Load, LoadResult
from tests.harness import default_suite, install_signal_handlers
from tests.harness.cluster import DOMAIN, Cluster, whoami_cluster


class LoadAverage:
    """The host's 1-minute load average, sampled every few seconds, per named phase."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.phase = ""
        self.samples: dict[str, list[float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def __enter__(self) -> LoadAverage:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def sample(self) -> None:
        while not self.stop.wait(self.every):
            if self.phase:
                load = float(Path("/proc/loadavg").read_text().split()[0])
                self.samples.setdefault(self.phase, []).append(load)

    def line(self) -> str:
        return "; ".join(f"{phase} {min(v):.1f} to {max(v):.1f} (median "
                         f"{statistics.median(v):.1f})" for phase, v in self.samples.items())


def memory_available_gib() -> float:
    """The host's MemAvailable: the other sessions' servers come and go, so this says whether
    memory allowed the cluster, not what the cluster alone uses."""
    info = {line.split(":")[0]: int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()}
    return info["MemAvailable"] / 2**20


def timed_push(cluster: Cluster, *args: str) -> tuple[float, dict]:
    start = time.monotonic()
    code, report, stderr = cluster.push(*args)
    if code != 0:
        raise SystemExit(f"fleet push {' '.join(args)} failed:\n{stderr[-3000:]}")
    return time.monotonic() - start, report


def most_out_at_once(report: dict) -> int:
    """The most app servers out of the fronts' rotation at one moment (from the windows)."""
    edges = []
    for host in report["hosts"].values():
        rotation = host.get("rotation")
        if rotation and rotation.get("out") and rotation.get("back"):
            edges += [(rotation["out"][0], 1), (rotation["back"][1], -1)]
    most = out = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        out += step
        most = max(most, out)
    return most


def under_load(cluster: Cluster, threads: int, rate: float, *args: str
               ) -> tuple[float, dict, list[LoadResult]]:
    """A push while every front gets `threads` load threads at about `rate` requests/s."""
    with ExitStack() as stack:
        loads = [stack.enter_context(Load(DOMAIN, address=front.address, threads=threads,
                                          pause=threads / rate))
                 for front in cluster.fronts]
        seconds, report = timed_push(cluster, *args)
    return seconds, report, loads


def waves(report: dict) -> str:
    return ", ".join(f"{w['name']} {len(w['hosts'])} in {w['seconds']:.1f} s"
                     for w in report.get("waves", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=20, help="app servers")
    parser.add_argument("--fronts", type=int, default=2, help="front servers")
    parser.add_argument("--batch", type=int, default=5, help="--batch of the rolling push")
    parser.add_argument("--parallel", type=int, default=10, help="--parallel of every push")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op pushes of each size")
    parser.add_argument("--rounds", type=int, default=0,
                        help="new-commit pushes per mode, drain vs --no-drain")
    parser.add_argument("--threads", type=int, default=4, help="load threads per front")
    parser.add_argument("--rate", type=float, default=100,
                        help="requests per second per front, about (each is a new "
                             "connection: faster runs out of ports in TIME_WAIT)")
    parser.add_argument("--bare", action="store_true",
                        help="boot bare servers (the first push provisions them)")
    args = parser.parse_args()
    install_signal_handlers()
    common = ["--parallel", str(args.parallel)]
    small = ["--limit", "app1", "--limit", "app2", "--limit", "front"]
    with tempfile.TemporaryDirectory() as tmp, LoadAverage() as load:
        pyz = build_pyz(Path(tmp) / "fleet.pyz")
        work = Path(tmp) / "work"
        work.mkdir()
        booting = time.monotonic()
        available_before = memory_available_gib()
        load.phase = "boot"
        with whoami_cluster(default_suite(), pyz, APPS, work, apps=args.apps,
                            fronts=args.fronts, provisioned=not args.bare) as cluster:
            booted = time.monotonic() - booting
            total = len(cluster.servers)
            print(f"cluster: {args.apps} app servers + {args.fronts} fronts booted in "
                  f"{booted:.0f} s ({'bare' if args.bare else 'provisioned'})", flush=True)
            load.phase = "first push"
            cold, report = timed_push(cluster, *common, "--batch", str(args.batch))
            memory = (f"host memory available {available_before:.1f} GiB before the cluster, "
                      f"{memory_available_gib():.1f} GiB after its first push")
            print(f"first push, {total} servers: {cold:.1f} s ({waves(report)}); {memory}",
                  flush=True)
            noop: dict[str, list[float]] = {"3": [], str(total): []}
            noop_waves: dict[str, list[str]] = {"3": [], str(total): []}
            load.phase = "no-op pushes"
            for _ in range(args.noop_runs):  # interleaved: drift hits both sizes alike
                for size, extra in (("3", small), (str(total), [])):
                    seconds, report = timed_push(cluster, *common, *extra)
                    assert all(h["status"] == "ok" for h in report["hosts"].values()), report
                    noop[size].append(seconds)
                    noop_waves[size].append(waves(report))
                    print(f"no-op push, {size} servers: {seconds:.1f} s ({waves(report)})",
                          flush=True)
            load.phase = "one host"
            one_host = one_host_ab(cluster, args.noop_runs)
            cluster.git.commit("whoami", {"wsgi.py": cluster.source.replace('"v1"', '"v2"')})
            load.phase = "rolling push"
            rolling, report, loads = under_load(cluster, args.threads, args.rate, *common,
                                                "--batch", str(args.batch))
            sent = sum(load_.sent for load_ in loads)
            failed = sum(load_.failed for load_ in loads)
            changed = sum(1 for h in report["hosts"].values() if h["status"] == "changed")
            most = most_out_at_once(report)
            rolling_waves = waves(report)
            print(f"rolling push --batch {args.batch}: {rolling:.1f} s, {changed} changed, "
                  f"{sent} sent, {failed} failed ({rolling_waves})", flush=True)
            if failed:
                print("first failures: " + "; ".join(loads[0].failures[:3]
                                                     + loads[-1].failures[:3]))
            load.phase = "drain rounds"
            rows = drain_rounds(cluster, args) if args.rounds else {}
            load.phase = ""
    print(f"machine: {machine()}")
    print(f"--parallel {args.parallel}; cluster boot {booted:.0f} s "
          f"({'bare' if args.bare else 'provisioned'}); first push of {total} servers "
          f"{cold:.1f} s; {memory}")
    print(f"load average (1 min) of the host: {load.line()}")
    print()
    print("| no-op push | median | runs | waves (each run) |\n|---|---|---|---|")
    medians = {size: statistics.median(runs) for size, runs in noop.items()}
    for size, runs in noop.items():
        print(f"| {size} servers | {medians[size]:.1f} s | "
              f"{', '.join(f'{s:.1f}' for s in runs)} | {' / '.join(noop_waves[size])} |")
    print()
    print(f"growth 3 -> {total} servers (no-op): {medians[str(total)] / medians['3']:.2f}x "
          "(goal: <= 2x)")
    print(f"rolling push of a new commit, --batch {args.batch}: {rolling:.1f} s, "
          f"{changed} hosts changed, at most {most} app servers out of rotation at once, "
          f"{sent} requests through {len(loads)} front(s), {failed} failed")
    print(f"rolling push waves: {rolling_waves}")
    (old, old_cpu), (new, new_cpu) = one_host["plan+apply"], one_host["hold"]
    print(f"one no-op host, inside app1 (medians of {args.noop_runs}, interleaved): `fleet "
          f"plan` then `fleet apply` {old:.2f} s (cpu {old_cpu:.2f} s), `fleet apply "
          f"--hold-changes` {new:.2f} s (cpu {new_cpu:.2f} s): {new / old:.2f}x wall, "
          f"{new_cpu / old_cpu:.2f}x cpu")
    if rows:
        print_drain_rounds(rows)
    print("command: sudo FLEET_TEST_BRIDGE_SUBNET=... .venv/bin/python bench/push.py "
          + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                     if not isinstance(v, bool)) + (" --bare" if args.bare else ""))


PLAN_THEN_APPLY = ("cd /var/lib/fleet/push && fleet plan fleet.toml --json >/dev/null && "
                   "fleet apply fleet.toml --json >/dev/null")
HOLD = "cd /var/lib/fleet/push && fleet apply fleet.toml --json --hold-changes >/dev/null"


CPU_OF = ("python3 -c 'import os, subprocess, sys; subprocess.run(sys.argv[1], shell=True, "
          "check=True); t = os.times(); print(t.children_user + t.children_system)' ")


def one_host_ab(cluster: Cluster, runs: int) -> dict[str, tuple[float, float]]:
    """What one no-op host costs, the old way (plan, then apply: two starts of fleet) and
    push's way now (apply --hold-changes: one), interleaved, inside app1: medians of wall
    time and of the CPU seconds of fleet and the commands it waited for (not what systemd,
    nginx or the app spent answering it)."""
    times: dict[str, list[tuple[float, float]]] = {"plan+apply": [], "hold": []}
    for _ in range(max(1, runs)):
        for name, command in (("plan+apply", PLAN_THEN_APPLY), ("hold", HOLD)):
            start = time.monotonic()
            cpu = cluster.app1.run(CPU_OF + shlex.quote(command), check=True, timeout=300)
            times[name].append((time.monotonic() - start, float(cpu.stdout.split()[-1])))
    return {name: (statistics.median(v[0] for v in values),
                   statistics.median(v[1] for v in values))
            for name, values in times.items()}


def drain_rounds(cluster: Cluster, args: argparse.Namespace
                 ) -> dict[str, list[tuple[float, int, int, list[float]]]]:
    """New-commit pushes, draining (the default) and --no-drain, interleaved, under load."""
    rows: dict[str, list[tuple[float, int, int, list[float]]]] = {"drain": [], "no-drain": []}
    version = 2
    for _ in range(args.rounds):
        for mode in rows:
            version += 1
            cluster.git.commit("whoami", {"wsgi.py": cluster.source.replace(
                '"v1"', f'"v{version}"')})
            seconds, report, loads = under_load(
                cluster, args.threads, args.rate, "--parallel", str(args.parallel),
                *(["--no-drain"] if mode == "no-drain" else []))
            out = [h["rotation"]["back"][1] - h["rotation"]["out"][0]
                   for h in report["hosts"].values() if h.get("rotation")]
            rows[mode].append((seconds, sum(x.sent for x in loads),
                               sum(x.failed for x in loads), out))
            print(f"{mode}: {seconds:.1f} s, {rows[mode][-1][1]} sent, "
                  f"{rows[mode][-1][2]} failed", flush=True)
    return rows


def print_drain_rounds(rows: dict[str, list[tuple[float, int, int, list[float]]]]) -> None:
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
    print(f"ratio drain / no-drain (wall time): {medians['drain'] / medians['no-drain']:.2f}")


if __name__ == "__main__":
    main()

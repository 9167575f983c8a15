"""Density: many on-demand apps on one server, RSS asleep and wake-up latency.

Up to 100 small apps (copies of tests/apps/pulse, one git repo) on one server, all
`mode = "on-demand"` (idle = 5): the apply that adds the last app once all the others sleep,
split into the new app's steps, the other apps' (its no-op part) and the server-wide ones;
the total RSS (and PSS) of every uWSGI process once they all sleep, read from /proc; the
first-request latency of each sleeping app through nginx (p50, p99, max); that they all
sleep again after. The baseline in
the same run: first the same at --baseline apps (5): the apply that adds the 5th app and the
wake-ups of those 5. With --always, first the same apps all `mode = "always"`, each answered
once, for the memory they take awake.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.64.0/24 .venv/bin/python bench/density.py \
        [--apps 100] [--idle 5] [--baseline 5] [--always] [--bare] [--verbose [--rebuild]] \
        [--logs DIR]

--verbose runs the applies with `fleet -v` and splits the new apps' venv builds by command
(each app's uv cache starts empty: cold builds); --rebuild then removes the baseline apps'
venvs and applies again: the same builds with the apps' caches warm, in the same run.

The server sits on a private bridge (tests/harness/bridged.py): no host lock. It boots from
the provisioned tree (python3 and fleet's OS packages preinstalled, tests/harness/rootfs.py):
nothing here is about provisioning, and that saves bootstrap's apt-get runs; --bare boots a
bare server instead. Each apply's output lines are stamped as they arrive inside the server
(bench/provisioning.py) and kept in --logs with the raw latencies and memory rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import bridged, machine
from provisioning import STEP, split_steps, stamped
from tests.harness import BareServer

APP_NAME = re.compile(r"d\d{3}")
# Run by the server's python3: every uWSGI process (comm uwsgi*), its RSS and PSS in KiB and
# its user (the Emperor's is root, each app's vassal runs as the app's own user).
MEMORY = r"""
import json, os, pwd
rows = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        comm = open(f"/proc/{pid}/comm").read().strip()
        if not comm.startswith("uwsgi"):
            continue
        lines = open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:]
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        uid = os.stat(f"/proc/{pid}").st_uid
        rows.append([int(pid), comm, int(fields["Rss"].split()[0]),
                     int(fields["Pss"].split()[0]), pwd.getpwuid(uid).pw_name])
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


def apply(server: BareServer, toml_text: str, log: Path, first: bool = False,
          verbose: bool = False) -> tuple[float, list[tuple[str, str, float]]]:
    """Seconds of one `fleet apply --prune` of TOML_TEXT, measured inside the server (the
    first through bootstrap, which installs fleet), and its steps (status, label, seconds):
    each line fleet prints is stamped as it arrives (bench/provisioning.py), so a step's time
    is the gap since the line before. The stamped lines are kept in LOG. VERBOSE: `fleet -v`,
    which prints each command as it starts (see commands())."""
    server.write_file("/root/fleet.toml", toml_text)
    v = "-v " if verbose else ""
    command = (f"sh /root/bootstrap /root/fleet.pyz {v}apply /root/fleet.toml" if first
               else f"fleet {v}apply --prune /root/fleet.toml")
    rows = stamped(server, command)
    log.write_text("".join(f"{stamp:.3f} {text}\n" for stamp, text in rows))
    return rows[-1][0] - rows[0][0], split_steps(rows)


def step_app(label: str) -> tuple[str, str]:
    """(step name, app) of a step line's label, `NAME APP (notes)`; app is "" when the last
    word is not an app's (server-wide steps: `runtime directories`, `emperor`)."""
    name, _, app = label.split(" (", 1)[0].rpartition(" ")
    return (name, app) if APP_NAME.fullmatch(app) else (label.split(" (", 1)[0], "")


def by_step(steps: list[tuple[str, str, float]], apps: set[str]) -> dict[str, list[float]]:
    """Seconds per step name over the steps of APPS."""
    out: dict[str, list[float]] = {}
    for _, label, seconds in steps:
        name, app = step_app(label)
        if app in apps:
            out.setdefault(name, []).append(seconds)
    return out


def server_wide(steps: list[tuple[str, str, float]]) -> float:
    """Seconds of the steps of no app (packages, emperor, nginx, bootstrap...)."""
    return sum(seconds for _, label, seconds in steps if not step_app(label)[1])


def describe(steps: dict[str, list[float]]) -> str:
    """`name total s (n, median s)` per step name, longest total first."""
    return "; ".join(f"{name} {sum(v):.1f} s ({len(v)}x, median {statistics.median(v):.2f})"
                     for name, v in sorted(steps.items(), key=lambda kv: -sum(kv[1])))


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


def wait_asleep(server: BareServer, limit: float = 300) -> float:
    """Seconds until only the Emperor is left (every vassal exited after idling)."""
    begin = time.monotonic()
    while time.monotonic() - begin < limit:
        if len(memory(server)) <= 1:
            return time.monotonic() - begin
        time.sleep(1)
    raise SystemExit(f"vassals still running after {limit} s: {memory(server)}")


def per_app(rows: list[list]) -> tuple[int, float, float]:
    """Apps awake in ROWS (their vassals' users), and the median RSS and PSS in MiB of one awake
    app: its master and workers together."""
    apps: dict[str, list[int]] = {}
    for _, _, rss, pss, user in rows:
        if user != "root":
            total = apps.setdefault(user, [0, 0])
            total[0], total[1] = total[0] + rss, total[1] + pss
    if not apps:
        return 0, 0.0, 0.0
    return (len(apps), statistics.median(v[0] for v in apps.values()) / 1024,
            statistics.median(v[1] for v in apps.values()) / 1024)


def wake_all(server: BareServer, hosts: list[str], idle: int) -> tuple[list[list], float]:
    """Wait until every app sleeps, then the first request to each (one after another), then
    seconds until they all sleep again."""
    wait_asleep(server)
    answers = first_requests(server, hosts)
    time.sleep(idle)
    return answers, wait_asleep(server) + idle


def build_commands(log: Path, apps: set[str]) -> dict[str, list[float]]:
    """Seconds per command kind inside the `virtualenv` steps of APPS, from the stamped output
    of a `fleet -v apply` in LOG: -v prints each command as it starts, so a command's time is
    the gap to the next line fleet prints (the next command or the step's own line)."""
    rows = [(float(stamp), text) for stamp, _, text in
            (line.rstrip("\n").partition(" ") for line in log.read_text().splitlines())]
    out: dict[str, list[float]] = {}
    pending: list[tuple[float, str]] = []  # commands since the last step line
    for stamp, text in rows:
        if text.startswith("$ "):
            pending.append((stamp, text[2:]))
            continue
        match = STEP.match(text)
        if not match:
            continue
        name, app = step_app(match[2])
        if name == "virtualenv" and app in apps and pending:  # none: the venv was there
            ends = [s for s, _ in pending[1:]] + [stamp]
            for (start, command), end in zip(pending, ends, strict=True):
                out.setdefault(command_kind(command), []).append(end - start)
        pending = []
    return out


def command_kind(command: str) -> str:
    """A short name for one command of a venv build."""
    for needle, kind in (("uv pip install", "uv pip install (contained)"),
                         ("/bin/cp -R", "copy of the code (contained)"),
                         ("/bin/chmod", "chmod of uv's cache (contained)"),
                         ("fleet-own-tree root:", "root takes the venv back"),
                         ("fleet-own-tree", "hand the venv to the app"),
                         ("virtualenv ", "root's venv (pip seeded)")):
        if needle in command:
            return kind
    return "other"


def adding(label: str, seconds: float, steps: list[tuple[str, str, float]], new: str,
           others: set[str]) -> str:
    """One line on an apply that adds the app NEW to OTHERS: what its time consists of."""
    return (f"{label}: {seconds:.2f} s: the new app's steps "
            f"{sum(sum(v) for v in by_step(steps, {new}).values()):.1f} s "
            f"({describe(by_step(steps, {new}))}); the {len(others)} others' steps "
            f"{sum(sum(v) for v in by_step(steps, others).values()):.1f} s "
            f"({describe(by_step(steps, others))}); server-wide steps {server_wide(steps):.1f} s")


def wakes(label: str, answers: list[list]) -> str:
    latencies = [r[2] * 1000 for r in answers]
    return (f"{label}: p50 {percentile(latencies, 0.5):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms, "
            f"min {min(latencies):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--idle", type=int, default=5)
    parser.add_argument("--baseline", type=int, default=5,
                        help="first the same measures at this many apps, in the same run "
                             "(0: none)")
    parser.add_argument("--always", action="store_true",
                        help="first run them all always, for the memory they take awake")
    parser.add_argument("--bare", action="store_true",
                        help="boot a bare server (bootstrap installs python3 and fleet's "
                             "packages) instead of the provisioned tree")
    parser.add_argument("--verbose", action="store_true",
                        help="run the applies with fleet -v and split the new apps' venv "
                             "builds by command")
    parser.add_argument("--rebuild", action="store_true",
                        help="at the end, remove the --baseline apps' venvs and apply again: "
                             "the same builds with each app's build cache warm (with --verbose)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/density-logs"),
                        help="directory for each apply's stamped output and the raw results")
    args = parser.parse_args()
    if args.rebuild and not (args.verbose and args.baseline):
        parser.error("--rebuild needs --verbose and --baseline")
    if not 1 < args.baseline < args.apps and args.baseline != 0:
        parser.error("--baseline must be 0 or between 2 and --apps - 1")
    args.logs.mkdir(parents=True, exist_ok=True)
    names = [f"d{i:03d}" for i in range(1, args.apps + 1)]
    hosts = [f"{name}.test" for name in names]
    base = args.baseline
    print(f"machine: {machine()}", flush=True)
    always: list[list] = []
    warm: list[list] = []
    base_answers: list[list] = []
    with tempfile.TemporaryDirectory() as tmp, \
            bridged(Path(tmp), "density", provisioned=not args.bare) as (server, url):
        first = True
        if args.always:
            seconds, _ = apply(server, toml(url, args.apps, "always", args.idle),
                               args.logs / "always.log", first=True)
            print(f"apply of {args.apps} always apps: {seconds:.0f} s", file=sys.stderr,
                  flush=True)
            warm = first_requests(server, hosts)  # every app answered once
            always = memory(server)
            first = False
        if base:
            apply(server, toml(url, base - 1, "on-demand", args.idle), args.logs / "base.log",
                  first=first, verbose=args.verbose)
            first = False
            wait_asleep(server)  # the others asleep, as on a server of sleeping apps
            base_add, base_steps = apply(server, toml(url, base, "on-demand", args.idle),
                                         args.logs / "base-add.log", verbose=args.verbose)
            base_answers, _ = wake_all(server, hosts[:base], args.idle)
            print(f"baseline at {base} apps done", file=sys.stderr, flush=True)
        seconds, grow = apply(server, toml(url, args.apps - 1, "on-demand", args.idle),
                              args.logs / "grow.log", first=first, verbose=args.verbose)
        print(f"apply to {args.apps - 1} on-demand apps: {seconds:.0f} s", file=sys.stderr,
              flush=True)
        wait_asleep(server)
        add_last, steps = apply(server, toml(url, args.apps, "on-demand", args.idle),
                                args.logs / "add-last.log", verbose=args.verbose)
        time.sleep(args.idle)
        slept = wait_asleep(server)
        asleep = memory(server)
        first_answers = first_requests(server, hosts)
        awake = memory(server)
        time.sleep(args.idle)
        again = wait_asleep(server)
        if args.rebuild:
            server.run(" ".join(f"/srv/fleet/{name}/venvs/*" for name in names[:base]).join(
                ("rm -rf -- ", "")), check=True)
            apply(server, toml(url, args.apps, "on-demand", args.idle), args.logs / "rebuild.log",
                  verbose=True)
    (args.logs / "results.json").write_text(json.dumps(
        {"base_answers": base_answers, "answers": first_answers, "asleep": asleep,
         "awake": awake, "always": always}))
    bad = [r for r in warm + base_answers + first_answers if r[1] != 200]
    if bad:
        raise SystemExit(f"non-200 answers: {bad}")
    print(f"{args.apps} apps (tests/apps/pulse, 2 processes each), on-demand, idle = {args.idle}"
          f", {'bare' if args.bare else 'provisioned'} server")
    print("| state | uWSGI processes | total RSS MiB | total PSS MiB |\n|---|---|---|---|")
    rows = [("all always, each answered once", always)] if args.always else []
    rows += [("all on-demand, asleep", asleep),
             ("on-demand, right after the last wake-up", awake)]
    for label, found in rows:
        print(f"| {label} | {len(found)} | {sum(r[2] for r in found) / 1024:.0f} | "
              f"{sum(r[3] for r in found) / 1024:.0f} |")
    count, rss, pss = per_app(awake)
    print(f"one awake app (median over the {count} awake right after the last wake-up): "
          f"RSS {rss:.0f} MiB, PSS {pss:.0f} MiB")
    if args.always:
        print(f"asleep / always RSS: {sum(r[2] for r in asleep) / sum(r[2] for r in always):.3f}")
    new_in_grow = set(names[base:-1]) if base else set(names[:-1])
    print(f"apply from {base} to {args.apps - 1} on-demand apps: {seconds:.1f} s; server-wide "
          f"steps {server_wide(grow):.1f} s; per step over the {len(new_in_grow)} new apps: "
          f"{describe(by_step(grow, new_in_grow))}; over the {base} already there: "
          f"{describe(by_step(grow, set(names[:base])))}")
    if base:
        print(adding(f"apply that adds app {base} to {base - 1} on-demand apps", base_add,
                     base_steps, names[base - 1], set(names[:base - 1])))
    print(adding(f"apply that adds app {args.apps} to {args.apps - 1} on-demand apps", add_last,
                 steps, names[-1], set(names[:-1])))
    if base:
        print(wakes(f"first request to a sleeping app, over the {base} at {base} apps",
                    base_answers))
        print(wakes(f"the same {base} apps at {args.apps} apps", first_answers[:base]))
    print(wakes(f"first request to a sleeping app, over the {args.apps}", first_answers))
    print(f"all asleep {slept + args.idle:.0f} s after the apply; asleep again "
          f"{again + args.idle:.0f} s after the wake-ups")
    if args.verbose:
        new_apps = set(names[base:-1]) if base else set(names[:-1])
        print(f"the {len(new_apps)} new apps' venv builds (cold caches) by command: "
              f"{describe(build_commands(args.logs / 'grow.log', new_apps))}")
    if args.rebuild:  # the baseline apps were built by two applies
        cold = build_commands(args.logs / "base.log", set(names[:base]))
        for kind, seconds in build_commands(args.logs / "base-add.log", set(names[:base])).items():
            cold.setdefault(kind, []).extend(seconds)
        print(f"the same builds of the {base} baseline apps with their caches warm: "
              f"{describe(build_commands(args.logs / 'rebuild.log', set(names[:base])))}; "
              f"those {base} apps' builds cold: "
              f"{describe(cold)}")
    print(f"stamped apply output and raw results: {args.logs}")
    print(f"command: sudo FLEET_TEST_BRIDGE_SUBNET={os.environ.get('FLEET_TEST_BRIDGE_SUBNET')} "
          ".venv/bin/python bench/density.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

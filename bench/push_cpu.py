"""Where a no-op push's CPU goes, per host: what each server spends (every process of its pid
namespace, with the children they reaped: sshd's sessions, bootstrap, fleet) and what the
operator's side spends (`fleet push` itself and its ssh clients), for a push to 1 host and to
3 hosts of a small cluster (2 app servers + 1 front, tests/harness/cluster.py), interleaved.

    sudo FLEET_TEST_BRIDGE_SUBNET=10.213.84.0/24 .venv/bin/python bench/push_cpu.py [--runs 3]

Why: bench/push.py's growth from 3 to 22 servers is bounded by the host's 2 cores, which the
servers and the operator share; this prints the CPU seconds one more host costs on each side,
so the floor of a push to N hosts on C cores is (N x per-host CPU) / C. Also prints the
operator-side cost of one plain ssh connection (no multiplexing) and of `fleet --version`.
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import APPS, machine
from tests.e2e.helpers import build_pyz
from tests.harness import default_suite, install_signal_handlers
from tests.harness.bridged import BridgedServer
from tests.harness.cluster import Cluster, whoami_cluster

TICK = os.sysconf("SC_CLK_TCK")


def pid_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def server_cpu(server: BridgedServer) -> dict[tuple[int, str], float]:
    """CPU seconds (own + reaped children) of every live process in the server, by (pid, name)."""
    namespace = pid_ns(server.init_pid)
    found: dict[tuple[int, str], float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or pid_ns(entry) != namespace:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[(int(entry), name)] = sum(int(f) for f in fields[11:15]) / TICK
    return found


def spent(before: dict[tuple[int, str], float],
          after: dict[tuple[int, str], float]) -> collections.Counter[str]:
    """What each process name spent in between (a process that exited counts in its reaper)."""
    by_name: collections.Counter[str] = collections.Counter()
    for key, seconds in after.items():
        grew = seconds - before.get(key, 0.0)
        if grew > 0:
            by_name[key[1]] += grew
    return by_name


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def operator_cpu(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = children_cpu()
    subprocess.run(argv, capture_output=True, env=env, check=False)
    return children_cpu() - start


def measured_push(cluster: Cluster, limit: list[str]) -> tuple[float, float, dict[str, float],
                                                               collections.Counter[str]]:
    """One no-op push: wall s, operator CPU s, CPU s per server, and by process name."""
    before = {name: server_cpu(server) for name, server in cluster.servers.items()}
    start_cpu, start = children_cpu(), time.monotonic()
    code, report, stderr = cluster.push(*limit)
    wall, operator = time.monotonic() - start, children_cpu() - start_cpu
    if code != 0 or any(h["changed"] for h in report["hosts"].values()):
        raise SystemExit(f"not a no-op push (exit {code}): {stderr[-2000:]}")
    per_server, names = {}, collections.Counter()
    for name, server in cluster.servers.items():
        used = spent(before[name], server_cpu(server))
        per_server[name] = sum(used.values())
        names.update(used)
    return wall, operator, per_server, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="pushes of each size")
    args = parser.parse_args()
    install_signal_handlers()
    print(f"machine: {machine()}", flush=True)
    sizes = {"1 host": ["--limit", "app1"], "3 hosts": []}
    rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {s: [] for s in sizes}
    names: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        pyz = build_pyz(Path(tmp) / "fleet.pyz")
        work = Path(tmp) / "work"
        work.mkdir()
        with whoami_cluster(default_suite(), pyz, APPS, work, provisioned=True) as cluster:
            code, _, stderr = cluster.push()
            if code != 0:
                raise SystemExit(f"first push failed: {stderr[-2000:]}")
            for _ in range(args.runs):
                for size, limit in sizes.items():
                    wall, operator, per_server, by_name = measured_push(cluster, limit)
                    rows[size].append((wall, operator, per_server))
                    names.update(by_name)
                    print(f"{size}: wall {wall:.2f} s, operator {operator:.3f} s, servers "
                          + ", ".join(f"{n} {s:.2f}" for n, s in per_server.items()),
                          flush=True)
            env = {**os.environ, "SHIV_ROOT": str(cluster.shiv_root)}
            ssh = [operator_cpu(["ssh", "-F", str(cluster.ssh_config), "-o", "BatchMode=yes",
                                 "-l", "root", cluster.app1.address, "true"])
                   for _ in range(args.runs)]
            version = [operator_cpu([sys.executable, str(cluster.pyz), "--version"], env)
                       for _ in range(args.runs)]
    print(f"\nNo-op push, CPU seconds (median of {args.runs})")
    print("| push | wall s | operator CPU s | app1 CPU s | all servers CPU s |")
    print("|---|---|---|---|---|")
    medians = {}
    for size, runs in rows.items():
        wall = statistics.median(r[0] for r in runs)
        operator = statistics.median(r[1] for r in runs)
        app1 = statistics.median(r[2]["app1"] for r in runs)
        servers = statistics.median(sum(r[2].values()) for r in runs)
        medians[size] = (operator, servers)
        print(f"| {size} | {wall:.2f} | {operator:.3f} | {app1:.3f} | {servers:.3f} |")
    per_host_operator = (medians["3 hosts"][0] - medians["1 host"][0]) / 2
    per_host_server = medians["3 hosts"][1] / 3
    print(f"per host: operator {per_host_operator:.3f} s (3 hosts less 1 host, halved), "
          f"server {per_host_server:.3f} s; operator's fixed part "
          f"{medians['1 host'][0] - per_host_operator:.3f} s")
    print("servers' CPU by process (a process that exited counts in its reaper): "
          + ", ".join(f"{n} {s:.2f}" for n, s in names.most_common(6)))
    print(f"operator: one plain ssh connection {statistics.median(ssh):.3f} s, "
          f"`fleet --version` {statistics.median(version):.3f} s")
    subnet = os.environ.get("FLEET_TEST_BRIDGE_SUBNET", "10.213.84.0/24")
    print(f"command: sudo FLEET_TEST_BRIDGE_SUBNET={subnet} .venv/bin/python bench/push_cpu.py "
          + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()

"""What an app uses against its limits (memory, cpu, tasks) and the limit events since its
live vassal started: read from /proc (every process of the app runs as its user), uWSGI's
stats and, on cgroup v2, the app's slice."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fleet.config.settings import AppConfig
from fleet.host.machine import Host, ProcessInfo
from fleet.server.resource_limits import mechanisms, slice_name

CGROUP_ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Snapshot:
    """Every process at one moment (monotonic seconds), to compute cpu use between two."""

    when: float
    processes: list[ProcessInfo]


def oom_kills(host: Host, app: str) -> int | None:
    """The kernel's OOM kills in the app's slice (cgroup v2); None without one."""
    text = host.read(f"{CGROUP_ROOT}/fleet.slice/{slice_name(app)}/memory.events")
    for line in (text or b"").decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return None


@dataclass
class LimitsStatus:
    """Per limit: the limit (None: none), what is used now, and what enforces it here."""

    rows: dict[str, dict[str, object]] = field(default_factory=dict)
    events: dict[str, int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {**self.rows, "events": self.events}


def limits_status(host: Host, app: AppConfig, uid: int | None, before: Snapshot,
                  after: Snapshot, controllers: frozenset[str], timeouts: int,
                  recycles: int) -> LimitsStatus:
    mine = [p for p in after.processes if uid is not None and p.uid == uid]
    ticks = {p.pid: p.cpu_ticks for p in before.processes}
    elapsed = after.when - before.when
    used_ticks = sum(p.cpu_ticks - ticks.get(p.pid, p.cpu_ticks) for p in mine)
    # None when not measured (no app has a cpu limit: status does not wait for a sample).
    cpu = round(100 * used_ticks / os.sysconf("SC_CLK_TCK") / elapsed, 1) if elapsed > 0 \
        else None
    how = mechanisms(app, controllers)

    def mechanism(name: str) -> str:
        return how[name].text if name in how else "no limit"

    return LimitsStatus(
        rows={"memory": {"limit": app.memory, "used": sum(p.rss for p in mine),
                         "mechanism": mechanism("memory")},
              "cpu": {"limit": app.cpu, "used": cpu, "mechanism": mechanism("cpu")},
              "tasks": {"limit": app.tasks, "used": sum(p.threads for p in mine),
                        "mechanism": mechanism("tasks")},
              "timeout": {"limit": app.timeout, "mechanism": mechanism("timeout")}},
        events={"timeouts": timeouts, "recycles": recycles,
                "oom_kills": oom_kills(host, app.name) if "memory" in controllers else None})

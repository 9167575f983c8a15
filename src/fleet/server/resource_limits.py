"""Per-app limits, and what enforces each on this server.

On a cgroup v2 server (Debian 12 and 13 installs) each app with `memory`, `cpu` or `tasks`
gets a systemd slice with MemoryMax=, CPUQuota= and TasksMax=, and everything the app runs
goes into it: its workers, jobs, `fleet run`, builds and init (Slice=), and its web vassal (the
Emperor starts it through a wrapper that makes it a scope of that slice). Without the cgroup
v2 controllers (the test servers: systemd-nspawn on a cgroup v1 host) those settings are
written but not enforced, and fleet says so: what is enforced everywhere is uWSGI's own
(harakiri for `timeout`, a per-worker RSS recycle for `memory`) and the kernel's
RLIMIT_NPROC for `tasks` (every process of the app runs as its own user).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.config.settings import AppConfig
from fleet.host import layout
from fleet.host.actions import Action, Run
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.machine import Host
from fleet.host.render import render

CONTROLLERS = "/sys/fs/cgroup/cgroup.controllers"  # only on the unified (v2) hierarchy


def cgroup_controllers(host: Host) -> frozenset[str]:
    """The cgroup v2 controllers systemd can use here; empty on a v1 or hybrid hierarchy."""
    return frozenset((host.read(CONTROLLERS) or b"").decode(errors="replace").split())


def escape(name: str) -> str:
    """systemd-escape for a unit name's part: a dash would make a slice a child slice."""
    return "".join(c if c.isalnum() or c in "_." else f"\\x{ord(c):02x}" for c in name)


def slice_name(app: str) -> str:
    """fleet-NAME.slice, a child of fleet.slice (NAME's own dashes escaped)."""
    return f"fleet-{escape(app)}.slice"


def slice_file(app: str) -> str:
    return f"{layout.UNIT_DIR}/{slice_name(app)}"


def unit_limits(app: AppConfig) -> tuple[str, ...]:
    """The unit settings that put a transient run of the app (a build, init) under its
    limits, as its workers' and jobs' units have them."""
    limits = (f"Slice={slice_name(app.name)}",) if app.limited else ()
    return limits + ((f"LimitNPROC={app.tasks}",) if app.tasks else ())


def plan_slice(host: Host, app: AppConfig) -> list[Action]:
    """The app's slice unit (or none when it has no memory, cpu or tasks limit)."""
    path = slice_file(app.name)
    if not app.limited:
        actions = plan_absent(host, path, "no memory, cpu or tasks limit")
    else:
        actions = plan_file(host, path, render("systemd/app.slice", app=app), 0o644)
    if actions:
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    return actions


def plan_vassal_wrapper(host: Host) -> list[Action] | None:
    """The Emperor's vassal wrapper, on cgroup v2 servers only (None elsewhere: vassals then
    start as they always did, and a slice would not be enforced anyway)."""
    if not cgroup_controllers(host):
        return None
    return (plan_dir(host, layout.LIB_DIR, 0o755)
            + plan_file(host, layout.VASSAL_WRAPPER,
                        render("vassal-wrapper", unit_dir=layout.UNIT_DIR,
                               uwsgi_bin=layout.UWSGI_BIN), 0o755))


def stale_slices(host: Host, keep: set[str]) -> list[str]:
    """Slice files of apps no longer configured."""
    names = {slice_name(name) for name in keep}
    return [f"{layout.UNIT_DIR}/{f}" for f in host.listdir(layout.UNIT_DIR)
            if f.startswith("fleet-") and f.endswith(".slice") and f not in names]


@dataclass(frozen=True)
class Mechanism:
    """What enforces one limit here, and whether it is enforced at all."""

    text: str
    enforced: bool = True


def mechanisms(app: AppConfig, controllers: frozenset[str]) -> dict[str, Mechanism]:
    """Each limit the app sets (and timeout, which every app has), and its mechanism."""
    found = {"timeout": Mechanism(f"timeout {app.timeout} s: uWSGI harakiri kills and "
                                  "replaces the worker")}
    recycle = f"uWSGI recycles a web worker above {app.recycle_mb} MiB RSS"
    if app.memory is not None:
        size = f"memory {app.memory // 2**20}M"
        found["memory"] = (Mechanism(f"{size}: cgroup v2 MemoryMax on {slice_name(app.name)}"
                                     f" (and {recycle})")
                           if "memory" in controllers else
                           Mechanism(f"{size}: only per web worker ({recycle}); not enforced "
                                     "for the app as a whole, its workers and jobs (no cgroup "
                                     "v2 memory controller on this server)", False))
    if app.cpu is not None:
        found["cpu"] = (Mechanism(f"cpu {app.cpu}%: cgroup v2 CPUQuota on "
                                  f"{slice_name(app.name)}")
                        if "cpu" in controllers else
                        Mechanism(f"cpu {app.cpu}%: not enforced (no cgroup v2 cpu controller "
                                  "on this server)", False))
    if app.tasks is not None:
        found["tasks"] = Mechanism(
            f"tasks {app.tasks}: RLIMIT_NPROC of user {app.owner}"
            + (f" and cgroup v2 TasksMax on {slice_name(app.name)}" if "pids" in controllers
               else ""))
    return found

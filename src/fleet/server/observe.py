"""One sample of what every app is doing, for `fleet top` (and the gauges of `fleet metrics`).

Cheap by design, since `fleet top` takes one a second: the Emperor's stats and /proc are
read once for all apps, each app's live vassal answers on its own stats socket, its access
log is read back over the last minute only (fleet.server.traffic), and every app's workers
and jobs are one `systemctl show`. No request is sent to any app (`fleet status` does that).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from fleet.config.settings import AppConfig, Config
from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server.background import background_status, background_units
from fleet.server.status import (
    VassalStatus,
    WorkerInfo,
    live_vassal,
    read_emperor,
    vassal_owner,
    vassal_status,
)
from fleet.server.traffic import WINDOW, Traffic, access_log, recent
from fleet.server.units import UnitState, unit_states


@dataclass
class AppSample:
    name: str
    state: str  # as `fleet status` says it (running, sleeping, failing, ..., not deployed)
    release: str | None
    traffic: Traffic
    workers: list[WorkerInfo] = field(default_factory=list)
    restarts: int = 0  # the live vassal's respawns plus its workers'

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.status == "busy")

    @property
    def memory(self) -> int:
        return sum(w.rss for w in self.workers)

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "release": self.release, **self.traffic.to_json(),
                "workers": {"busy": self.busy, "idle": len(self.workers) - self.busy},
                "memory_bytes": self.memory, "restarts": self.restarts}


@dataclass
class WorkerSample:
    """A background worker (issue 16) of an app: systemd units, not uWSGI workers."""

    app: str
    name: str
    state: str
    processes: int
    running: int
    restarts: int
    release: str | None
    memory: int

    def to_json(self) -> dict[str, object]:
        return {"app": self.app, "name": self.name, "state": self.state,
                "processes": self.processes, "running": self.running,
                "restarts": self.restarts, "release": self.release,
                "memory_bytes": self.memory}


@dataclass
class Sample:
    time: float
    window: float
    apps: list[AppSample]
    workers: list[WorkerSample]

    def to_json(self) -> dict[str, object]:
        return {"time": round(self.time, 3), "window_seconds": self.window,
                "apps": {a.name: a.to_json() for a in self.apps},
                "workers": [w.to_json() for w in self.workers]}


def live_state(host: Host, app: AppConfig, emperor: dict | None,
               rss: dict[int, int]) -> tuple[str, str | None, VassalStatus | None]:
    """(state, live release, live vassal) of an app, the way `fleet status` decides them."""
    link = host.state(AppPaths(app.name).current)
    release = link.target.rsplit("/", 1)[-1] if link and link.kind == "link" else None
    files = [f for f in host.listdir(layout.VASSALS_DIR)
             if (vassal_owner(f) or ("", None))[0] == app.name]
    vassals = [vassal_status(host, f, emperor, rss) for f in files]
    live = live_vassal(vassals, release)
    return (live.state if live else "not deployed"), release, live


def app_sample(host: Host, app: AppConfig, emperor: dict | None, rss: dict[int, int],
               now: float, window: bool = True) -> AppSample:
    state, release, live = live_state(host, app, emperor, rss)
    traffic = Traffic.of([])
    # Not a regular file (a symlink is never followed): no traffic to show.
    with contextlib.suppress(OSError):
        if window:
            traffic = Traffic.of(recent(host, access_log(app.name), now))
    if live is None:
        return AppSample(app.name, state, release, traffic)
    return AppSample(app.name, state, release, traffic, live.workers,
                     live.respawns + sum(w.respawns for w in live.workers))


def worker_samples(host: Host, app: AppConfig, rss: dict[int, int],
                   units: dict[str, UnitState] | None = None) -> list[WorkerSample]:
    """`units`: what systemd says of the app's background units, when already asked."""
    if not app.workers:
        return []
    return [WorkerSample(app.name, w.name, w.state, w.processes, w.running, w.restarts,
                         w.release, sum(rss.get(pid, 0) for pid in w.pids))
            for w in background_status(host, app, units).workers]


def take_sample(host: Host, config: Config, now: float | None = None,
                window: bool = True) -> Sample:
    """window=False: no access log is read (`fleet metrics` counts them its own way)."""
    now = time.time() if now is None else now
    emperor = read_emperor(host)
    rss = {p.pid: p.rss for p in host.processes()}
    apps = [app_sample(host, app, emperor, rss, now, window) for app in config.apps]
    with_workers = [app for app in config.apps if app.workers]
    units = unit_states(host, [u for app in with_workers for u in background_units(app)])
    workers = [w for app in with_workers for w in worker_samples(host, app, rss, units)]
    return Sample(now, WINDOW, apps, workers)

"""What is running, read from uWSGI's own stats sockets, systemd and nginx.

The vassal files in /etc/uwsgi/vassals and the Emperor's stats say which vassals of an app
exist and whether the Emperor throttles them; each vassal's stats socket (named in its ini)
says what its workers do. Nothing here trusts fleet's own config to describe the running state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fleet.config.settings import AppConfig, Config, as_app
from fleet.errors import AnswerError
from fleet.host import layout
from fleet.host.client import http_get
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server.background import BackgroundStatus, background_status, background_units
from fleet.server.backup_health import backups_of
from fleet.server.certs import certificate_status, served_files
from fleet.server.emperor import ini_value, is_sleeping, read_emperor, read_stats
from fleet.server.health import judge
from fleet.server.logs import app_log_tail, last_error
from fleet.server.resource_limits import cgroup_controllers
from fleet.server.rotation import current, load_drained, marked_down
from fleet.server.units import UnitState, unit_states
from fleet.server.usage import LimitsStatus, Snapshot, limits_status
from fleet.server.users import Account, accounts


@dataclass
class WorkerInfo:
    pid: int
    status: str
    requests: int
    rss: int
    respawns: int
    harakiri: int = 0  # requests killed at the app's timeout


def parse_workers(stats: dict[str, Any],
                  rss_of: Callable[[int], int] = lambda _pid: 0) -> list[WorkerInfo]:
    """Workers from a vassal's stats. uWSGI counts a worker's first start in respawn_count,
    so respawns are that count minus one. Its socket is in a directory the app can write:
    a document of another shape is an AnswerError, not a traceback."""
    try:
        return [WorkerInfo(int(w.get("pid", 0)), str(w.get("status", "?")),
                           int(w.get("requests", 0)),
                           int(w.get("rss", 0)) or rss_of(int(w.get("pid", 0))),
                           max(int(w.get("respawn_count", 0)) - 1, 0),
                           int(w.get("harakiri_count", 0)))
                for w in stats.get("workers", [])
                if int(w.get("pid", 0)) > 0]  # cheaper's stopped workers keep a pid-0 slot
    except (TypeError, ValueError, AttributeError, OverflowError):
        raise AnswerError("stats answer unreadable (not uWSGI's workers)") from None


def vassal_owner(filename: str) -> tuple[str, str | None] | None:
    """(app, release) of a vassal file: NAME@RELEASE.ini, or NAME.ini (release unknown)."""
    if not filename.endswith(".ini") or filename.startswith("."):
        return None
    app, sep, release = filename[: -len(".ini")].partition("@")
    return app, (release if sep else None)




@dataclass
class VassalStatus:
    id: str
    release: str | None
    state: str  # running, sleeping, throttled, failing, starting, stopped, unreadable
    pid: int | None = None
    stats_problem: str | None = None  # why its stats answer was refused (state unreadable)
    respawns: int = 0
    attempts: int = 0  # failed starts counted by the Emperor's throttling
    workers: list[WorkerInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        data = {"id": self.id, "release": self.release, "state": self.state, "pid": self.pid,
                "respawns": self.respawns, "failed_starts": self.attempts,
                "workers": [w.pid for w in self.workers]}
        if self.stats_problem:
            data["stats_problem"] = self.stats_problem
        return data




def vassal_status(host: Host, filename: str, emperor: dict[str, Any] | None,
                  rss: dict[int, int] | None = None) -> VassalStatus:
    """One vassal's state and workers; `rss`: every process's RSS by PID when the caller
    has read /proc already (`fleet top` reads it once for every app)."""
    owner = vassal_owner(filename)
    result = VassalStatus(filename, owner[1] if owner else None, "stopped")
    entry = blocked = None
    if emperor is not None:
        entry = next((v for v in emperor.get("vassals", []) if v.get("id") == filename), None)
        blocked = next((b for b in emperor.get("blacklist", []) if b.get("id") == filename),
                       None)
    if entry is not None:
        result.pid = int(entry.get("pid") or 0) or None
        result.respawns = int(entry.get("respawns") or 0)
    if blocked is not None:
        result.attempts = int(blocked.get("attempt") or 0) + 1
    stats_path = ini_value((host.read(f"{layout.VASSALS_DIR}/{filename}") or b"").decode(
        errors="replace"), "stats")
    try:
        if stats_path is None:
            raise OSError("no stats socket in the vassal file")
        stats = read_stats(host, stats_path)
        if rss is None:  # uWSGI reports rss only with memory-report
            rss = {p.pid: p.rss for p in host.processes()}
        result.workers = parse_workers(stats, lambda pid: rss.get(pid, 0))
        result.state = "running"
    except AnswerError as exc:  # an answer came, but not one fleet reads: say so
        result.state = "unreadable"
        result.stats_problem = str(exc)
    except (OSError, ValueError):
        if blocked is not None:
            result.state = "throttled"
        elif is_sleeping(host, filename, entry):
            result.state = "sleeping"
        elif entry is not None:
            result.state = "failing" if result.respawns or entry.get("cursed") else "starting"
    return result


@dataclass
class AppStatus:
    name: str
    commit: str | None
    domains: list[str]
    state: str  # running, sleeping, throttled, failing, starting, stopped, not deployed
    release: str | None = None
    workers: list[WorkerInfo] = field(default_factory=list)
    vassals: list[VassalStatus] = field(default_factory=list)
    health: str = "unknown"
    problem: str | None = None
    certificate: dict[str, Any] | None = None  # expiry of the served one (fleet.server.certs)
    background: BackgroundStatus = field(default_factory=BackgroundStatus)  # workers and jobs
    limits: LimitsStatus = field(default_factory=LimitsStatus)  # use against the limits
    backup: dict[str, Any] | None = None  # last backup (fleet.server.backup_health), if used

    def worker_totals(self) -> dict[str, Any]:
        """The live vassal's workers added up, as the status table and --json show them."""
        busy = sum(1 for w in self.workers if w.status == "busy")
        return {"total": len(self.workers), "busy": busy, "idle": len(self.workers) - busy,
                "requests": sum(w.requests for w in self.workers),
                "rss": sum(w.rss for w in self.workers),
                "respawns": sum(w.respawns for w in self.workers),
                "pids": [w.pid for w in self.workers]}

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.commit, "release": self.release, "domains": self.domains,
            "state": self.state, "health": self.health, "problem": self.problem,
            "workers": self.worker_totals(),
            "vassals": [v.to_json() for v in self.vassals],
            "certificate": self.certificate,
            "background": self.background.to_json(),
            "limits": self.limits.to_json(),
            "backup": self.backup,
        }


def live_vassal(vassals: list[VassalStatus], release: str | None) -> VassalStatus | None:
    """The vassal of the live release; during a deploy a second one may run beside it."""
    for vassal in vassals:
        if release is not None and vassal.release == release:
            return vassal
    return vassals[0] if len(vassals) == 1 else None


def why_down(host: Host, name: str, vassal: VassalStatus) -> str:
    what = {"throttled": f"throttled by the Emperor after {vassal.attempts} failed starts",
            "failing": f"exits right after starting ({vassal.respawns} respawns)",
            "starting": "starting, not answering on its stats socket yet",
            "stopped": "not running (the Emperor does not list it)",
            "unreadable": f"its stats socket: {vassal.stats_problem}"}.get(vassal.state,
                                                                        vassal.state)
    # A crash loop prints uWSGI's whole banner at every start: look far enough back to reach
    # the error of an earlier start when the latest one has not printed its own yet.
    error = last_error(app_log_tail(host, name, 200))
    return f"{what}: {error}" if error else what


def never_served(host: Host, name: str) -> str:
    """Why an app has no vassal: its last release failed its gate, or it was never applied."""
    try:
        data = json.loads(host.read(AppPaths(name).state_file) or b"{}")
        failed = [r for r in data.get("releases", []) if r.get("failed")]
    except (ValueError, AttributeError):
        failed = []
    if failed:
        last = max(failed, key=lambda r: r.get("built") or 0)
        return f"no release serves: release {last.get('id')} failed ({last['failed']})"
    return f"no vassal file in {layout.VASSALS_DIR} (run fleet apply)"


def app_status(host: Host, config: Config, name: str,
               emperor: dict[str, Any] | None = None, rss: dict[int, int] | None = None,
               units: dict[str, UnitState] | None = None,
               vassal_files: list[str] | None = None) -> AppStatus:
    """One app's row. What server_status reads once for every app it may pass in: every
    process's RSS (`rss`), what systemd says of the app's workers' and jobs' units (`units`)
    and the names in the vassal directory (`vassal_files`)."""
    app = config.app(name)
    assert app is not None
    link = host.state(AppPaths(name).current)
    release = link.target.rsplit("/", 1)[-1] if link and link.kind == "link" else None
    result = AppStatus(name, release, list(app.domains), "not deployed", release)
    result.certificate = certificate_status(host, app)
    if app.workers or app.jobs:
        result.background = background_status(host, app, units)
    if vassal_files is None:
        vassal_files = host.listdir(layout.VASSALS_DIR)
    files = [f for f in vassal_files if (vassal_owner(f) or ("", None))[0] == name]
    result.vassals = [vassal_status(host, f, emperor, rss) for f in files]
    live = live_vassal(result.vassals, release)
    if live is None:
        result.problem = never_served(host, name)
    else:
        result.state = live.state
        result.workers = live.workers
        if live.state == "sleeping":
            result.health = "sleeping"  # a probe would wake it: status leaves it asleep
            return result
        if live.state != "running":
            result.problem = why_down(host, name, live)
    try:
        why = judge(app, http_get(app.domains[0], app.url(app.health.path), timeout=5,
                                  https=served_files(host, app) is not None))
        result.health = "failed" if why else "passed"
        if why:
            result.problem = result.problem or why
    except OSError as exc:
        result.health = "failed"
        result.problem = result.problem or f"no response through nginx ({exc})"
    return result




@dataclass
class EmperorStatus:
    """The Emperor's unit and what its stats socket lists (problem: why it did not answer)."""

    active: bool
    vassals: list[dict[str, Any]] = field(default_factory=list)
    blacklist: list[dict[str, Any]] = field(default_factory=list)  # throttled vassals
    problem: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"active": self.active}
        if self.problem is not None:
            data["problem"] = self.problem
        data["vassals"], data["blacklist"] = self.vassals, self.blacklist
        return data


def emperor_status(active: bool, stats: dict[str, Any] | None) -> EmperorStatus:
    if stats is None:
        return EmperorStatus(active, problem="no answer on the Emperor's stats socket "
                                             + layout.EMPEROR_STATS)
    return EmperorStatus(
        active,
        vassals=[{"id": v.get("id"), "pid": v.get("pid"), "ready": v.get("ready"),
                  "respawns": v.get("respawns"), "cursed": v.get("cursed")}
                 for v in stats.get("vassals", [])],
        blacklist=[{"id": b.get("id"), "failed_starts": int(b.get("attempt") or 0) + 1,
                    "throttle_ms": b.get("throttle_level")}
                   for b in stats.get("blacklist", [])])


def front_status(host: Host, config: Config) -> dict[str, object]:
    """A front's balanced apps: which app servers are in rotation and which are drained, and
    the certificate the front serves for each app with `tls`."""
    drained = current(load_drained(host), config.front)
    result: dict[str, object] = {}
    for app in config.front:
        down = marked_down(app, drained)
        row: dict[str, object] = {"domains": list(app.domains),
                                  "in": [u for u in app.upstreams if u not in down],
                                  "out": [u for u in app.upstreams if u in down]}
        if app.tls.mode != "off":  # HTTPS terminates here: its certificate is this host's
            row["certificate"] = certificate_status(host, as_app(app))
        result[app.name] = row
    return result


@dataclass
class ServerStatus:
    """What `fleet status` shows: each app, a front's rotation, the Emperor and nginx."""

    apps: list[AppStatus]
    front: dict[str, dict[str, object]]  # front_status: balanced app -> rotation, certificate
    emperor: EmperorStatus
    nginx_active: bool

    def to_json(self) -> dict[str, object]:
        return {"apps": {a.name: a.to_json() for a in self.apps}, "front": self.front,
                "emperor": self.emperor.to_json(), "nginx": {"active": self.nginx_active}}


NGINX_UNIT = "nginx.service"
# What `systemctl is-active` answers 0 for ("refreshing": systemd 256 and later).
ACTIVE_STATES = ("active", "reloading", "refreshing")
POOL_SIZE = 8  # apps looked at at once: their stats sockets and health requests are waits


def server_status(host: Host, config: Config) -> ServerStatus:
    """What is read for every app is read once: the Emperor's stats, one `systemctl show` for
    the Emperor, nginx and every app's workers and jobs, one /proc scan, one listing of the
    vassal directory and of the accounts. Then each app's own answers (its stats socket, a
    health request through nginx) are waited for POOL_SIZE apps at a time, while the commands
    (systemctl, getent, the backup schedule's systemd-analyze) run beside them; the rows keep
    the config's order."""
    emperor = read_emperor(host)
    names = [a.name for a in config.apps]
    with ThreadPoolExecutor(max_workers=min(POOL_SIZE, max(len(names), 1)) + 3) as pool:
        asked = pool.submit(unit_states, host, [
            layout.EMPEROR_UNIT_NAME, NGINX_UNIT,
            *(u for a in config.apps for u in background_units(a))])
        found = pool.submit(accounts, host, [a.owner for a in config.apps])
        backups = pool.submit(backups_of, host, config)
        scan = Snapshot(time.monotonic(), host.processes())
        rss = {p.pid: p.rss for p in scan.processes}
        vassal_files = host.listdir(layout.VASSALS_DIR)

        def one(app: AppConfig) -> AppStatus:
            units = asked.result() if app.workers or app.jobs else None
            return app_status(host, config, app.name, emperor, rss, units, vassal_files)

        apps = list(pool.map(one, config.apps))
        units, owners, records = asked.result(), found.result(), backups.result()
    if any(a.cpu for a in config.apps):
        # Two /proc snapshots CPU_SAMPLE apart, after the per-app work: across a longer gap
        # (seconds on a busy server) workers respawned meanwhile would count as idle, and
        # the health requests status sends would count as the apps' own use.
        before = Snapshot(time.monotonic(), host.processes())
        time.sleep(CPU_SAMPLE)
        add_limits(host, config, apps, owners, before,
                   Snapshot(time.monotonic(), host.processes()))
    else:  # no cpu limit to compare with: status does not wait to measure cpu use
        add_limits(host, config, apps, owners, scan, scan)
    for status in apps:
        status.backup = records.get(status.name)
    return ServerStatus(
        apps=apps,
        front=front_status(host, config),
        emperor=emperor_status(units[layout.EMPEROR_UNIT_NAME].active in ACTIVE_STATES,
                               emperor),
        nginx_active=units[NGINX_UNIT].active in ACTIVE_STATES,
    )


CPU_SAMPLE = 0.25  # seconds between the two /proc snapshots cpu use is computed from


def add_limits(host: Host, config: Config, apps: list[AppStatus],
               owners: dict[str, Account | None], before: Snapshot, after: Snapshot) -> None:
    """Each app's use against its limits; `owners`: the apps' accounts (users.accounts)."""
    controllers = cgroup_controllers(host)
    for status in apps:
        app = config.app(status.name)
        assert app is not None
        found = owners.get(app.owner)
        status.limits = limits_status(host, app, found.uid if found else None, before, after,
                                      controllers, sum(w.harakiri for w in status.workers),
                                      sum(w.respawns for w in status.workers))

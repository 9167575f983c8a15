"""Workers and jobs as systemd units: what fleet writes for them, and what systemd says of them.

systemd, not uWSGI's attach-daemon or a scheduler of fleet's own, runs them (README, "Workers
and jobs"): a worker is a template unit with one instance per process, restarted when it exits;
a job is a oneshot service started by a timer (Persistent=, one run at a time, journald). Each
unit names the release it runs, so moving them to a new release is rewriting their files.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fleet.config.settings import AppConfig, JobConfig, WorkerConfig
from fleet.host import layout, pending
from fleet.host.actions import Action, Remove, Run
from fleet.host.files import plan_absent, plan_dir, plan_file, plan_link
from fleet.host.layout import AppPaths, unit_owner
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.server.resource_limits import slice_name

# A worker that exits START_BURST times within START_INTERVAL seconds stays failed: about
# 50 s of failing in a row, long enough for what it needs at boot (Redis, a database) to come
# up, short enough that a crash loop is reported within a minute.
START_BURST = 10
START_INTERVAL = 300
RESTART_SEC = 5
# systemd 254 grows the delay between restarts (RestartSteps=); older ones wait RESTART_SEC.
RESTART_STEPS_SINCE = 254
RESTART_STEPS = 5
RESTART_MAX = 60
RUN_PROCESS = "run"  # FLEET_PROCESS of `fleet run`


def systemd_version(host: Host) -> int:
    """systemd's major version ("systemd 252 (252.39-1~deb12u2)"), 0 when unknown."""
    first = host.run(["systemctl", "--version"], check=False).stdout.split("\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else 0


@dataclass(frozen=True)
class ProcessSetup:
    """What every worker, job and `fleet run` of one release shares: its code, venv and data."""

    app: AppConfig
    release: str
    chdir: str
    venv: str
    env_digest: str

    def context(self, process: str) -> dict[str, object]:
        paths = AppPaths(self.app.name)
        return {"app": self.app, "release": self.release, "chdir": self.chdir,
                "venv": self.venv, "env_digest": self.env_digest, "process": process,
                "env_file": paths.units_env_file, "home": paths.shared,
                "writable": [paths.shared], "slice": slice_name(self.app.name)}


def env_text(env: tuple[tuple[str, str], ...]) -> bytes:
    return render("units.env.j2", env=env)


def setup(app: AppConfig, release: str, chdir: str, venv: str, env: bytes) -> ProcessSetup:
    return ProcessSetup(app, release, chdir, venv, hashlib.sha256(env).hexdigest()[:16])


def run_properties(process: ProcessSetup) -> list[str]:
    """`fleet run`'s unit settings: the lines workers and jobs have (their environment file
    aside: run_attached passes the app's environment its own way)."""
    text = render("systemd/process-environment",
                  **{**process.context(RUN_PROCESS), "env_file": None}).decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def worker_file(process: ProcessSetup, worker: WorkerConfig, version: int) -> bytes:
    steps = version >= RESTART_STEPS_SINCE
    return render("systemd/worker.service", **process.context(worker.name), worker=worker,
                  start_burst=START_BURST, start_interval=START_INTERVAL,
                  restart_sec=RESTART_SEC, restart_steps=RESTART_STEPS if steps else 0,
                  restart_max=RESTART_MAX)


def job_files(process: ProcessSetup, job: JobConfig) -> tuple[bytes, bytes]:
    """(service, timer) of a job."""
    paths = AppPaths(process.app.name)
    service = render("systemd/job.service", **process.context(job.name), job=job,
                     gate=layout.JOB_GATE, unit=paths.job_unit(job.name))
    timer = render("systemd/job.timer", app=process.app, job=job,
                   unit=paths.job_unit(job.name))
    return service, timer


def desired_files(process: ProcessSetup, version: int) -> dict[str, bytes]:
    """Unit file name -> content, for every worker and job of the app."""
    paths = AppPaths(process.app.name)
    files: dict[str, bytes] = {}
    for worker in process.app.workers:
        files[paths.worker_unit(worker.name)] = worker_file(process, worker, version)
    for job in process.app.jobs:
        files[paths.job_unit(job.name)], files[paths.job_unit(job.name, "timer")] = \
            job_files(process, job)
    return files


def desired_links(app: AppConfig) -> dict[str, str]:
    """Enabling links (what `systemctl enable` makes) -> the unit file each points at."""
    paths = AppPaths(app.name)
    links = {}
    for worker in app.workers:
        for index in range(1, worker.processes + 1):
            links[f"{layout.WORKERS_WANTS}/{paths.worker_instance(worker.name, index)}"] = \
                f"{layout.UNIT_DIR}/{paths.worker_unit(worker.name)}"
    for job in app.jobs:
        name = paths.job_unit(job.name, "timer")
        links[f"{layout.TIMERS_WANTS}/{name}"] = f"{layout.UNIT_DIR}/{name}"
    return links


def installed_files(host: Host, app: str | None = None) -> list[str]:
    """Worker and job unit files fleet wrote (of one app, or of every app)."""
    return sorted(f for f in host.listdir(layout.UNIT_DIR)
                  if (owner := unit_owner(f)) and (app is None or owner[0] == app))


def installed_links(host: Host, app: str | None = None) -> list[str]:
    return sorted(f"{wants}/{f}" for wants in (layout.WORKERS_WANTS, layout.TIMERS_WANTS)
                  for f in host.listdir(wants)
                  if (owner := unit_owner(f)) and (app is None or owner[0] == app))


def running_units(host: Host, files: list[str], links: list[str]) -> list[str]:
    """What to stop before unit files go: every enabled worker instance, every job's timer
    and service (a template's instances are named by its links)."""
    names = [link.rsplit("/", 1)[1] for link in links]
    for name in files:
        if name.endswith(".timer"):
            names += [name, name[: -len(".timer")] + ".service"]
        elif not name.endswith("@.service"):
            names.append(name)
    return sorted(set(names))


@dataclass(frozen=True)
class UnitState:
    """What `systemctl show` says of one unit."""

    id: str
    active: str = "inactive"  # active, activating, deactivating, inactive, failed
    restarts: int = 0
    main_pid: int = 0
    next_elapse: float | None = None  # a timer's next run, epoch seconds


SHOW_PROPERTIES = ("Id", "ActiveState", "NRestarts", "MainPID", "TimersCalendar")
# systemd 252 prints NextElapseUSecRealtime in local time even with --timestamp=unix; the
# calendar's own next_elapse is printed as "@SECONDS".
NEXT_ELAPSE_RE = re.compile(r"next_elapse=@([0-9]+)")


def to_int(text: str) -> int:
    return int(text) if text.strip().lstrip("-").isdigit() else 0


def parse_show(text: str) -> dict[str, UnitState]:
    """Blocks of KEY=VALUE lines, one block per unit, separated by blank lines."""
    states = {}
    for block in text.strip().split("\n\n"):
        values = dict(line.partition("=")[::2] for line in block.splitlines() if "=" in line)
        if not values.get("Id"):
            continue
        states[values["Id"]] = UnitState(
            id=values["Id"], active=values.get("ActiveState", "inactive"),
            restarts=to_int(values.get("NRestarts", "")),
            main_pid=to_int(values.get("MainPID", "")),
            next_elapse=min((float(m) for m in NEXT_ELAPSE_RE.findall(
                values.get("TimersCalendar", ""))), default=None))
    return states


def unit_states(host: Host, names: list[str]) -> dict[str, UnitState]:
    """One `systemctl show` for all of them; a unit systemd does not know is "not-found"."""
    if not names:
        return {}
    result = host.run(["systemctl", "show", "--timestamp=unix",
                       "--property=" + ",".join(SHOW_PROPERTIES), *names], check=False)
    found = parse_show(result.stdout)
    return {name: found.get(name, UnitState(id=name)) for name in names}


def unit_release(host: Host, name: str) -> str | None:
    """The release a unit file runs (its `# release ID, environment ...` line)."""
    text = (host.read(f"{layout.UNIT_DIR}/{name}") or b"").decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("# release "):
            return line[len("# release "):].split(",", 1)[0].strip()
    return None


RUNNING = ("active", "activating", "reloading", "deactivating")


def plan_units(host: Host, app: AppConfig, desired: dict[str, bytes], wanted: dict[str, str],
               env: bytes | None) -> list[Action]:
    """Stop and delete what is no longer configured; write what is; start what is not running
    and restart what changed (a worker whose unit or environment changed, a job's timer whose
    schedule changed). `env` None: the app has no workers or jobs left."""
    paths = AppPaths(app.name)
    files, links = installed_files(host, app.name), installed_links(host, app.name)
    stale_files = [f for f in files if f not in desired]
    actions = plan_stale(host, stale_files, [link for link in links if link not in wanted])
    if env is None:
        actions += plan_absent(host, paths.units_env_file, "no workers or jobs")
        env_changed = False
    else:
        env_actions = plan_file(host, paths.units_env_file, env, 0o600, secret=True,
                                why="environment of the app's workers and jobs")
        actions += env_actions
        env_changed = bool(env_actions)
    written = set()
    for name, content in desired.items():
        file_actions = plan_file(host, f"{layout.UNIT_DIR}/{name}", content, 0o644)
        if file_actions:
            written.add(name)
            actions += file_actions
    if wanted:
        actions += plan_dir(host, layout.WORKERS_WANTS) + plan_dir(host, layout.TIMERS_WANTS)
    if app.jobs:
        actions += plan_job_gate(host)
    for link, target in wanted.items():
        actions += plan_link(host, link, target)
    if written or stale_files:
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    return actions + plan_starts(host, app, written, env_changed)


def plan_job_gate(host: Host) -> list[Action]:
    """The script every job's unit runs as root around a run, and its records' directory."""
    return (plan_dir(host, layout.LIB_DIR, 0o755)
            + plan_file(host, layout.JOB_GATE, render("job-gate", state_dir=layout.JOB_RECORDS),
                        0o755)
            + plan_dir(host, layout.JOB_RECORDS, 0o700))


def loaded_only(name: str) -> str:
    """The unit name as a glob matching only itself: systemctl skips a pattern that matches no
    loaded unit, where a plain name systemd has not loaded fails the whole command."""
    return f"{name[:-1]}[{name[-1]}]"


def plan_stale(host: Host, files: list[str], links: list[str]) -> list[Action]:
    """Stop what these unit files and enabling links run, then delete them (and a removed
    job's run record)."""
    actions: list[Action] = []
    stop = [loaded_only(name) for name in running_units(host, files, links)]
    if stop:
        actions.append(Run(argv=("systemctl", "stop", *stop), why="no longer configured"))
        # A unit stopped while it failed (a crash-looping worker) or killed mid-run (a job)
        # would stay loaded as failed, the server "degraded", until the next reboot.
        actions.append(Run(argv=("systemctl", "reset-failed", *stop),
                           why="forget their failed state"))
    actions += [Remove(path=f"{layout.UNIT_DIR}/{f}", why="no longer configured")
                for f in files]
    actions += [Remove(path=link, why="no longer configured") for link in links]
    for name in files:
        if name.endswith(".service") and (unit_owner(name) or ("", ""))[1] == "job":
            actions += plan_absent(host, f"{layout.JOB_RECORDS}/{name}", "job removed")
    return actions


def plan_removed_apps(host: Host, keep: set[str]) -> list[Action]:
    """Every worker and job of apps not in `keep`: stopped and their units deleted (their
    data stays, as with the rest of a removed app)."""
    files = [f for f in installed_files(host) if (unit_owner(f) or ("",))[0] not in keep]
    links = [link for link in installed_links(host)
             if (unit_owner(link.rsplit("/", 1)[1]) or ("",))[0] not in keep]
    actions = plan_stale(host, files, links)
    if files:
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    return actions


def plan_starts(host: Host, app: AppConfig, written: set[str],
                env_changed: bool) -> list[Action]:
    """Restart what changed in this run, or in a run killed before its restarts (owed);
    start what is not running."""
    paths = AppPaths(app.name)
    restart: list[str] = []
    start: list[str] = []
    owed = pending.owed(host)
    units = {paths.worker_instance(w.name, i): paths.worker_unit(w.name) in written
             or env_changed for w in app.workers for i in range(1, w.processes + 1)}
    units |= {paths.job_unit(j.name, "timer"): paths.job_unit(j.name, "timer") in written
              for j in app.jobs}
    units = {name: changed or name in owed for name, changed in units.items()}
    states = unit_states(host, list(units))
    failed = [name for name, state in states.items() if state.active == "failed"]
    for name, changed in units.items():
        if changed:
            restart.append(name)
        elif states[name].active not in RUNNING:
            start.append(name)
    actions: list[Action] = []
    if failed:
        actions.append(Run(argv=("systemctl", "reset-failed", *failed),
                           why="failed: start it again"))
    if restart:
        actions.append(Run(argv=("systemctl", "restart", *restart),
                           why="new release, settings or environment"))
    if start:
        actions.append(Run(argv=("systemctl", "start", *start), why="not running"))
    return actions

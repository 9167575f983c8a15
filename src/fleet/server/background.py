"""What an app's workers and jobs are doing, as systemd reports it (one `systemctl show`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.config.settings import AppConfig
from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server.units import UnitState, unit_release, unit_states


@dataclass
class WorkerStatus:
    name: str
    state: str  # running, starting, failed, stopped
    processes: int  # configured
    running: int
    restarts: int
    release: str | None
    pids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "processes": self.processes, "running": self.running,
                "restarts": self.restarts, "release": self.release, "pids": self.pids}


@dataclass
class JobStatus:
    name: str
    schedule: str
    state: str  # waiting, running, failed, inactive
    last_run: float | None
    last_result: str | None  # success, failed, timeout; None before the first run
    exit_status: int | None
    next_run: float | None
    release: str | None
    skipped: int = 0  # runs that came due while the previous one was still going
    last_skipped: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"schedule": self.schedule, "state": self.state, "last_run": self.last_run,
                "last_result": self.last_result, "exit_status": self.exit_status,
                "next_run": self.next_run, "release": self.release, "skipped": self.skipped,
                "last_skipped": self.last_skipped}


@dataclass
class BackgroundStatus:
    workers: list[WorkerStatus] = field(default_factory=list)
    jobs: list[JobStatus] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """What `fleet check` fails on: a worker systemd gave up on, a job's failed last run."""
        found = [f"worker {w.name} failed (it kept exiting: {w.restarts} restarts)"
                 for w in self.workers if w.state == "failed"]
        found += [f"job {j.name}'s last run ended: {j.last_result}"
                  + (f" (exit status {j.exit_status})" if j.exit_status else "")
                  for j in self.jobs if j.last_result in ("failed", "timeout")]
        return found

    def to_json(self) -> dict[str, object]:
        return {"workers": {w.name: w.to_json() for w in self.workers},
                "jobs": {j.name: j.to_json() for j in self.jobs}}


RUNNING = ("active", "reloading")
STARTING = ("activating", "deactivating")


def worker_state(states: list[UnitState]) -> str:
    if any(s.active == "failed" for s in states):
        return "failed"
    if states and all(s.active in RUNNING for s in states):
        return "running"
    if any(s.active in RUNNING + STARTING for s in states):
        return "starting"
    return "stopped"


def read_record(host: Host, unit: str) -> dict[str, str]:
    """The job's run record (KEY=VALUE lines the job gate writes after each run or skip)."""
    text = (host.read(f"{layout.JOB_RECORDS}/{unit}") or b"").decode(errors="replace")
    return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)


def number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def job_result(record: dict[str, str]) -> str | None:
    """systemd's result of the last run: success, timeout, or failed (exit code, signal...)."""
    result = record.get("result") or None
    return None if result is None else {"success": "success", "timeout": "timeout"}.get(
        result, "failed")


def job_state(timer: UnitState, service: UnitState) -> str:
    if service.active in ("activating", "active", "deactivating"):
        return "running"
    if service.active == "failed":
        return "failed"
    return "waiting" if timer.active == "active" else "inactive"


def worker_instances(app: AppConfig) -> dict[str, list[str]]:
    """Each worker's unit instances (one per process)."""
    paths = AppPaths(app.name)
    return {w.name: [paths.worker_instance(w.name, i) for i in range(1, w.processes + 1)]
            for w in app.workers}


def background_units(app: AppConfig) -> list[str]:
    """Every unit the app's workers and jobs run as: what their status asks systemd about."""
    paths = AppPaths(app.name)
    names = [n for group in worker_instances(app).values() for n in group]
    return names + [paths.job_unit(j.name, kind) for j in app.jobs
                    for kind in ("service", "timer")]


def background_status(host: Host, app: AppConfig,
                      states: dict[str, UnitState] | None = None) -> BackgroundStatus:
    """`states`: what systemd says of background_units(app), when the caller asked it already
    (`fleet status` asks once for every app's units); otherwise one `systemctl show` here."""
    paths = AppPaths(app.name)
    instances = worker_instances(app)
    if states is None:
        states = unit_states(host, background_units(app))
    result = BackgroundStatus()
    for worker in app.workers:
        mine = [states[n] for n in instances[worker.name]]
        result.workers.append(WorkerStatus(
            worker.name, worker_state(mine), worker.processes,
            sum(1 for s in mine if s.active in RUNNING), sum(s.restarts for s in mine),
            unit_release(host, paths.worker_unit(worker.name)),
            [s.main_pid for s in mine if s.main_pid]))
    for job in app.jobs:
        unit = paths.job_unit(job.name)
        service, timer = states[unit], states[paths.job_unit(job.name, "timer")]
        record = read_record(host, unit)
        status = number(record.get("exit_status"))
        result.jobs.append(JobStatus(
            job.name, job.schedule, job_state(timer, service), number(record.get("started")),
            job_result(record), int(status) if status is not None else None,
            timer.next_elapse, unit_release(host, unit), int(number(record.get("skipped")) or 0),
            number(record.get("last_skipped"))))
    return result

"""Workers, jobs and `fleet run` (issue 16): config, the units fleet writes and when it starts,
restarts, stops and deletes them, their status, and the push placement. The behaviour on a
real systemd is proven in tests/e2e/test_workers.py."""

from __future__ import annotations

import pytest

from fleet.cli import run as run_cmd
from fleet.config.store import desired_state, plan_store
from fleet.converge import deploy as deploy_mod
from fleet.errors import EXIT_INVALID, ConfigError, FleetError
from fleet.host.machine import RunResult
from fleet.host.session import Session
from fleet.server.background import background_status, worker_state
from fleet.server.units import UnitState, parse_show
from tests.unit.fakehost import FakeHost
from tests.unit.support import (
    SHA_A1,
    SHA_A2,
    Quiet,
    changed_steps,
    config,
    error_of,
    fleet_main,
    parse,
    run,
    server,
)

pytestmark = pytest.mark.usefixtures("healthy")

UNITS = "/etc/systemd/system"
WORKER = f"{UNITS}/fleet-alpha.worker.queue@.service"
JOB = f"{UNITS}/fleet-alpha.job.prune.service"
TIMER = f"{UNITS}/fleet-alpha.job.prune.timer"
WANTS = f"{UNITS}/multi-user.target.wants"
ALPHA = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
env = { SECRET = 'a"b$c\\d %e' }
"""
WITH_PROCESSES = ALPHA + """
[apps.alpha.workers.queue]
command = "celery -A alpha worker --concurrency=${N:-2} 100%"
processes = 2
stop_timeout = 45
[apps.alpha.jobs.prune]
command = "flask prune"
schedule = "*-*-* 03:00"
timeout = 600
"""


def stored(host: FakeHost, text: str) -> None:
    """The config as `fleet apply FILE` stores it, for the commands that read it."""
    Session(host, Quiet()).act(plan_store(host, desired_state(host, "fleet.toml", text)))


def systemctl(host: FakeHost, verb: str) -> list[list[str]]:
    return [c[2:] for c in host.ran("systemctl", verb)]


# ----------------------------------------------------------------------------- config


def test_workers_and_jobs_are_parsed_with_their_defaults() -> None:
    _, _, apps = parse(WITH_PROCESSES + """
[apps.alpha.workers.mail]
command = "python mail.py"
[apps.alpha.jobs.report]
command = "flask report"
schedule = "daily"
""")
    queue, mail = apps["alpha"].workers[1], apps["alpha"].workers[0]
    assert (queue.name, queue.processes, queue.stop_timeout) == ("queue", 2, 45)
    assert (mail.name, mail.processes, mail.stop_timeout) == ("mail", 1, 30)
    prune, report = apps["alpha"].jobs[0], apps["alpha"].jobs[1]
    assert (prune.schedule, prune.timeout) == ("*-*-* 03:00", 600)
    assert (report.name, report.timeout) == ("report", 3600)


@pytest.mark.parametrize(("extra", "key", "problem"), [
    ("[apps.alpha.workers.Queue]\ncommand = 'x'\n", "apps.alpha.workers.Queue",
     "invalid name"),
    ("[apps.alpha.workers.q]\nprocesses = 2\n", "apps.alpha.workers.q.command",
     "required key is missing"),
    ("[apps.alpha.workers.q]\ncommand = '  '\n", "apps.alpha.workers.q.command",
     "must not be empty"),
    ("[apps.alpha.workers.q]\ncommand = 'x'\nprocesses = 0\n",
     "apps.alpha.workers.q.processes", "between 1 and 64"),
    ("[apps.alpha.workers.q]\ncommand = 'x'\nprocs = 2\n", "apps.alpha.workers.q.procs",
     "unknown key"),
    ("[apps.alpha.jobs.j]\ncommand = 'x'\n", "apps.alpha.jobs.j.schedule",
     "required key is missing"),
    ("[apps.alpha.jobs.j]\ncommand = 'x'\nschedule = 'daily; rm -rf /'\n",
     "apps.alpha.jobs.j.schedule", "systemd calendar"),
    ("[apps.alpha.jobs.j]\ncommand = 'x'\nschedule = 'daily'\ntimeout = 0\n",
     "apps.alpha.jobs.j.timeout", "between 1 and 604800"),
])
def test_bad_worker_or_job_names_the_key(extra: str, key: str, problem: str) -> None:
    message = error_of(ALPHA + extra)
    assert f": {key}: " in message and problem in message, message


def test_a_schedule_systemd_refuses_is_exit_2_before_anything_is_touched() -> None:
    host = server()
    host.bad_schedules.add("*-*-* 25:00")
    with pytest.raises(ConfigError) as info:
        desired_state(host, "fleet.toml", ALPHA + "[apps.alpha.jobs.j]\ncommand = 'x'\n"
                                                  "schedule = '*-*-* 25:00'\n")
    assert info.value.exit_code == EXIT_INVALID
    assert str(info.value).startswith("fleet.toml: apps.alpha.jobs.j.schedule: ")
    assert host.ran("systemd-analyze", "calendar")
    assert not [c for c in host.commands if c[0] != "systemd-analyze"]


# ----------------------------------------------------------------------------- units


def test_units_run_as_the_app_in_its_release_and_start_after_it_serves() -> None:
    host = server()
    session, _ = run(host, config(host, WITH_PROCESSES))
    names = [f"{s.name} {s.app}" for s in session.steps if s.app == "alpha"]
    assert names.index("workers and jobs alpha") > names.index("retire alpha")
    worker = host.read(WORKER).decode()
    assert "User=alpha\nGroup=alpha\n" in worker and "User=root" not in worker
    assert "WorkingDirectory=/srv/fleet/alpha/releases/aaaaaaaaaaaa\n" in worker
    assert "# release aaaaaaaaaaaa," in worker and "TimeoutStopSec=45\n" in worker
    # The command reaches /bin/sh exactly: systemd's $ and % expansions are escaped.
    assert ('ExecStart=/bin/sh -c "celery -A alpha worker --concurrency=$${N:-2} 100%%"'
            in worker)
    assert "EnvironmentFile=/etc/fleet/env/alpha.units\n" in worker
    assert "RestartSteps" not in worker  # systemd 252 has no growing delay
    env = host.files["/etc/fleet/env/alpha.units"]
    assert (env.mode, env.owner) == (0o600, "root")
    assert host.read("/etc/fleet/env/alpha.units") == b'SECRET="a\\"b\\$c\\\\d %e"\n'
    job = host.read(JOB).decode()
    assert "Type=oneshot" in job and "TimeoutStartSec=600\n" in job and "User=alpha" in job
    assert 'ExecCondition=+/usr/local/lib/fleet/job-gate due fleet-alpha.job.prune.service ' \
           '"*-*-* 03:00"' in job
    timer = host.read(TIMER).decode()
    assert "OnCalendar=*-*-* 03:00\n" in timer and "Persistent=true\n" in timer
    assert host.files["/usr/local/lib/fleet/job-gate"].mode == 0o755
    for index in (1, 2):
        assert host.state(f"{WANTS}/fleet-alpha.worker.queue@{index}.service").target == WORKER
    assert host.state(f"{UNITS}/timers.target.wants/fleet-alpha.job.prune.timer").target == TIMER
    assert ["fleet-alpha.worker.queue@1.service", "fleet-alpha.worker.queue@2.service",
            "fleet-alpha.job.prune.timer"] in systemctl(host, "restart")
    assert host.ran("systemctl", "daemon-reload")


def test_a_rerun_changes_nothing_and_drift_is_repaired() -> None:
    host = server()
    cfg = config(host, WITH_PROCESSES)
    run(host, cfg)
    host.commands.clear()
    session, _ = run(host, cfg)
    assert changed_steps(session) == []
    assert not systemctl(host, "restart") and not systemctl(host, "start")
    host.remove(TIMER)  # a deleted timer, a stopped worker, a failed one
    host.active.discard("fleet-alpha.worker.queue@2.service")
    host.active.discard("fleet-alpha.worker.queue@1.service")
    host.failed_units.add("fleet-alpha.worker.queue@1.service")
    session, _ = run(host, cfg)
    assert changed_steps(session) == ["workers and jobs alpha"]
    assert host.read(TIMER) is not None
    assert systemctl(host, "reset-failed") == [["fleet-alpha.worker.queue@1.service"]]
    assert systemctl(host, "restart") == [["fleet-alpha.job.prune.timer"]]
    assert systemctl(host, "start") == [["fleet-alpha.worker.queue@1.service",
                                         "fleet-alpha.worker.queue@2.service"]]


def test_a_deploy_moves_them_and_a_failed_one_leaves_them(monkeypatch) -> None:
    host = server()
    cfg = config(host, WITH_PROCESSES)
    run(host, cfg)
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2}

    def failing_gate(*_args, **_kwargs):
        raise FleetError("release bbbbbbbbbbbb failed its health check (HTTP 500)")

    with monkeypatch.context() as patched:
        patched.setattr(deploy_mod, "gate", failing_gate)
        session, outcome = run(host, cfg)
    assert outcome.apps["alpha"].failed
    assert "workers and jobs alpha" not in [f"{s.name} {s.app}" for s in session.steps]
    assert "# release aaaaaaaaaaaa," in host.read(WORKER).decode()
    host.commands.clear()
    run(host, cfg)  # the gate passes now
    assert "# release bbbbbbbbbbbb," in host.read(WORKER).decode()
    assert "WorkingDirectory=/srv/fleet/alpha/releases/bbbbbbbbbbbb\n" in host.read(
        JOB).decode()
    # The workers restart on the new code; the timer keeps its schedule (unchanged file).
    assert systemctl(host, "restart") == [["fleet-alpha.worker.queue@1.service",
                                           "fleet-alpha.worker.queue@2.service"]]


def test_removed_workers_jobs_and_processes_are_stopped_and_deleted() -> None:
    host = server()
    run(host, config(host, WITH_PROCESSES))
    fewer = WITH_PROCESSES.replace("processes = 2", "processes = 1")
    fewer = fewer[: fewer.index("[apps.alpha.jobs.prune]")]
    run(host, config(host, fewer))
    stopped = systemctl(host, "stop")
    gone = ["fleet-alpha.job.prune.servic[e]", "fleet-alpha.job.prune.time[r]",
            "fleet-alpha.worker.queue@2.servic[e]"]  # globs: an unloaded unit is skipped
    assert gone in stopped and gone in systemctl(host, "reset-failed")
    assert host.read(JOB) is None and host.read(TIMER) is None
    assert host.state(f"{WANTS}/fleet-alpha.worker.queue@2.service") is None
    assert host.state(f"{WANTS}/fleet-alpha.worker.queue@1.service") is not None
    run(host, config(host, ALPHA))  # no workers or jobs left
    assert host.read(WORKER) is None and host.read("/etc/fleet/env/alpha.units") is None
    assert ["fleet-alpha.worker.queue@1.servic[e]"] in systemctl(host, "stop")


def test_an_app_no_longer_configured_loses_its_workers_and_jobs() -> None:
    host = server()
    run(host, config(host, WITH_PROCESSES + "[apps.beta]\nrepo = 'git://remote/beta.git'\n"
                                            "domains = ['beta.test']\n"))
    host.remove("/etc/fleet/apps/alpha.toml")
    run(host, config(host, "[apps.beta]\nrepo = 'git://remote/beta.git'\n"
                           "domains = ['beta.test']\n"))
    assert not [f for f in host.listdir(UNITS) if f.startswith("fleet-alpha.")]
    assert not [f for f in host.listdir(WANTS) if f.startswith("fleet-alpha.")]
    assert host.read("/etc/fleet/env/alpha.units") is None
    assert any("fleet-alpha.worker.queue@1.servic[e]" in c for c in systemctl(host, "stop"))


def test_a_plan_shows_the_units_and_schedules_and_runs_nothing() -> None:
    host = server()
    pinned = f'ref = "{SHA_A1}"\n'  # a plan resolves a commit id without the remote
    run(host, config(host, ALPHA + pinned))
    host.commands.clear()
    session, _ = run(host, config(host, WITH_PROCESSES.replace("[apps.alpha.workers",
                                                               pinned + "[apps.alpha.workers",
                                                               1)), check=True)
    step = next(s for s in session.steps if s.name == "workers and jobs")
    planned = "\n".join(a.describe() for a in step.actions)
    assert TIMER in planned and "systemctl restart" in planned
    assert host.read(TIMER) is None and not systemctl(host, "restart")


def test_newer_systemd_grows_the_restart_delay() -> None:
    host = server()
    host.systemd_version = 257
    run(host, config(host, WITH_PROCESSES))
    assert "RestartSteps=5\nRestartMaxDelaySec=60\n" in host.read(WORKER).decode()


# ----------------------------------------------------------------------------- status


def test_systemctl_show_is_read_into_states() -> None:
    text = ("Id=a.timer\nActiveState=active\nTimersCalendar={ OnCalendar=*-*-* 03:00:00 ; "
            "next_elapse=@1795800000 }\n\nId=b@1.service\nActiveState=failed\nNRestarts=7\n"
            "MainPID=0\nExecMainStartTimestamp=\n")
    states = parse_show(text)
    assert states["a.timer"].next_elapse == 1795800000.0
    assert (states["b@1.service"].active, states["b@1.service"].restarts) == ("failed", 7)
    running, failed = UnitState("x", active="active"), UnitState("y", active="failed")
    assert worker_state([running, running]) == "running"
    assert worker_state([running, failed]) == "failed"
    assert worker_state([running, UnitState("z", active="activating")]) == "starting"
    assert worker_state([UnitState("z")]) == "stopped"


def test_status_reports_workers_and_job_records_and_check_fails_on_a_failed_worker(
        monkeypatch, capsys) -> None:
    host = server()
    cfg = config(host, WITH_PROCESSES)
    run(host, cfg)
    stored(host, WITH_PROCESSES)
    host.write("/var/lib/fleet/jobs/fleet-alpha.job.prune.service",
               b"started=100\nended=160\nresult=timeout\nexit_status=\nskipped=2\n"
               b"last_skipped=150\n", 0o600, "root", "root")
    status = background_status(host, cfg.app("alpha"))
    queue = status.workers[0]
    assert (queue.state, queue.running, queue.release) == ("running", 2, "aaaaaaaaaaaa")
    prune = status.jobs[0]
    assert (prune.last_run, prune.last_result, prune.skipped) == (100.0, "timeout", 2)
    assert status.problems == ["job prune's last run ended: timeout"]
    host.failed_units.add("fleet-alpha.worker.queue@2.service")
    host.restarts["fleet-alpha.worker.queue@2.service"] = 10
    status = background_status(host, cfg.app("alpha"))
    assert status.workers[0].state == "failed"
    assert "worker queue failed (it kept exiting: 10 restarts)" in status.problems

    from fleet.cli import inspect as inspect_cmd
    from fleet.server.health import HealthResult
    monkeypatch.setattr(inspect_cmd, "local_host", lambda: host)
    monkeypatch.setattr(inspect_cmd, "require_root", lambda: None)
    monkeypatch.setattr(inspect_cmd, "check_app",
                        lambda *_a, **_k: HealthResult(True, 200, "HTTP 200", 0.0))
    code, out, _ = fleet_main(monkeypatch, capsys, "check")
    assert code == 1 and "worker queue failed" in out


# ----------------------------------------------------------------------------- fleet run


def test_fleet_run_runs_as_the_app_in_its_release_and_passes_the_exit_code(
        monkeypatch, capsys) -> None:
    host = server()
    run(host, config(host, WITH_PROCESSES))
    stored(host, WITH_PROCESSES)
    monkeypatch.setattr(run_cmd, "local_host", lambda: host)
    monkeypatch.setattr("fleet.cli.inspect.local_host", lambda: host)
    monkeypatch.setattr("fleet.cli.inspect.require_root", lambda: None)
    host.handlers.append(lambda _h, argv: RunResult(3, "", "") if argv[3:4] == ["flask"]
                         else None)
    code, _, _ = fleet_main(monkeypatch, capsys, "run", "alpha", "--", "flask", "db",
                            "upgrade", "--sql")
    argv, props, env, tty = host.attached[-1]
    assert code == 3 and not tty  # a shell with the unit's PATH finds the venv's flask
    assert argv == ["/bin/sh", "-c", 'exec "$0" "$@"', "flask", "db", "upgrade", "--sql"]
    assert "User=alpha" in props and "Group=alpha" in props
    assert "WorkingDirectory=/srv/fleet/alpha/releases/aaaaaaaaaaaa" in props
    assert "ProtectSystem=strict" in props and "ReadWritePaths=/srv/fleet/alpha/shared" in props
    assert not [p for p in props if p.startswith("EnvironmentFile")]  # secrets: not on argv
    assert env == {"SECRET": 'a"b$c\\d %e'}
    code, _, err = fleet_main(monkeypatch, capsys, "run", "nope", "--", "true")
    assert code == EXIT_INVALID and "no app named 'nope'" in err

"""A run killed between writing a file and the action that makes it take effect (systemd's
daemon-reload, a restart of the Emperor, a worker or a timer): the next run acts although it
finds the files already right (host/pending.py); a run with nothing owed acts on nothing.
nginx's reload, the first of these, is tested in test_converge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fleet.host import layout, pending
from fleet.host.actions import Remove, Run, WriteFile
from fleet.host.machine import RunResult
from fleet.host.session import Session
from tests.unit.fakehost import FakeHost
from tests.unit.support import CONFIG, SHA_A2, Quiet, changed_steps, config, run, server

pytestmark = pytest.mark.usefixtures("healthy")

UNITS = "/etc/systemd/system"
WORKERS = """
[apps.alpha.workers.queue]
command = "celery -A alpha worker"
processes = 2
[apps.alpha.jobs.prune]
command = "flask prune"
schedule = "*-*-* 03:00"
"""
INSTANCES = ["fleet-alpha.worker.queue@1.service", "fleet-alpha.worker.queue@2.service"]
LIMITED = CONFIG.replace('domains = ["alpha.test"]\n', 'domains = ["alpha.test"]\ncpu = CPU\n')
BACKUP = '[server.backup]\nschedule = "daily"\n'
METRICS = '[server.metrics]\ntextfile_dir = "/var/lib/prometheus/node-exporter"\n'
NOTIFY = '[server.notify]\nwebhook = "https://hooks.example.com/fleet"\n'


def kill_at(host: FakeHost, *prefix: str) -> None:
    """SIGKILL, as the run starts this command: every file before it is written."""

    def handler(h: FakeHost, argv: list[str]) -> RunResult | None:
        if argv[:len(prefix)] == list(prefix):
            h.handlers.remove(handler)
            raise KeyboardInterrupt
        return None

    host.handlers.append(handler)


def systemctl(host: FakeHost) -> list[list[str]]:
    """The commands that change what systemd runs (queries left out)."""
    return [c[1:] for c in host.commands if c[0] == "systemctl"
            and c[1] in ("daemon-reload", "restart", "reload", "start", "stop")]


def tamper(path: str) -> Callable[[FakeHost], None]:
    """An older fleet's version of a unit file: this run rewrites it."""
    return lambda host: host.write(path, b"# written by an older fleet\n", 0o644, "root", "root")


def new_commit(host: FakeHost) -> None:
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}


@dataclass(frozen=True)
class Case:
    before: str  # the config of the first, complete run
    after: str  # the config of the killed run and of the next one
    change: Callable[[FakeHost], None] | None  # what else differs for the killed run
    kill: tuple[str, ...]  # the command the killed run never got to run
    steps: list[str]  # what the next run changes: only what was owed
    acts: list[list[str]]  # and its systemctl commands


CASES = {
    "emperor.ini, killed before the Emperor's restart": Case(
        CONFIG, CONFIG + "[emperor.vassal_set]\nmax-requests = 1000\n", None,
        ("systemctl", "restart", "fleet-emperor.service"),
        ["emperor"], [["restart", "fleet-emperor.service"]]),
    "the Emperor's unit, killed before daemon-reload": Case(
        CONFIG, CONFIG, tamper(layout.EMPEROR_UNIT), ("systemctl", "daemon-reload"),
        ["systemd units", "emperor"],
        [["daemon-reload"], ["restart", "fleet-emperor.service"]]),
    "workers' units of a new release, killed before daemon-reload": Case(
        CONFIG + WORKERS, CONFIG + WORKERS, new_commit, ("systemctl", "daemon-reload"),
        ["systemd units", "workers and jobs alpha"],
        [["daemon-reload"], ["restart", *INSTANCES]]),
    "workers' units of a new release, killed before their restart": Case(
        CONFIG + WORKERS, CONFIG + WORKERS, new_commit, ("systemctl", "restart"),
        ["workers and jobs alpha"], [["restart", *INSTANCES]]),
    "a job's new schedule, killed before the timer's restart": Case(
        CONFIG + WORKERS, CONFIG + WORKERS.replace("03:00", "04:00"), None,
        ("systemctl", "restart"),
        ["workers and jobs alpha"], [["restart", "fleet-alpha.job.prune.timer"]]),
    "an app's slice, killed before daemon-reload": Case(
        LIMITED.replace("CPU", "50"), LIMITED.replace("CPU", "80"), None,
        ("systemctl", "daemon-reload"), ["systemd units"], [["daemon-reload"]]),
    "the backup timer's new schedule, killed before daemon-reload": Case(
        BACKUP + CONFIG, BACKUP.replace("daily", "weekly") + CONFIG, None,
        ("systemctl", "daemon-reload"),
        ["systemd units", "backups"], [["daemon-reload"], ["restart", "fleet-backup.timer"]]),
    "the metrics timer, killed before daemon-reload": Case(
        CONFIG + METRICS, CONFIG + METRICS, tamper(f"{UNITS}/{layout.METRICS_TIMER}"),
        ("systemctl", "daemon-reload"),
        ["systemd units", "metrics"], [["daemon-reload"], ["restart", "fleet-metrics.timer"]]),
    "the watch timer, killed before daemon-reload": Case(
        NOTIFY + CONFIG, NOTIFY + CONFIG, tamper(f"{UNITS}/fleet-watch.timer"),
        ("systemctl", "daemon-reload"),
        ["systemd units", "audit and notifications"],
        [["daemon-reload"], ["restart", "fleet-watch.timer"]]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_file_written_by_a_killed_run_gets_its_action_from_the_next(case: Case) -> None:
    host = server()
    run(host, config(host, case.before))
    if case.change:
        case.change(host)
    kill_at(host, *case.kill)
    with pytest.raises(KeyboardInterrupt):
        run(host, config(host, case.after))
    owed = pending.owed(host)
    assert owed, "the killed run left nothing owed"

    # A plan shows what is owed and does none of it.
    host.commands.clear()
    plan, _ = run(host, config(host, case.after), check=True)
    assert changed_steps(plan) == case.steps
    assert systemctl(host) == [] and pending.owed(host) == owed

    session, _ = run(host, config(host, case.after))
    assert changed_steps(session) == case.steps  # no file written again: only the action
    assert not [a for s in session.steps for a in s.actions if isinstance(a, WriteFile)]
    assert systemctl(host) == case.acts
    assert host.state(layout.PENDING) is None

    host.commands.clear()
    again, _ = run(host, config(host, case.after))
    assert changed_steps(again) == [] and systemctl(host) == []


@pytest.mark.parametrize("text", [CONFIG + WORKERS, BACKUP + NOTIFY + CONFIG + METRICS])
def test_a_run_with_nothing_owed_acts_on_nothing_and_leaves_no_mark(text: str) -> None:
    host = server()
    run(host, config(host, text))
    assert host.state(layout.PENDING) is None  # every action owed was done and paid
    writes: list[str] = []
    write = host.write
    host.write = lambda path, *rest: (writes.append(path), write(path, *rest))[1]  # type: ignore
    host.commands.clear()
    session, _ = run(host, config(host, text))
    assert changed_steps(session) == [] and systemctl(host) == []
    assert writes == []  # not even the mark


def test_only_what_follows_a_file_change_is_owed_and_every_action_pays() -> None:
    write = WriteFile(path=f"{UNITS}/x.service", content=b"", mode=0o644)
    reload = Run(argv=("systemctl", "daemon-reload"))
    restart = Run(argv=("systemctl", "restart", "--quiet", "a.service", "b.timer"))
    stop = Run(argv=("systemctl", "stop", "c.servic[e]"))
    start = Run(argv=("systemctl", "start", "d.service"))
    assert pending.owed_by([restart, write]) == frozenset()  # done before the change
    assert pending.owed_by([stop, write, reload, start, restart]) == {
        "daemon-reload", "a.service", "b.timer"}  # a start or a stop is never owed
    assert pending.done_by([stop, start, Run(argv=("systemctl", "disable", "--now", "e.timer")),
                            Run(argv=("systemctl", "enable", "f.timer"))]) == {
        "c.service", "d.service", "e.timer"}
    assert pending.owed_by([Remove(path="/x"), Run(argv=("nginx", "-t"))]) == frozenset()


def test_the_mark_is_written_before_the_files_and_cleared_after_the_action() -> None:
    host = server()
    seen: list[frozenset[str]] = []

    def watch(h: FakeHost, argv: list[str]) -> RunResult | None:
        seen.append(pending.owed(h))
        return None

    host.handlers.append(watch)
    unit = f"{UNITS}/a.service"
    session = Session(host, Quiet())
    with session.step("units") as step:
        session.apply(step, [WriteFile(path=unit, content=b"[Unit]\n", mode=0o644),
                             Run(argv=("systemctl", "daemon-reload")),
                             Run(argv=("systemctl", "restart", "a.service"))])
    # Both owed before the file was written; each paid once it ran.
    assert seen == [{"daemon-reload", "a.service"}, {"a.service"}]
    assert host.state(layout.PENDING) is None
    # A second list pays only its own: what another killed run owed stays.
    pending.owe(host, ["nginx", "b.service"])
    with session.step("more") as step:
        session.apply(step, [Run(argv=("systemctl", "restart", "b.service"))])
    assert pending.owed(host) == {"nginx"}
    assert host.files[layout.PENDING].mode == 0o600

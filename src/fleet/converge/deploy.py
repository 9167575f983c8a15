"""Switching an app to a new release without dropping a request.

A new release runs as a second vassal on its own socket beside the live one; it is
health-checked directly over the uwsgi protocol, and only then does nginx (tested, then
reloaded gracefully) send it traffic. The old vassal is retired once nginx's old workers have
finished their requests. A release that fails its gate is stopped and never sees a request.
"""

from __future__ import annotations

import time

from fleet.config.envfile import app_environment
from fleet.config.settings import AppConfig
from fleet.converge.rollout import Rollout
from fleet.converge.tcp_switch import free_address, restore_live
from fleet.errors import AnswerError, FleetError
from fleet.host import layout
from fleet.host.actions import Action, ContainedRun, Remove
from fleet.host.client import uwsgi_get
from fleet.host.files import plan_absent, plan_file, plan_link
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.host.poll import poll
from fleet.host.render import render
from fleet.host.session import Session, Step
from fleet.server.emperor import read_stats, vassal_entry, wait_until_gone
from fleet.server.health import judge_reply
from fleet.server.history import History
from fleet.server.logs import app_log_tail
from fleet.server.release import app_dir
from fleet.server.resource_limits import unit_limits


def live_release_of(host: Host, app: str) -> str | None:
    """The release `current` points at (switched only after nginx serves it)."""
    state = host.state(AppPaths(app).current)
    return state.target.rsplit("/", 1)[-1] if state and state.kind == "link" else None


def live_release(session: Session, app: str) -> str | None:
    return live_release_of(session.host, app)


def app_env(host: Host, app: AppConfig) -> tuple[tuple[str, str], ...]:
    return app_environment(host, app)


def run_init(session: Session, step: Step, app: AppConfig, rollout: Rollout) -> None:
    """The app's init command (migrations...): contained as the app's user, in the new
    release, able to write only its data (shared/) and a private /tmp; at init_timeout its
    whole process tree is killed, and nothing it started outlives it."""
    assert rollout.release and rollout.venv
    paths = AppPaths(app.name)
    app_vars = app_env(session.host, app)
    env = (*app_vars, ("PATH", f"{rollout.venv}/bin:/usr/local/bin:/usr/bin:/bin"),
           ("VIRTUAL_ENV", rollout.venv), ("HOME", paths.shared), ("LANG", "C.UTF-8"))
    session.apply(step, [ContainedRun(argv=("/bin/sh", "-c", app.init or ""), user=app.owner,
                                      why="run the init command", env=env,
                                      cwd=app_dir(paths.release(rollout.release), app),
                                      writable=(paths.shared,), timeout=app.init_timeout,
                                      secrets=tuple(v for _, v in app_vars),
                                      limits=unit_limits(app))])


def gate(session: Session, app: AppConfig, release: str) -> str:
    """Health-check a release's vassal on its own socket until it passes or time runs out."""
    paths = AppPaths(app.name)
    vassal_id = paths.vassal_id(release)
    # An on-demand one wakes up; a TCP one is reached on its address (fleet.converge.tcp_switch).
    address = app.tcp_address or paths.serving_socket(release, app.on_demand)

    def attempt() -> tuple[str | None, str, bool]:
        """(what passed, or None; why not; whether waiting longer is pointless)."""
        try:
            reply = uwsgi_get(address, app.url(app.health.path), app.domains[0],
                              timeout=min(5.0, app.health.timeout))
            problem = judge_reply(app, reply.status, reply.body) or ""
            if not problem:
                return f"HTTP {reply.status} on its own socket", "", False
        except AnswerError as exc:  # bounded: an endless or huge answer fails the gate
            problem = f"{exc} on {address}"
        except (OSError, ValueError) as exc:
            problem = f"no answer on {address} ({exc.__class__.__name__})"
        try:
            entry = vassal_entry(read_stats(session.host, layout.EMPEROR_STATS), vassal_id)
            if entry and (int(entry.get("respawns", 0)) > 0 or int(entry.get("cursed", 0))):
                return None, "its vassal exited before answering (see the log below)", True
        except (OSError, ValueError):
            pass
        return None, problem, False

    passed, problem, _ = poll(attempt, lambda result: result[0] is not None or result[2],
                              timeout=app.health.timeout, interval=0.3)
    if passed is not None:
        return passed
    raise FleetError(f"release {release} failed its health check ({problem}); "
                     "the previous release keeps serving")


def plan_on_demand(session: Session, app: AppConfig, release: str) -> list[Action]:
    """The .socket file beside the ini makes a vassal on-demand; the Emperor reads it only when
    it first sees the ini, so it is written (or removed) before the ini."""
    paths = AppPaths(app.name)
    if not app.on_demand:
        return plan_absent(session.host, paths.on_demand_file(release), "mode = always")
    content = render("vassal.socket.j2", socket=paths.on_demand_socket(release))
    return plan_file(session.host, paths.on_demand_file(release), content, 0o644,
                     why="mode = on-demand: the Emperor binds this socket")


def mode_switch(session: Session, step: Step, app: AppConfig, release: str,
                restart: str | None = None) -> None:
    """A running vassal cannot change mode, take a re-created user's new uid or bind a socket
    again in a reload (it has dropped root): stop it, so it is created anew."""
    paths = AppPaths(app.name)
    host = session.host
    has_file = host.state(paths.on_demand_file(release)) is not None
    if host.state(paths.vassal(release)) is None or (has_file == app.on_demand
                                                     and not restart):
        return
    why = f"restarted: {restart}" if restart else f"restarted as mode = {app.mode}"
    session.apply(step, [Remove(path=paths.vassal(release), why=why)])
    if not session.check and not wait_until_gone(host, paths.vassal_id(release)):
        raise FleetError(f"the Emperor still runs {paths.vassal_id(release)}; try again")


def activate(session: Session, app: AppConfig, rollout: Rollout) -> None:
    """Write the app's environment, then either reload the live vassal in place (same release,
    new settings) or start the new release beside it and gate it."""
    host = session.host
    paths = AppPaths(app.name)
    assert rollout.release and rollout.vassal is not None and rollout.env is not None
    new_release = rollout.release != rollout.live
    with session.step("deploy" if new_release else "vassal", app.name) as step:
        session.apply(step, plan_file(host, paths.env_file, rollout.env, 0o600, secret=True,
                                      why="environment"))
        leftovers = [Remove(path=f"{layout.VASSALS_DIR}/{entry}",
                            why="left by an interrupted deploy")
                     for entry in host.listdir(layout.VASSALS_DIR)
                     if (layout.vassal_app(entry) or ("", ""))[0] == app.name
                     and layout.vassal_app(entry)[1] not in (rollout.live, rollout.release)]
        session.apply(step, leftovers)
        if not new_release:
            mode_switch(session, step, app, rollout.release, rollout.restart)
            session.apply(step, plan_on_demand(session, app, rollout.release))
            if session.apply(step, plan_file(host, paths.vassal(rollout.release),
                                             rollout.vassal, 0o600,
                                             why="the Emperor reloads this vassal gracefully; "
                                                 "then health-checked through nginx")):
                state = host.state(paths.vassal(rollout.release))
                rollout.vassal_written = state.mtime if state and not session.check else None
            return
        step.notes.append(f"{rollout.live or 'nothing'} -> {rollout.release}")
        if app.init:
            run_init(session, step, app, rollout)
        if not session.check and host.state(paths.vassal(rollout.release)) is None \
                and not wait_until_gone(host, paths.vassal_id(rollout.release)):
            raise FleetError(f"the Emperor still runs the old vassal of release "
                             f"{rollout.release}; try again in a minute")
        free_address(session, step, app, rollout)
        session.apply(step, plan_on_demand(session, app, rollout.release))
        session.apply(step, plan_file(host, paths.vassal(rollout.release), rollout.vassal,
                                      0o600, why="new release, started beside the live one"))
        if session.check:
            step.notes.append("then health-checked on its own socket before nginx switches to it, "
                              "and through nginx after")
            return
        try:
            step.notes.append(gate(session, app, rollout.release))
        except FleetError:
            step.log = app_log_tail(host, app.name) or None
            session.apply(step, [Remove(path=paths.vassal(rollout.release), why="failed its gate")])
            restore_live(session, step, app, rollout)
            raise
        rollout.swapped = True


def retire(session: Session, app: AppConfig, rollout: Rollout, history: History) -> None:
    """After nginx serves the new release: point `current` at it, stop the old vassal, record
    the deploy and prune old releases (their venvs too, unless a kept release shares one)."""
    host = session.host
    paths = AppPaths(app.name)
    assert rollout.release and rollout.commit
    with session.step("retire", app.name) as step:
        actions: list[Action] = plan_link(host, paths.current, paths.release(rollout.release))
        if rollout.live and rollout.live != rollout.release:
            actions.append(Remove(path=paths.vassal(rollout.live),
                                  why="replaced by the new release"))
        history.record(rollout.release, rollout.commit, deployed=time.time(), failed=None)
        prune = history.to_prune(app.keep_releases, rollout.release,
                                 [r for r in host.listdir(paths.releases)
                                  if not r.startswith(".")])
        for old in prune:
            actions.append(Remove(path=paths.release(old),
                                  why=f"keep_releases = {app.keep_releases}"))
            history.releases.pop(old, None)
        used = {r.venv for r in history.releases.values()} | {rollout.venv}
        for venv in host.listdir(paths.venvs):
            if paths.venv(venv) not in used and prune:
                actions.append(Remove(path=paths.venv(venv), why="no kept release uses it"))
        actions += history.write_action(host)
        session.apply(step, actions)


def record_failure(session: Session, rollout: Rollout, history: History) -> None:
    """Remember that a release failed, for `fleet releases` (not for plans)."""
    if session.check or not rollout.release or not rollout.commit \
            or rollout.release == rollout.live:
        return
    history.record(rollout.release, rollout.commit, failed=rollout.error or "failed")
    session.act(history.write_action(session.host))

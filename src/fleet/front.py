"""A front server: one nginx upstream per app over the app servers that run it.

The front runs no app itself; its apply writes one conf.d file per balanced app (tested with
`nginx -t` like every site), removes the files of apps it no longer balances, reloads nginx and
health-checks each app *through* the front, so a passing check proves the whole path.
"""

from __future__ import annotations

from collections.abc import Callable

from fleet import layout
from fleet.actions import Action, Remove
from fleet.config import Config
from fleet.deploy import Rollout
from fleet.errors import FleetError
from fleet.files import plan_file
from fleet.health import check_app
from fleet.nginx import apply_tested, wait_workers_gone, worker_pids
from fleet.render import render
from fleet.resources.services import plan_service
from fleet.rotation import Change, Drained, as_app, current, load_drained, marked_down, plan_drained
from fleet.session import Session, StepFailed

FRONT_DIR = f"{layout.NGINX_DIR}/conf.d"
FRONT_PREFIX = "fleet-front-"


def front_file(name: str) -> str:
    return f"{FRONT_DIR}/{FRONT_PREFIX}{name}.conf"


def stale_files(session: Session, names: set[str]) -> list[Action]:
    actions: list[Action] = []
    for entry in session.host.listdir(FRONT_DIR):
        name = entry[len(FRONT_PREFIX):-len(".conf")]
        if entry.startswith(FRONT_PREFIX) and entry.endswith(".conf") and name not in names:
            actions.append(Remove(f"{FRONT_DIR}/{entry}", "no longer balanced here"))
    return actions


def converge_front(config: Config, session: Session, rollouts: dict[str, Rollout]) -> bool:
    """Write, test and reload the front's sites; each app's failure is that app's alone.
    Servers drained from rotation (fleet.rotation) are rendered `down`. Returns whether nginx
    was reloaded."""
    host = session.host
    changed = False
    stored = load_drained(host)
    drained = current(stored, config.front)
    if drained != stored:
        with session.step("rotation state") as step:
            session.apply(step, plan_drained(host, drained))
    for front in config.front:
        rollout = rollouts.setdefault(front.name, Rollout(front.name))
        down = marked_down(front, drained)
        content = render("nginx-front.conf.j2", app=front,
                         upstreams=[(u, u in down) for u in front.upstreams],
                         client_max_body_size=config.server.client_max_body_size)
        try:
            with session.step("front site", front.name) as step:
                actions = plan_file(host, front_file(front.name), content, 0o644)
                changed |= apply_tested(session, step, actions, "this app's front site")
        except StepFailed as exc:
            rollout.failed, rollout.error = True, f"front site: {exc.step.error}"
    stale = stale_files(session, {f.name for f in config.front})
    if stale:
        with session.step("remove stale front sites") as step:
            session.apply(step, stale)
            changed = True
    if changed:
        with session.step("nginx (front)") as step:
            session.apply(step, plan_service(host, "nginx", changed=True))
    return changed


def rotate(config: Config, session: Session,
           update: Callable[[Drained], list[Change]]) -> list[Change]:
    """Change which servers are out of rotation, render, test and reload the front, and wait
    for the workers of the old configuration to finish: after a drain returns, no worker is
    left that could still send a new request to the drained server."""
    drained = current(load_drained(session.host), config.front)
    changes = update(drained)
    with session.step("rotation state") as step:
        session.apply(step, plan_drained(session.host, drained))
    before = worker_pids()
    if converge_front(config, session, {}) and not session.check:
        with session.step("old nginx workers finish") as step:
            if not wait_workers_gone(before):
                step.notes.append("some still run after 60 s (long requests)")
    return changes


def check_front(config: Config, session: Session, rollouts: dict[str, Rollout]) -> None:
    """GET each app's health path through this front (Host = its first domain)."""
    for front in config.front:
        rollout = rollouts[front.name]
        if rollout.failed:
            rollout.health = "failed"
            continue
        try:
            with session.step("health", front.name) as step:
                result = check_app(as_app(front))
                step.notes.append(f"{result.detail} through the front after "
                                  f"{result.elapsed:.1f} s")
                if not result.passed:
                    raise FleetError(f"GET {front.health.path} with Host {front.domains[0]} "
                                     f"through the front: {result.detail}")
            rollout.health = "passed"
        except StepFailed as exc:
            rollout.failed, rollout.health = True, "failed"
            rollout.error = f"health: {exc.step.error}"

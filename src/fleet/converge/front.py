"""A front server: one nginx upstream per app over the app servers that run it.

The front runs no app itself; its apply writes one conf.d file per balanced app (tested with
`nginx -t` like every site), removes the files of apps it no longer balances, reloads nginx and
health-checks each app *through* the front, so a passing check proves the whole path.

HTTPS terminates at the front: a balanced app's `tls` gets its certificate here exactly as a
standalone app's does (fleet.server.tls, through the app's AppConfig view), and its file
gets the 443 server block and the HTTP -> HTTPS redirect once a certificate is served.
"""

from __future__ import annotations

from collections.abc import Callable

from fleet.config.settings import AppConfig, Config, FrontApp, as_app
from fleet.converge import sites
from fleet.converge.rollout import Rollout
from fleet.errors import FleetError, StepFailed
from fleet.host import layout
from fleet.host.actions import Action, Remove
from fleet.host.files import plan_file
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.host.session import Session, Step
from fleet.server import certs, tls
from fleet.server.health import check_app
from fleet.server.nginx import (
    apply_reload,
    apply_tested,
    mark_reload_pending,
    reload_pending,
    wait_workers_gone,
    worker_pids,
)
from fleet.server.rotation import (
    Change,
    Drained,
    current,
    load_drained,
    marked_down,
    plan_drained,
)
from fleet.server.services import is_active

FRONT_DIR = f"{layout.NGINX_DIR}/conf.d"
FRONT_PREFIX = "fleet-front-"


def front_file(name: str) -> str:
    return f"{FRONT_DIR}/{FRONT_PREFIX}{name}.conf"


def stale_files(session: Session, names: set[str]) -> list[Action]:
    actions: list[Action] = []
    for entry in session.host.listdir(FRONT_DIR):
        name = entry[len(FRONT_PREFIX):-len(".conf")]
        if entry.startswith(FRONT_PREFIX) and entry.endswith(".conf") and name not in names:
            actions.append(Remove(path=f"{FRONT_DIR}/{entry}", why="no longer balanced here"))
    return actions


def render_front(config: Config, host: Host, front: FrontApp, drained: Drained,
                 version: tuple[int, ...] | None) -> bytes:
    """The app's front file. Its HTTPS part depends only on the host's certificate files, so
    an apply, a drain and an undrain render it alike."""
    app = as_app(front)
    tls = certs.site_tls(host, app, version)
    return render("nginx-front.conf.j2", app=app, door=sites.door(config, app, tls),
                  upstreams=[(u, u in marked_down(front, drained)) for u in front.upstreams],
                  client_max_body_size=config.server.client_max_body_size, tls=tls,
                  acme_webroot=certs.ACME_WEBROOT if front.tls.mode == "acme" else None)


def converge_front(config: Config, session: Session, rollouts: dict[str, Rollout]) -> bool:
    """Write, test and reload the front's sites; each app's failure is that app's alone.
    Servers drained from rotation (fleet.server.rotation) are rendered `down`. Returns whether nginx
    was reloaded."""
    host = session.host
    changed = False
    stored = load_drained(host)
    drained = current(stored, config.front)
    if drained != stored:
        with session.step("rotation state") as step:
            session.apply(step, plan_drained(host, drained))
    version = certs.nginx_version(host) if config.front else None
    for front in config.front:
        rollout = rollouts.setdefault(front.name, Rollout(front.name))
        content = render_front(config, host, front, drained, version)
        try:
            with session.step("front site", front.name) as step:
                actions = (sites.plan_auth(host, as_app(front))
                           + plan_file(host, front_file(front.name), content, 0o644))
                changed |= apply_tested(session, step, actions, "this app's front site")
        except StepFailed as exc:
            rollout.failed, rollout.error = True, f"front site: {exc.step.error}"
    stale = stale_files(session, {f.name for f in config.front})
    if stale:
        with session.step("remove stale front sites") as step:
            mark_reload_pending(session)
            session.apply(step, stale)
            changed = True
    changed |= reload_pending(host)  # files a killed run wrote and never reloaded
    if changed:
        with session.step("nginx (front)") as step:
            reloads = is_active(host, "nginx") and not session.check
            before = worker_pids(host) if reloads else set()
            apply_reload(session, step, changed=True)
            # `nginx -s reload` returns before the new configuration answers: until the old
            # workers are gone one may still serve with the old upstreams, door controls or
            # drained servers. A run (or a drain) that returns has its front live.
            if before and not wait_workers_gone(host, before):
                step.notes.append("old nginx workers still run after 60 s (long requests)")
    return changed


def converge_front_tls(config: Config, session: Session, rollouts: dict[str, Rollout]) -> None:
    """ACME certificates for the balanced apps once their front site is live (the CA fetches
    the challenge through it); a new one switches that site to HTTPS. A refused certificate
    fails its step only: the app keeps being balanced over HTTP."""
    host = session.host
    fronts = {front.name: front for front in config.front}

    def ready(app: AppConfig) -> bool:
        rollout = rollouts.get(app.name)
        return rollout is not None and not rollout.failed

    def switch_site(app: AppConfig, step: Step) -> bool:
        drained = current(load_drained(host), config.front)
        content = render_front(config, host, fronts[app.name], drained,
                               certs.nginx_version(host))
        actions = plan_file(host, front_file(app.name), content, 0o644)
        return apply_tested(session, step, actions, "this app's HTTPS front site")

    views = [as_app(front) for front in config.front]
    tls.converge_tls(config, views, session, ready, switch_site, holders=views)


def rotate(config: Config, session: Session,
           update: Callable[[Drained], list[Change]]) -> list[Change]:
    """Change which servers are out of rotation, render, test and reload the front, and wait
    for the workers of the old configuration to finish: after a drain returns, no worker is
    left that could still send a new request to the drained server."""
    drained = current(load_drained(session.host), config.front)
    changes = update(drained)
    with session.step("rotation state") as step:
        session.apply(step, plan_drained(session.host, drained))
    converge_front(config, session, {})  # returns once the old workers are gone
    return changes


def check_front(config: Config, session: Session, rollouts: dict[str, Rollout]) -> None:
    """GET each app's health path through this front (Host = its first domain), over HTTPS
    when the front serves a certificate for it (port 80 then only redirects)."""
    for front in config.front:
        rollout = rollouts[front.name]
        if rollout.failed:
            rollout.health = "failed"
            continue
        try:
            with session.step("health", front.name) as step:
                app = as_app(front)
                result = check_app(app, https=certs.served_files(session.host, app) is not None)
                step.notes.append(f"{result.detail} through the front after "
                                  f"{result.elapsed:.1f} s")
                if not result.passed:
                    raise FleetError(f"GET {front.health.path} with Host {front.domains[0]} "
                                     f"through the front: {result.detail}")
            rollout.health = "passed"
        except StepFailed as exc:
            rollout.failed, rollout.health = True, "failed"
            rollout.error = f"health: {exc.step.error}"

"""An app's workers and jobs follow its web release: written, started or moved only once that
release serves through nginx, so a deploy that fails its gate leaves them where they were."""

from __future__ import annotations

from fleet.config.envfile import app_environment
from fleet.config.settings import AppConfig
from fleet.converge.rollout import Rollout
from fleet.host.actions import Unknown
from fleet.host.layout import AppPaths
from fleet.host.session import Session
from fleet.server import units
from fleet.server.release import app_dir


def converge_processes(session: Session, app: AppConfig, rollout: Rollout) -> None:
    """The units of the release that serves after this run (none left when the app has no
    workers or jobs any more). Apps that never had any get no step."""
    host = session.host
    configured = bool(app.workers or app.jobs)
    if not configured and not units.installed_files(host, app.name) \
            and not units.installed_links(host, app.name):
        return
    with session.step("workers and jobs", app.name) as step:
        if not configured:
            session.apply(step, units.plan_units(host, app, {}, {}, None))
            return
        if rollout.release is None or rollout.venv is None:  # a plan before the first clone
            session.apply(step, [Unknown(what="start the workers and jobs on the new release")])
            return
        env = units.env_text(app_environment(host, app))
        process = units.setup(app, rollout.release,
                              app_dir(AppPaths(app.name).release(rollout.release), app),
                              rollout.venv, env)
        version = units.systemd_version(host) if app.workers else 0
        session.apply(step, units.plan_units(host, app, units.desired_files(process, version),
                                             units.desired_links(app), env))

"""Everything an app needs before it takes traffic: its user and directories, its code at the
ref (or a rollback's pin), its release and venv, and the text of its vassal and nginx site."""

from __future__ import annotations

import contextlib
import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

from fleet.config.envfile import app_environment
from fleet.config.settings import APP_DEFAULTS, AppConfig, Config, PipSettings
from fleet.converge import sites
from fleet.converge.deploy import live_release
from fleet.converge.rollout import Rollout
from fleet.errors import CommandError, FleetError, StepFailed
from fleet.host import layout
from fleet.host.actions import Action, OwnTree, Remove, Unknown
from fleet.host.facts import FactsHost
from fleet.host.files import plan_dir
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.host.session import Session, Step
from fleet.masking import mask_urls
from fleet.server import certs, resource_limits
from fleet.server import repo as repo_res
from fleet.server.history import History
from fleet.server.release import (
    Dependencies,
    app_dir,
    check_repo_paths,
    dependencies,
    plan_release,
    plan_venv,
    python_version,
    release_id,
    twin_release,
    venv_seed,
)
from fleet.server.users import creates_user, plan_user


def guarded(rollout: Rollout, action) -> None:
    """Run one app's step; its failure marks that app failed and nothing else."""
    try:
        action()
    except StepFailed as exc:
        rollout.failed = True
        rollout.error = f"{exc.step.name}: {exc.step.error}"


def prepare_app(config: Config, app: AppConfig, session: Session, history: History,
                uv: str | None = None, advertised: str | None = None) -> Rollout:
    """User, directories, repo, release and venv: everything before the app takes traffic.
    `uv`: the uv binary that builds the venv (None: pip); `advertised`: the refs its remote
    advertised this run (git ls-remote, asked once for all apps), None when not asked."""
    host = session.host
    paths = AppPaths(app.name)
    rollout = Rollout(app.name, live=live_release(session, app.name))

    def steps() -> None:
        with session.step("user", app.name) as step:
            home_existed = host.state(paths.home) is not None
            actions = plan_user(host, app.owner, paths.home, app.name)
            session.apply(step, actions)
            rollout.user_recreated = creates_user(actions) and home_existed
        with session.step("app directories", app.name) as step:
            session.apply(step, app_dirs(host, app))
            if rollout.user_recreated:
                session.apply(step, reown(app))
                rollout.restart = f"user {app.owner} was re-created"
        if app.limited or app.timeout != APP_DEFAULTS.timeout \
                or host.state(resource_limits.slice_file(app.name)) is not None:
            with session.step("limits", app.name) as step:
                session.apply(step, resource_limits.plan_slice(host, app))
                controllers = resource_limits.cgroup_controllers(host)
                step.notes += [m.text for m in resource_limits.mechanisms(
                    app, controllers).values()]
        with session.step("repo", app.name) as step:
            rollout.commit = sync_repo(app, session, step, history, config.server.git_timeout,
                                       advertised)
        if rollout.commit is None:
            return
        rollout.env = render("app.env.j2", env=app_environment(host, app))
        env_changed = host.read(paths.env_file) not in (None, rollout.env)
        rollout.release = (release_id(rollout.commit) if app.tcp_address  # one address: no twin
                           else twin_release(rollout.commit, rollout.live, env_changed))
        with session.step("release", app.name) as step:
            session.apply(step, plan_release(host, app, rollout.commit, rollout.release))
        with session.step("virtualenv", app.name) as step:
            deps = dependencies(host, app, rollout.commit)
            version = python_version(host)
            rollout.venv = paths.venv(deps.venv_key(version))
            live = history.releases.get(rollout.live or "")
            seed = venv_seed(host, app, live.venv if live else None, rollout.venv,
                             version) if uv is not None else None
            build_app_venv(session, step, app, rollout, deps, config.server.pip, uv, seed)
            if rollout.release not in history.releases and not session.check:
                history.record(rollout.release, rollout.commit, venv=rollout.venv,
                               built=time.time())
        rollout.vassal = render_vassal(config, app, rollout)
        rollout.site = render_site(config, app, rollout.release,
                                   certs.site_tls(host, app, certs.nginx_version(host)))

    guarded(rollout, steps)
    return rollout


def build_app_venv(session: Session, step: Step, app: AppConfig, rollout: Rollout,
                   deps: Dependencies, pip: PipSettings, uv: str | None,
                   seed: str | None) -> None:
    """Build the release's venv; a failed build is removed (never reused). A build seeded
    from the previous venv that fails is tried once more from an empty venv in the same
    run: whatever in the copy made it fail, the fresh build is what it would have been
    without seeding, and its failure is the app's."""
    host = session.host
    assert rollout.commit and rollout.venv

    def attempt(seed: str | None) -> None:
        try:
            session.apply(step, plan_venv(host, app, rollout.commit or "", deps,
                                          rollout.venv or "", pip, rollout.release, uv, seed))
        except Exception:
            if not session.check and host.state(rollout.venv or "") is not None:
                session.act([Remove(path=rollout.venv or "", why="failed build")])
            raise

    if seed is None:
        attempt(None)
        return
    try:
        attempt(seed)
    except CommandError as exc:
        step.notes.append(f"the build seeded from {seed} failed ({exc}); "
                          "built again from an empty venv")
        attempt(None)


def reown(app: AppConfig) -> list[Action]:
    """A re-created user gets new ids: give it back its code's group and its data."""
    paths = AppPaths(app.name)
    actions: list[Action] = [
        OwnTree(path=path, owner=None, group=app.owner, modes="keep",
                why=f"back to group {app.owner}")
        for path in (paths.releases, paths.venvs)]
    for top in dict.fromkeys(item.split("/")[0] for item in app.persist):
        actions.append(OwnTree(path=f"{paths.shared}/{top}", owner=app.owner, group=app.owner,
                               modes="keep",
                               why=f"data back to {app.owner}"))
    return actions


def app_dirs(host: Host, app: AppConfig) -> list[Action]:
    paths = AppPaths(app.name)
    owner = app.owner
    actions = (plan_dir(host, paths.home, 0o751, "root", owner)
               + plan_dir(host, paths.releases, 0o751, "root", owner)
               + plan_dir(host, paths.venvs, 0o750, "root", owner)
               + plan_dir(host, paths.shared, 0o750, "root", owner))
    for item in app.persist:
        path = paths.shared
        for part in item.split("/"):
            path = f"{path}/{part}"
            actions += plan_dir(host, path, 0o700, owner, owner)
    return actions


def pinned(app: AppConfig, history: History) -> dict | None:
    """A rollback's pin, while the configured ref is still the one it pinned."""
    return history.pin if history.pin and history.pin.get("ref") == app.ref else None


GIT_WARMERS = 4  # apps whose git reads run at once (each is a short git process)


def warm_git(session: Session, apps: list[AppConfig], histories: dict[str, History],
             advertised: dict[str, str | None]) -> None:
    """Ask the git questions the app steps will ask of each unmoved mirror (its ref, the
    paths root acts on, its dependency files) for all apps at once, a few at a time: the
    FactsHost remembers the answers, and the steps then read them without waiting. Only a
    warm-up: whatever fails here is asked again, and reported, by the app's own step."""
    host = session.host
    if session.check or not isinstance(host, FactsHost) or len(apps) < 2:
        return

    def warm(app: AppConfig) -> None:
        repo = AppPaths(app.name).repo
        with contextlib.suppress(FleetError, OSError):
            if host.state(repo) is None:
                return
            wanted = (pinned(app, histories[app.name]) or {}).get("commit") or app.ref
            commit = repo_res.up_to_date(host, repo, wanted, advertised.get(app.repo))
            if commit is not None:
                check_repo_paths(host, app, commit)
                dependencies(host, app, commit)

    with ThreadPoolExecutor(max_workers=GIT_WARMERS) as pool:
        list(pool.map(warm, apps))


def sync_repo(app: AppConfig, session: Session, step: Step, history: History,
              timeout: float = repo_res.GIT_TIMEOUT, advertised: str | None = None) -> str | None:
    """Clone or fetch the mirror and resolve the ref (or a rollback's pin); a plan asks the
    remote instead of fetching. Credentials in the URL go to git through its environment.
    When the remote `advertised` the commit the mirror already has for the ref, no fetch."""
    host = session.host
    paths = AppPaths(app.name)
    existed = host.state(paths.repo) is not None
    session.apply(step, repo_res.plan_clone(host, app.repo, paths.repo, timeout))
    if existed or not session.check:  # the mirror holds all the code: root only, like releases
        session.apply(step, plan_dir(host, paths.repo, 0o700))
    pin = pinned(app, history)
    wanted = (pin or {}).get("commit") or app.ref
    if session.check:
        commit = (pin or {}).get("commit") or (
            repo_res.parse_ls_remote(advertised, app.ref) if advertised is not None
            else repo_res.remote_commit(host, app.repo, app.ref, timeout))
        if commit is None or not existed:
            session.apply(step, [Unknown(what=f"resolve {app.ref or 'HEAD'} of "
                                         f"{mask_urls(app.repo)}")])
            return None
        return commit
    commit = repo_res.up_to_date(host, paths.repo, wanted, advertised) if existed else None
    if existed and commit is None and (removed := repo_res.fetch(host, app.repo, paths.repo,
                                                                 timeout)):
            step.notes.append(f"removed {len(removed)} stale git lock(s) of a killed run: "
                              + ", ".join(p.removeprefix(paths.repo + "/") for p in removed))
    commit = commit or repo_res.resolve(host, paths.repo, wanted)
    step.notes.append(f"commit {commit[:12]}" + (" (pinned by a rollback)" if pin else ""))
    return commit


def render_vassal(config: Config, app: AppConfig, rollout: Rollout) -> bytes:
    assert rollout.release and rollout.venv and rollout.env is not None
    paths = AppPaths(app.name)
    return render(
        "vassal.ini.j2", app=app, release=rollout.release,
        env_digest=hashlib.sha256(rollout.env).hexdigest()[:16],
        chdir=app_dir(paths.release(rollout.release), app), venv=rollout.venv,
        thunder_lock=config.emperor.thunder_lock,
        socket=paths.serving_socket(rollout.release, app.on_demand),
        stats=paths.stats(rollout.release), nginx_group=layout.NGINX_USER,
        env_file=paths.env_file,
    )


def render_site(config: Config, app: AppConfig, release: str,
                tls: dict | None = None) -> bytes:
    """The app's server blocks: HTTPS (plus an HTTP redirect) when `tls` names its files;
    only its locations when another app holds the server block of its domains (sites.py)."""
    paths = AppPaths(app.name)
    root = app_dir(paths.release(release), app)
    static = sites.static_locations(app, root)
    holder = sites.holder_of(config, app)
    if holder.name != app.name:
        return render("nginx-locations.conf.j2", app=app, release=release, holder=holder.name,
                      socket=paths.serving_socket(release, app.on_demand), static=static,
                      door=sites.door(config, app, None))
    return render("nginx-site.conf.j2", app=app, release=release, door=sites.door(config, app, tls),
                  socket=paths.serving_socket(release, app.on_demand), static=static,
                  locations_dir=sites.locations_dir(app), access_file=layout.NGINX_ACCESS,
                  client_max_body_size=config.server.client_max_body_size, tls=tls,
                  acme_webroot=certs.ACME_WEBROOT if app.tls.mode == "acme" else None)

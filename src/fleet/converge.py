"""Bring the server to the desired state, step by step; the same code computes a plan.

Order matters: packages, then each app's user, repo, release and venv (an app's failure stops
only that app), then the run directories, the Emperor, each app's vassal, nginx (tested before
every reload), and last the health checks through nginx.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from fleet import layout
from fleet.actions import Action, Remove, Run, Unknown, WriteFile
from fleet.config import AppConfig, Config
from fleet.emperor import wait_for_vassal
from fleet.errors import FleetError
from fleet.executor import perform
from fleet.files import plan_absent, plan_dir, plan_file, plan_link
from fleet.health import check_app
from fleet.host import Host
from fleet.layout import AppPaths
from fleet.logs import app_log_tail
from fleet.render import render
from fleet.resources import repo as repo_res
from fleet.resources.packages import plan_packages
from fleet.resources.release import (
    app_dir,
    dependencies,
    plan_release,
    plan_venv,
    python_version,
    release_id,
)
from fleet.resources.services import plan_service
from fleet.resources.users import plan_user, user_exists
from fleet.session import Session, Step, StepFailed


@dataclass
class AppResult:
    name: str
    commit: str | None = None
    previous_commit: str | None = None
    health: str = "skipped"  # passed, failed, skipped, unknown
    failed: bool = False
    error: str | None = None
    vassal: bytes | None = None  # rendered ini, once its release and venv are ready
    env: bytes | None = None
    vassal_written: float | None = None  # mtime of the ini this run wrote

    def to_json(self, changed: bool) -> dict[str, object]:
        data: dict[str, object] = {"commit": self.commit, "health": self.health,
                                   "changed": changed}
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class Outcome:
    apps: dict[str, AppResult] = field(default_factory=dict)
    aborted: str | None = None


def converge(config: Config, session: Session, *, only: set[str] | None = None,
             health: bool = True) -> Outcome:
    """Converge every app (or just `only`), isolating each app's failure from the others."""
    outcome = Outcome()
    selected = [a for a in config.apps if only is None or a.name in only]
    try:
        with session.step("packages") as step:
            wanted = [*layout.BASE_PACKAGES, *config.server.packages]
            session.apply(step, plan_packages(session.host, wanted))
        with session.step("directories") as step:
            session.apply(step, plan_dir(session.host, layout.SRV, 0o755)
                          + plan_dir(session.host, layout.VASSALS_DIR, 0o755)
                          + plan_dir(session.host, layout.ENV_DIR, 0o700))
        for app in selected:
            outcome.apps[app.name] = prepare_app(config, app, session)
        with session.step("runtime directories") as step:
            converge_tmpfiles(config, session, step)
        with session.step("emperor") as step:
            converge_emperor(config, session, step)
    except StepFailed as exc:
        outcome.aborted = exc.step.error
        return outcome
    for app in selected:
        result = outcome.apps[app.name]
        if result.vassal is not None:
            activate_app(app, result, session)
        elif not result.failed:  # a plan that cannot know the commit yet
            with session.step("vassal", app.name) as step:
                session.apply(step, [Unknown("write the vassal of the new release")])
    try:
        converge_nginx(config, selected, outcome, session)
        if only is None:
            remove_stale(config, session)
    except StepFailed as exc:
        outcome.aborted = exc.step.error
        return outcome
    if health and not session.check:
        for app in selected:
            health_check(app, outcome.apps[app.name], session)
    return outcome


def fail(result: AppResult, exc: StepFailed) -> AppResult:
    result.failed = True
    result.error = f"{exc.step.name}: {exc.step.error}"
    return result


def prepare_app(config: Config, app: AppConfig, session: Session) -> AppResult:
    """User, directories, repo, release and venv: everything before the app takes traffic."""
    host = session.host
    paths = AppPaths(app.name)
    result = AppResult(app.name)
    try:
        with session.step("user", app.name) as step:
            session.apply(step, plan_user(host, app.owner, paths.home))
        with session.step("app directories", app.name) as step:
            session.apply(step, app_dirs(host, app))
        with session.step("repo", app.name) as step:
            result.commit = sync_repo(app, session, step)
            result.previous_commit = live_release(host, app)
        if result.commit is None:
            return result
        with session.step("release", app.name) as step:
            session.apply(step, plan_release(host, app, result.commit))
        with session.step("virtualenv", app.name) as step:
            deps = dependencies(host, app, result.commit)
            venv = paths.venv(deps.venv_key(python_version(host)))
            try:
                session.apply(step, plan_venv(host, app, result.commit, deps, venv,
                                              config.server.pip))
            except Exception:
                if not session.check and host.state(venv) is not None:
                    perform(host, Remove(venv, "failed build"))  # never reuse a half-built venv
                raise
        result.env = render("app.env.j2", env=app.env)
        result.vassal = render_vassal(config, app, result.commit, venv, result.env)
    except StepFailed as exc:
        return fail(result, exc)
    return result


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


def sync_repo(app: AppConfig, session: Session, step: Step) -> str | None:
    """Clone or fetch the mirror and resolve the ref; a plan asks the remote instead."""
    host = session.host
    paths = AppPaths(app.name)
    existed = host.state(paths.repo) is not None
    clone = repo_res.plan_clone(host, app.repo, paths.repo)
    session.apply(step, clone)
    if session.check:
        commit = repo_res.remote_commit(host, app.repo, app.ref)
        if commit is None or not existed:
            session.apply(step, [Unknown(f"resolve {app.ref or 'HEAD'} of {app.repo}")])
            return None
        return commit
    if existed:
        repo_res.fetch(host, paths.repo)
    commit = repo_res.resolve(host, paths.repo, app.ref)
    step.notes.append(f"commit {commit[:12]}")
    return commit


def live_release(host: Host, app: AppConfig) -> str | None:
    state = host.state(AppPaths(app.name).current)
    return state.target.rsplit("/", 1)[-1] if state and state.kind == "link" else None


def render_vassal(config: Config, app: AppConfig, commit: str, venv: str, env: bytes) -> bytes:
    paths = AppPaths(app.name)
    return render(
        "vassal.ini.j2", app=app, release=release_id(commit),
        env_digest=hashlib.sha256(env).hexdigest()[:16],
        chdir=app_dir(paths.release(release_id(commit)), app), venv=venv,
        thunder_lock=config.emperor.thunder_lock, socket=paths.socket, stats=paths.stats,
        nginx_group=layout.NGINX_USER, env_file=paths.env_file,
    )


def converge_tmpfiles(config: Config, session: Session, step: Step) -> None:
    host = session.host
    apps = [a for a in config.apps if session.check or user_exists(host, a.owner)]
    content = render("tmpfiles.conf.j2", run_root=layout.RUN, nginx_group=layout.NGINX_USER,
                     apps=[{"run_dir": AppPaths(a.name).run_dir, "owner": a.owner}
                           for a in apps])
    actions = plan_file(host, layout.TMPFILES, content, 0o644)
    drift = [a for a in apps
             if plan_dir(host, AppPaths(a.name).run_dir, 0o750, a.owner, layout.NGINX_USER)]
    if actions or drift:
        actions.append(Run(("systemd-tmpfiles", "--create", layout.TMPFILES),
                           "create runtime directories"))
    session.apply(step, actions)


def converge_emperor(config: Config, session: Session, step: Step) -> None:
    host = session.host
    unit = plan_file(host, layout.EMPEROR_UNIT,
                     render("systemd/fleet-emperor.service", uwsgi_bin=layout.UWSGI_BIN,
                            emperor_ini=layout.EMPEROR_INI), 0o644)
    ini = plan_file(host, layout.EMPEROR_INI,
                    render("emperor.ini.j2", vassals_dir=layout.VASSALS_DIR,
                           emperor_stats=layout.EMPEROR_STATS,
                           vassal_set=config.emperor.vassal_set), 0o644)
    session.apply(step, unit + ini)
    session.apply(step, plan_service(host, layout.EMPEROR_UNIT_NAME, changed=bool(ini),
                                     on_change="restart", unit_file_changed=bool(unit)))


def activate_app(app: AppConfig, result: AppResult, session: Session) -> None:
    """Write the app's environment and vassal: the Emperor (re)loads a vassal whose ini changed."""
    host = session.host
    paths = AppPaths(app.name)
    assert result.vassal is not None and result.env is not None and result.commit
    try:
        with session.step("vassal", app.name) as step:
            session.apply(step, plan_file(host, paths.env_file, result.env, 0o600, secret=True,
                                          why="environment"))
            if session.apply(step, plan_file(host, paths.vassal, result.vassal, 0o600,
                                             why="vassal")) and not session.check:
                state = host.state(paths.vassal)
                result.vassal_written = state.mtime if state else None
            session.apply(step, plan_link(host, paths.current,
                                          paths.release(release_id(result.commit))))
    except StepFailed as exc:
        fail(result, exc)


def nginx_test(session: Session) -> str | None:
    """nginx's complaint about the files as they are now, or None when they are valid."""
    if session.check:
        return None
    result = session.host.run(["nginx", "-t", "-q"], check=False)
    return None if result.ok else (result.stderr.strip().splitlines() or ["nginx -t failed"])[-1]


def revert(session: Session, actions: list[Action]) -> None:
    """Undo file writes that made nginx's configuration invalid."""
    for action in reversed(actions):
        if isinstance(action, WriteFile):
            if action.old is None:
                session.host.remove(action.path)
            else:
                session.host.write(action.path, action.old, action.mode, action.owner,
                                   action.group)


def converge_nginx(config: Config, selected: list[AppConfig], outcome: Outcome,
                   session: Session) -> None:
    host = session.host
    changed = False
    with session.step("nginx config") as step:
        actions = (plan_file(host, layout.NGINX_GLOBAL, render("nginx-fleet.conf.j2"), 0o644)
                   + plan_absent(host, layout.NGINX_DEFAULT_SITE, "fleet's catch-all replaces it"))
        changed |= session.apply(step, actions)
        problem = nginx_test(session) if actions else None
        if problem:
            revert(session, actions)
            raise FleetError(f"nginx rejected fleet's global config: {problem}")
    for app in selected:
        result = outcome.apps[app.name]
        if result.failed or result.commit is None:
            continue
        try:
            with session.step("nginx site", app.name) as step:
                actions = plan_file(host, AppPaths(app.name).nginx_site,
                                    render_site(config, app, result.commit), 0o644)
                changed |= session.apply(step, actions)
                problem = nginx_test(session) if actions else None
                if problem:
                    revert(session, actions)
                    raise FleetError(f"nginx rejected this app's site, kept the old one: "
                                       f"{problem}")
        except StepFailed as exc:
            fail(result, exc)
    with session.step("nginx") as step:
        session.apply(step, plan_service(host, "nginx", changed=changed))


def render_site(config: Config, app: AppConfig, commit: str) -> bytes:
    paths = AppPaths(app.name)
    root = app_dir(paths.release(release_id(commit)), app)
    static = [(url.rstrip("/") + "/", f"{root}/{directory}/") for url, directory in app.static]
    return render("nginx-site.conf.j2", app=app, socket=paths.socket, static=static,
                  client_max_body_size=config.server.client_max_body_size)


def remove_stale(config: Config, session: Session) -> None:
    """Vassals and sites of apps no longer configured: remove them (their data stays)."""
    host = session.host
    names = {a.name for a in config.apps}
    actions: list[Action] = []
    for entry in host.listdir(layout.VASSALS_DIR):
        if entry.endswith(".ini") and entry[:-4] not in names:
            actions.append(Remove(f"{layout.VASSALS_DIR}/{entry}", "app no longer configured"))
    for entry in host.listdir(layout.NGINX_SITES):
        if entry.startswith("fleet-") and entry.endswith(".conf") and entry[6:-5] not in names:
            actions.append(Remove(f"{layout.NGINX_SITES}/{entry}", "app no longer configured"))
    for entry in host.listdir(layout.ENV_DIR):
        if entry.endswith(".env") and entry[:-4] not in names:
            actions.append(Remove(f"{layout.ENV_DIR}/{entry}", "app no longer configured"))
    if not actions:
        return
    with session.step("remove stale apps") as step:
        session.apply(step, actions)
        if any(a.path.startswith(layout.NGINX_SITES) for a in actions if isinstance(a, Remove)):
            session.apply(step, plan_service(host, "nginx", changed=True))


def health_check(app: AppConfig, result: AppResult, session: Session) -> None:
    if result.failed or result.commit is None:
        result.health = "failed" if result.failed else "skipped"
        return
    try:
        with session.step("health", app.name) as step:
            if result.vassal_written is not None and not wait_for_vassal(
                    app.name, result.vassal_written, app.health.timeout):
                raise FleetError("the Emperor did not load the new vassal within "
                                 f"{app.health.timeout:.0f} s (see journalctl -u "
                                 f"{layout.EMPEROR_UNIT_NAME})")
            outcome = check_app(app)
            step.notes.append(f"{outcome.detail} after {outcome.elapsed:.1f} s")
            if not outcome.passed:
                step.log = app_log_tail(session.host, app.name) or None
                raise FleetError(f"GET {app.health.path} with Host {app.domains[0]}: "
                                   f"{outcome.detail} (waited {outcome.elapsed:.0f} s)")
        result.health = "passed"
    except StepFailed as exc:
        result.health = "failed"
        fail(result, exc)

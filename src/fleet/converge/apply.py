"""Bring the server to the desired state, step by step; the same code computes a plan.

Order matters: packages; each app's user, repo, release and venv (an app's failure stops only
that app); run directories and the Emperor; each app's vassal (a new release starts beside the
live one and must pass its health gate); nginx, tested before every reload; then, through
nginx, every app's health check, and the retirement of replaced releases.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from dataclasses import dataclass, field

from fleet.config.settings import AppConfig, Config
from fleet.converge import sites
from fleet.converge.backups import converge_backups
from fleet.converge.backups import packages as backup_packages
from fleet.converge.deploy import activate, live_release, record_failure, retire
from fleet.converge.front import check_front, converge_front, converge_front_tls
from fleet.converge.metrics import converge_metrics
from fleet.converge.notify import converge_notify
from fleet.converge.prepare import guarded, prepare_app, render_site, warm_git
from fleet.converge.processes import converge_processes
from fleet.converge.refs import RefChecks
from fleet.converge.rollout import Rollout
from fleet.converge.tcp_switch import restore_live
from fleet.errors import FleetError, StepFailed
from fleet.host import layout, pending
from fleet.host.actions import Action, Remove, Run, Unknown
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.layout import AppPaths
from fleet.host.lock import unless_held
from fleet.host.machine import (
    CONTAINED_ENV_DIR,
    Host,
    is_env_file_name,
    is_temp_name,
    is_trash_name,
)
from fleet.host.render import render
from fleet.host.session import Session, Step
from fleet.masking import mask_urls
from fleet.server import certs, resource_limits, tls, units
from fleet.server import uv as uv_tool
from fleet.server.backup import stale_staging
from fleet.server.emperor import is_sleeping, read_emperor, wait_for_vassal
from fleet.server.health import check_app
from fleet.server.history import History
from fleet.server.logs import app_log_tail
from fleet.server.nginx import (
    apply_reload,
    apply_tested,
    mark_reload_pending,
    reload_pending,
    wait_workers_gone,
    worker_pids,
)
from fleet.server.packages import plan_packages
from fleet.server.services import is_active, plan_service
from fleet.server.users import user_exists


@dataclass
class Outcome:
    apps: dict[str, Rollout] = field(default_factory=dict)
    aborted: str | None = None


def converge(config: Config, session: Session, *, only: set[str] | None = None,
             health: bool = True, refs: RefChecks | None = None) -> Outcome:
    """Converge every app (or just `only`), isolating each app's failure from the others.
    `refs`: the remotes' answers a caller asked for earlier (fleet.converge.refs)."""
    outcome = Outcome()
    selected = [a for a in config.apps if only is None or a.name in only]
    histories = {a.name: History.load(session.host, a.name) for a in selected}
    if refs is None:  # the network, while the steps go on
        refs = RefChecks.for_run(session.host, config, only=only, check=session.check)
    with contextlib.suppress(StepFailed):  # housekeeping: recorded as failed, apps go on
        sweep_temp_files(config, session)
    with contextlib.suppress(StepFailed):
        owed_daemon_reload(session)
    try:
        with session.step("packages") as step:
            wanted = [*layout.BASE_PACKAGES, *tls.packages(config), *backup_packages(config),
                      *config.server.packages]
            session.apply(step, plan_packages(session.host, wanted))
        with session.step("directories") as step:
            session.apply(step, plan_dir(session.host, layout.SRV, 0o755)
                          + plan_dir(session.host, layout.VASSALS_DIR, 0o755)
                          + plan_dir(session.host, layout.ENV_DIR, 0o700)
                          + plan_dir(session.host, layout.STATE_DIR, 0o755)
                          + plan_dir(session.host, layout.STATE_APPS, 0o700))
        uv = builder(config, session) if selected else None
        advertised = refs.answers()
        warm_git(session, selected, histories, advertised)
        for app in selected:
            outcome.apps[app.name] = prepare_app(config, app, session, histories[app.name], uv,
                                                 advertised.get(app.repo))
        with session.step("runtime directories") as step:
            lost_sockets = converge_tmpfiles(config, session, step)
            for name in lost_sockets & set(outcome.apps):
                outcome.apps[name].restart = "its run directory (and socket) had been removed"
        with session.step("emperor") as step:
            converge_emperor(config, session, step)
    except StepFailed as exc:
        outcome.aborted = exc.step.error
        return outcome
    for app in selected:
        rollout = outcome.apps[app.name]
        if rollout.vassal is not None:
            guarded(rollout, lambda a=app, r=rollout: activate(session, a, r))
        elif not rollout.failed:  # a plan that cannot know the commit yet
            with session.step("deploy", app.name) as step:
                session.apply(step, [Unknown(what="start and health-check the new release")])

    try:
        replaced_workers = converge_nginx(config, selected, outcome, session)
        converge_certificates(config, selected, outcome, session)
        if only is None:
            remove_stale(config, session)
            converge_backups(config, session)  # restic, password file, timer
            converge_front(config, session, outcome.apps)  # a front server's upstreams
            converge_front_tls(config, session, outcome.apps)  # and its HTTPS
            converge_notify(config, session)  # audit log rotation, notification units
            converge_metrics(config, session)  # the fleet-metrics timer ([server.metrics])
    except StepFailed as exc:
        outcome.aborted = exc.step.error
        return outcome
    if not session.check:
        # A swapped release, or a site whose door controls changed (its X-Fleet-Site marker
        # stays the same): once the old workers are gone, none answers with the old rules
        # (`fleet auth ... add` returning while an old worker still served without auth).
        if replaced_workers and any(r.swapped or r.previous_site != r.site
                                    for r in outcome.apps.values() if r.site is not None):
            wait_workers_gone(session.host, replaced_workers)
        for app in selected:
            finish_app(app, outcome.apps[app.name], session, histories[app.name], health)
        if only is None and health:
            check_front(config, session, outcome.apps)
    else:  # a plan: what would happen to each app's workers and jobs
        for app in selected:
            rollout = outcome.apps[app.name]
            if not rollout.failed:
                guarded(rollout, lambda a=app, r=rollout: converge_processes(session, a, r))
    return outcome


def builder(config: Config, session: Session) -> str | None:
    """The uv binary the apps' builds use, installed when missing; None: they use pip (the
    `builder` setting, or uv could not be installed: said in the step's notes)."""
    if config.server.builder != "uv":
        return None
    with session.step("uv") as step:
        try:
            # fleet runs on the server: its machine is this process's
            session.apply(step, uv_tool.plan_uv(session.host, config.server.pip,
                                                os.uname().machine))
        except (FleetError, OSError) as exc:
            session.act(uv_tool.cleanup(session.host))
            step.notes.append(f"uv {uv_tool.UV_VERSION} could not be installed, builds use pip: "
                              + mask_urls(str(exc).splitlines()[0] if str(exc) else repr(exc)))
            return None
    return uv_tool.UV_BIN


def written_dirs(host: Host, config: Config) -> list[str]:
    """Every directory fleet writes files or links into (through Host.write and symlink)."""
    dirs = [layout.ETC, layout.APPS_DIR, layout.ENV_DIR, layout.UWSGI_DIR, layout.VASSALS_DIR,
            layout.WORKERS_WANTS, layout.TIMERS_WANTS,
            posixpath.dirname(layout.EMPEROR_UNIT), posixpath.dirname(layout.TMPFILES),
            posixpath.dirname(layout.NGINX_GLOBAL), layout.NGINX_SITES,
            layout.NGINX_FLEET_DIR, layout.NGINX_LOCATIONS,
            *(f"{layout.NGINX_LOCATIONS}/{d}" for d in host.listdir(layout.NGINX_LOCATIONS)),
            layout.STATE_DIR, layout.STATE_APPS, certs.CERT_STATE,
            posixpath.dirname(layout.PENDING),
            posixpath.dirname(certs.DEPLOY_HOOK), posixpath.dirname(certs.CERTBOT_DROPIN),
            f"{certs.ACME_WEBROOT}/.well-known/acme-challenge",
            *(AppPaths(a.name).home for a in config.apps)]  # the `current` link
    return list(dict.fromkeys(dirs))


def trash_dirs(config: Config) -> list[str]:
    """Where Host.remove renames the directories it deletes (releases, venvs, purged apps)."""
    dirs = [layout.SRV]
    for app in config.apps:
        paths = AppPaths(app.name)
        dirs += [paths.releases, paths.venvs]
    return dirs


def sweep_temp_files(config: Config, session: Session) -> None:
    """Temp files of writes killed mid-way (SIGKILL, power loss): nginx and the Emperor ignore
    them, but they would pile up, and a killed contained run's env file holds secrets; and
    what a killed backup was copying (a copy of the apps' data). Runs under the lock, so no
    other run is writing them."""
    host = session.host
    actions: list[Action] = []
    for directory in written_dirs(host, config):
        for entry in host.listdir(directory):
            path = f"{directory}/{entry}"
            state = host.state(path) if is_temp_name(entry) else None
            if state is not None and state.kind in ("file", "link"):
                actions.append(Remove(path=path, why="left by an interrupted write"))
    for directory in trash_dirs(config):
        actions += [Remove(path=f"{directory}/{entry}", why="left by an interrupted delete")
                    for entry in host.listdir(directory) if is_trash_name(entry)]
    # A contained run killed with its secrets file still there (only root can read it).
    actions += [Remove(path=f"{CONTAINED_ENV_DIR}/{entry}", why="left by a killed build or init")
                for entry in host.listdir(CONTAINED_ENV_DIR) if is_env_file_name(entry)]
    # A killed backup's staging directories: only while no backup runs (its lock is free, and
    # held until they are gone, so none starts meanwhile); else the next run sweeps them.
    with unless_held(layout.BACKUP_LOCK) as no_backup:
        if no_backup:
            actions += stale_staging(host)
        if actions:
            with session.step("leftover temp files") as step:
                session.apply(step, actions)


def owed_daemon_reload(session: Session) -> None:
    """Unit files a killed run wrote and never told systemd about: read before any step
    starts or restarts a unit (the restarts it owed are each their own step's)."""
    actions = pending.daemon_reload(session.host)
    if actions:
        with session.step("systemd units") as step:
            session.apply(step, actions)


def converge_tmpfiles(config: Config, session: Session, step: Step) -> set[str]:
    """Run directories from tmpfiles.d. Returns the apps whose run directory was gone: their
    vassals lost their sockets with it and must be started anew."""
    host = session.host
    apps = [a for a in config.apps if session.check or user_exists(host, a.owner)]
    content = render("tmpfiles.conf.j2", run_root=layout.RUN, nginx_group=layout.NGINX_USER,
                     on_demand_dir=layout.ON_DEMAND_DIR,
                     apps=[{"run_dir": AppPaths(a.name).run_dir, "owner": a.owner}
                           for a in apps])
    actions = plan_file(host, layout.TMPFILES, content, 0o644)
    drift = [a for a in apps
             if plan_dir(host, AppPaths(a.name).run_dir, 0o750, a.owner, layout.NGINX_USER)]
    on_demand_drift = plan_dir(host, layout.ON_DEMAND_DIR, 0o750, "root", layout.NGINX_USER)
    if on_demand_drift:
        step.notes.append(ON_DEMAND_RECREATED)
    if actions or drift or on_demand_drift:
        actions.append(Run(argv=("systemd-tmpfiles", "--create", layout.TMPFILES),
                           why="create runtime directories"))
    session.apply(step, actions)
    return {a.name for a in drift if host.state(AppPaths(a.name).home) is not None
            and not session.check and host.listdir(AppPaths(a.name).run_dir) == []}


def converge_emperor(config: Config, session: Session, step: Step) -> None:
    host = session.host
    unit = plan_file(host, layout.EMPEROR_UNIT,
                     render("systemd/fleet-emperor.service", uwsgi_bin=layout.UWSGI_BIN,
                            emperor_ini=layout.EMPEROR_INI), 0o644)
    wrapper = resource_limits.plan_vassal_wrapper(host)
    ini = plan_file(host, layout.EMPEROR_INI,
                    render("emperor.ini.j2", vassals_dir=layout.VASSALS_DIR,
                           emperor_stats=layout.EMPEROR_STATS,
                           on_demand_extension=layout.ON_DEMAND_EXTENSION,
                           vassal_set=config.emperor.vassal_set,
                           vassal_wrapper=layout.VASSAL_WRAPPER if wrapper is not None
                           else None), 0o644)
    # One list: a run killed after the files and before the restart leaves it owed.
    restart = bool(ini) or pending.owes(host, layout.EMPEROR_UNIT_NAME)
    session.apply(step, unit + (wrapper or []) + ini
                  + plan_service(host, layout.EMPEROR_UNIT_NAME, changed=restart,
                                 on_change="restart", unit_file_changed=bool(unit)))


def render_global(host: Host, config: Config) -> bytes:
    """Shared settings; per-app rate limit zones live here (limit_req_zone is http-level,
    and an app under another's server block has no file at that level)."""
    version = certs.nginx_version(host)  # unknown before nginx is installed: assume current
    return render("nginx-fleet.conf.j2",
                  reject_handshake=version is None or version >= (1, 19, 4),
                  rate_limits=[(sites.zone(a)[len("fleet_"):], a.rate_limit,
                                sites.retry_after(a.rate_limit))
                               for a in (*config.apps, *config.front) if a.rate_limit])


def render_access(config: Config) -> bytes:
    """allow/deny for every app's server block: written even without a restriction, so that
    the sites can always include it and a change of accept_from is this one file."""
    return render("nginx-access.conf.j2", accept_from=config.server.accept_from,
                  loopback=layout.LOOPBACK)


def converge_certificates(config: Config, selected: list[AppConfig], outcome: Outcome,
                          session: Session) -> None:
    """ACME certificates once each app's HTTP site is live; a new one switches it to HTTPS.
    A refused certificate fails its step only: the app keeps serving over HTTP."""
    host = session.host

    def ready(app: AppConfig) -> bool:
        rollout = outcome.apps[app.name]
        return not rollout.failed and rollout.site is not None and rollout.release is not None

    def switch_site(app: AppConfig, step: Step) -> bool:
        rollout = outcome.apps[app.name]
        assert rollout.release
        rollout.site = render_site(config, app, rollout.release,
                                   certs.site_tls(host, app, certs.nginx_version(host)))
        actions = plan_file(host, AppPaths(app.name).nginx_site, rollout.site, 0o644)
        return apply_tested(session, step, actions, "this app's HTTPS site")

    tls.converge_tls(config, selected, session, ready, switch_site)


def converge_nginx(config: Config, selected: list[AppConfig], outcome: Outcome,
                   session: Session) -> set[int]:
    """Global files first (shared settings, accept_from), then each app's site, each tested.
    Returns the PIDs of the workers a reload replaced (they may still be finishing requests to
    the old upstreams)."""
    host = session.host
    changed = False
    with session.step("nginx config") as step:
        actions = (plan_file(host, layout.NGINX_GLOBAL, render_global(host, config), 0o644)
                   + plan_dir(host, layout.NGINX_FLEET_DIR, 0o755)
                   + plan_file(host, layout.NGINX_ACCESS, render_access(config), 0o644)
                   + plan_absent(host, layout.NGINX_DEFAULT_SITE, "fleet's catch-all replaces it"))
        changed |= apply_tested(session, step, actions, "fleet's global config")
    for app in selected:
        rollout = outcome.apps[app.name]
        if rollout.failed or rollout.site is None:
            continue

        def site_step(app: AppConfig = app, rollout: Rollout = rollout) -> None:
            nonlocal changed
            with session.step("nginx site", app.name) as step:
                site = sites.site_file(config, app)
                actions = (sites.plan_site_dirs(host, config, app)
                           + sites.plan_auth(host, app)
                           + plan_file(host, site, rollout.site or b"", 0o644)
                           + sites.moved_files(host, config, app))
                rollout.previous_site, rollout.site_file = host.read(site), site
                try:
                    changed |= apply_tested(session, step, actions, "this app's site")
                except FleetError:
                    if rollout.swapped:  # the gated release never takes traffic: stop it
                        session.act([Remove(path=AppPaths(app.name).vassal(rollout.release
                                                                          or ""))])
                    raise

        guarded(rollout, site_step)
    with session.step("nginx") as step:
        changed |= reload_pending(host)  # files a killed run wrote and never reloaded
        reloads = changed and is_active(host, "nginx")
        before = worker_pids(host) if reloads and not session.check else set()
        apply_reload(session, step, changed=changed)
    return before


def finish_app(app: AppConfig, rollout: Rollout, session: Session, history: History,
               health: bool) -> None:
    """Check the app through nginx; then retire what the new release replaced, or, if the
    switched release fails through nginx, switch back."""
    if rollout.failed or rollout.release is None:
        rollout.health = "failed" if rollout.failed else "skipped"
        record_failure(session, rollout, history)
        return
    if health and left_asleep(app, rollout, session):
        with session.step("health", app.name) as step:
            step.notes.append("asleep (on demand) and unchanged: not woken")
        rollout.health = "sleeping"
    elif health:
        guarded(rollout, lambda: health_check(app, rollout, session))
        rollout.health = "failed" if rollout.failed else "passed"
    if rollout.failed and rollout.swapped:
        switch_back(app, rollout, session)
        record_failure(session, rollout, history)
        return
    if rollout.swapped or live_release(session, app.name) != rollout.release:
        guarded(rollout, lambda: retire(session, app, rollout, history))
    if not rollout.failed:
        guarded(rollout, lambda: converge_processes(session, app, rollout))


# Server-wide steps whose changes cannot change how an unchanged app serves: an app's
# site is its own step, and nginx reloads only after `nginx -t` passed. A change in any
# other server-wide step (packages, the Emperor, nginx's own config, units) probes every app.
HARMLESS_STEPS = frozenset({"fleet config", "nginx", "uv", "leftover temp files",
                            "remove stale apps", "backups", "metrics", "audit and notifications"})


ON_DEMAND_RECREATED = "the on-demand sockets' directory was missing"


def may_touch(step: Step) -> bool:
    """Whether a server-wide step's change can change how an unchanged on-demand app serves.
    Runtime directories: only when the on-demand sockets' directory was recreated; an app
    whose own run directory was gone is restarted (its own steps change), and another app's
    new run directory changes nothing for it."""
    if step.name in HARMLESS_STEPS:
        return False
    if step.name == "runtime directories":
        return ON_DEMAND_RECREATED in step.notes
    return True


def left_asleep(app: AppConfig, rollout: Rollout, session: Session) -> bool:
    """An on-demand app that sleeps and that nothing in this run touched: a probe would only
    wake it (a cold start per app on every apply, bench/README.md "Density"), so its last
    passed check stands, as `fleet status` leaves it asleep too."""
    if not app.on_demand or rollout.swapped or rollout.vassal_written is not None \
            or rollout.release is None or rollout.release != rollout.live:
        return False
    if any(s.changed and (s.app == app.name or (s.app is None and may_touch(s)))
           for s in session.steps):
        return False
    emperor = read_emperor(session.host)
    if emperor is None:  # cannot tell asleep from failing: probe
        return False
    filename = AppPaths(app.name).vassal_id(rollout.release)
    if any(b.get("id") == filename for b in emperor.get("blacklist", [])):
        return False  # throttled after failed starts: not asleep, probe it
    entry = next((v for v in emperor.get("vassals", []) if v.get("id") == filename), None)
    return is_sleeping(session.host, filename, entry)


def health_check(app: AppConfig, rollout: Rollout, session: Session) -> None:
    with session.step("health", app.name) as step:
        vassal_id = AppPaths(app.name).vassal_id(rollout.release or "")
        if rollout.vassal_written is not None and not wait_for_vassal(
                session.host, vassal_id, rollout.vassal_written, app.health.timeout):
            raise FleetError(f"the Emperor did not reload {vassal_id} within "
                             f"{app.health.timeout:.0f} s")
        result = check_app(app, f"{app.name}@{rollout.release}",
                           https=certs.served_files(session.host, app) is not None)
        step.notes.append(f"{result.detail} after {result.elapsed:.1f} s")
        if not result.passed:
            step.log = app_log_tail(session.host, app.name) or None
            raise FleetError(f"GET {app.url(app.health.path)} with Host {app.domains[0]}: "
                             f"{result.detail} (waited {result.elapsed:.0f} s)")


def switch_back(app: AppConfig, rollout: Rollout, session: Session) -> None:
    """The new release passed on its socket but not through nginx: put the old site back."""
    paths = AppPaths(app.name)
    with session.step("switch back", app.name) as step:
        actions: list[Action] = []
        if rollout.previous_site is not None:
            actions += plan_file(session.host, rollout.site_file or paths.nginx_site,
                                 rollout.previous_site, 0o644)
            mark_reload_pending(session)
        actions.append(Remove(path=paths.vassal(rollout.release or ""), why="failed through nginx"))
        session.apply(step, actions)
        if rollout.previous_site is not None:
            apply_reload(session, step, changed=True)
        restore_live(session, step, app, rollout)  # a TCP app's previous vassal


def orphan_socket_files(host: Host, removed: set[str]) -> list[Action]:
    """On-demand .socket files whose vassal ini is gone (retired releases, removed apps)."""
    entries = set(host.listdir(layout.VASSALS_DIR))
    actions: list[Action] = []
    for entry in sorted(entries):
        ini = entry[: -len(layout.ON_DEMAND_EXTENSION)]
        if entry.endswith(".ini" + layout.ON_DEMAND_EXTENSION) and (
                ini not in entries or f"{layout.VASSALS_DIR}/{ini}" in removed):
            actions.append(Remove(path=f"{layout.VASSALS_DIR}/{entry}", why="its vassal is gone"))
    return actions


def remove_stale(config: Config, session: Session) -> None:
    """Vassals and sites of apps no longer configured: remove them (their data stays)."""
    host = session.host
    names = {a.name for a in config.apps}
    actions: list[Action] = []
    for entry in host.listdir(layout.VASSALS_DIR):
        owner = layout.vassal_app(entry)
        if entry.endswith(".ini") and (owner is None or owner[0] not in names):
            actions.append(Remove(path=f"{layout.VASSALS_DIR}/{entry}",
                                  why="app no longer configured"))
    actions += orphan_socket_files(host, {a.path for a in actions if isinstance(a, Remove)})
    for entry in host.listdir(layout.NGINX_SITES):
        if entry.startswith("fleet-") and entry.endswith(".conf") and entry[6:-5] not in names:
            actions.append(Remove(path=f"{layout.NGINX_SITES}/{entry}",
                                  why="app no longer configured"))
    actions += sites.stale_locations(host, config)
    actions += sites.stale_auth(host, config)
    for entry in host.listdir(layout.ENV_DIR):
        if entry.endswith((".env", ".units")) and entry.rsplit(".", 1)[0] not in names:
            actions.append(Remove(path=f"{layout.ENV_DIR}/{entry}", why="app no longer configured"))
    actions += units.plan_removed_apps(host, names)
    slices = resource_limits.stale_slices(host, names)
    actions += [Remove(path=path, why="app no longer configured") for path in slices]
    if slices and not any(isinstance(a, Run) and a.argv == ("systemctl", "daemon-reload")
                          for a in actions):
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    if not actions:
        return
    sites_go = any(a.path.startswith((layout.NGINX_SITES, layout.NGINX_LOCATIONS))
                   for a in actions if isinstance(a, Remove))
    with session.step("remove stale apps") as step:
        if sites_go:
            mark_reload_pending(session)
        session.apply(step, actions)
        if sites_go:
            apply_reload(session, step, changed=True)


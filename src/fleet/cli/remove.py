"""`fleet remove-app`: stop one app and remove what serves it, leaving every other app alone.

It composes converge's own pieces (the store, stale-file removal, tmpfiles) rather than
running a full converge, which would also fetch and deploy new commits of the other apps.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from fleet.cli.common import (
    JsonOpt,
    app,
    configured_app,
    local_host,
    locked_state,
    require_root,
)
from fleet.cli.converging import reporter
from fleet.cli.output import out, print_json
from fleet.cli.report import print_summary, summary_json
from fleet.config.settings import AppConfig
from fleet.config.store import Desired, plan_store, without_app
from fleet.converge.apply import Outcome, converge_tmpfiles, remove_stale
from fleet.errors import EXIT_FAILED, EXIT_OK, CommandError, FleetError, StepFailed
from fleet.host import layout
from fleet.host.actions import Action, Run
from fleet.host.files import plan_absent
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.host.poll import poll
from fleet.host.session import Session, Step
from fleet.server import certs
from fleet.server.backup_health import check_purge
from fleet.server.logs import nginx_logs
from fleet.server.nginx import wait_workers_gone, worker_pids
from fleet.server.release import build_cache
from fleet.server.status import read_emperor, vassal_owner
from fleet.server.users import account, is_fleet_account

STOP_TIMEOUT = 60.0
CERTBOT_BUSY = "Another instance of Certbot is already running"  # its timer, renewing


@app.command("remove-app")
def remove_app(
    name: Annotated[str, typer.Argument(help="The app to remove.")],
    purge: Annotated[bool, typer.Option(
        "--purge", help="Also delete its data (/srv/fleet/NAME), release history, user "
                        "and certificate.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="With --purge: delete its data even without a backup younger than "
                        "a day.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop an app and remove its vassal, nginx site, environment and config file.

    Its data directory (/srv/fleet/NAME), user and certificate stay unless --purge (adding
    the app again reuses the certificate). Other apps keep running untouched.

    --purge refuses while the app has data in its persist paths and no backup younger than
    a day (fleet backup NAME), unless --force.

    Example: fleet remove-app blog --purge
    """
    require_root()
    host = local_host()
    with locked_state(host) as desired:
        target = configured_app(desired.config, name)
        if purge and not force:
            check_purge(host, target, time.time())
        session = Session(host, reporter(json_out))
        outcome = Outcome()
        try:
            remove(session, desired, target, purge)
        except StepFailed as exc:
            outcome.aborted = exc.step.error
    cert = None if purge or not certs.has_lineage(host, name) else certs.lineage(name)
    kept = [] if purge else [AppPaths(name).home, f"user {target.owner}",
                             *([f"certificate {cert}"] if cert else [])]
    if json_out:
        print_json(summary_json(session, outcome, {"removed": name, "purged": purge,
                                                   "kept": kept}))
    else:
        print_summary(out, session, outcome)
        if outcome.aborted is None:
            out.print(f"Removed {name}." + (f" Kept {', '.join(kept[:-1])} and {kept[-1]} "
                                            f"(--purge deletes them)." if kept else ""))
            if cert:
                out.print(f"certbot keeps renewing {cert}: adding {name} again reuses it "
                          "without asking the CA.")
    failed = session.counts()["failed"] > 0 or outcome.aborted is not None
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def remove(session: Session, desired: Desired, target: AppConfig, purge: bool) -> None:
    """Vassal and site first (the app stops serving), its config file last, so an interrupted
    removal can simply be run again."""
    host = session.host
    remaining = without_app(desired, target.name)
    old_workers = worker_pids(host)
    remove_stale(remaining.config, session)
    with session.step("stop", target.name) as step:
        start = time.monotonic()
        wait_stopped(host, target.name, STOP_TIMEOUT)
        # `systemctl reload nginx` returns before the old workers stop taking connections:
        # until they exit, the removed site may still answer.
        if nginx_reloaded(session) and not wait_workers_gone(host, old_workers,
                                                                STOP_TIMEOUT):
            raise FleetError(f"nginx's old workers still run {STOP_TIMEOUT:.0f} s after "
                             "the reload")
        if time.monotonic() - start > 0.5:
            step.notes.append(f"stopped after {time.monotonic() - start:.1f} s")
    with session.step("runtime directories") as step:
        converge_tmpfiles(remaining.config, session, step)
    if purge:
        with session.step("purge", target.name) as step:
            wait_no_processes(host, target.owner, STOP_TIMEOUT)
            owned = fleet_user(host, target)
            session.apply(step, purge_actions(host, target))
            if owned:
                session.apply(step, purge_group(host, target.owner))
            purge_certificate(session, step, target)
    with session.step("fleet config") as step:
        session.apply(step, plan_store(host, remaining))


def nginx_reloaded(session: Session) -> bool:
    return any(isinstance(a, Run) and a.argv[1:2] == ("reload",) and a.argv[-1] == "nginx"
               for step in session.steps for a in step.actions)


def app_vassals(host: Host, name: str) -> list[str]:
    """The app's vassals the Emperor still runs (or None known when it does not answer)."""
    stats = read_emperor(host)
    if stats is None:
        return []
    return [v.get("id", "") for v in stats.get("vassals", [])
            if (vassal_owner(str(v.get("id", ""))) or ("", None))[0] == name]


def wait_stopped(host: Host, name: str, timeout: float) -> None:
    """Wait for the Emperor to notice the removed files (it rescans every 3 s) and stop the
    vassals."""
    running = poll(lambda: app_vassals(host, name), lambda running: not running, timeout=timeout,
                   interval=0.25)
    if running:
        raise FleetError(f"the Emperor still runs {', '.join(running)} "
                         f"{timeout:.0f} s after its file was removed")


def user_processes(host: Host, user: str) -> list[int]:
    """PIDs running as the user."""
    found = account(host, user)
    if found is None:
        return []
    return [p.pid for p in host.processes() if p.uid == found.uid]


def wait_no_processes(host: Host, user: str, timeout: float) -> None:
    """userdel refuses a user that still runs processes; workers may take a moment to exit."""
    pids = poll(lambda: user_processes(host, user), lambda pids: not pids, timeout=timeout,
                interval=0.25)
    if pids:
        raise FleetError(f"user {user} still runs processes {pids[:5]}: not deleting it")


def fleet_user(host: Host, app: AppConfig) -> bool:
    """Delete only a user fleet created for this app (its comment, or an earlier version's
    home and shell): never root, www-data or an account the operator made."""
    found = account(host, app.owner)
    return found is not None and is_fleet_account(found, app.name)


def purge_actions(host: Host, app: AppConfig) -> list[Action]:
    paths = AppPaths(app.name)
    actions: list[Action] = []
    for path in (paths.home, paths.state_file, f"{layout.STATE_DIR}/apps/{app.name}",
                 paths.run_dir, paths.env_file, *nginx_logs(app.name),
                 certs.state_file(app.name), build_cache(app)):
        actions += plan_absent(host, path, "purged")
    if fleet_user(host, app):
        actions.append(Run(argv=("userdel", app.owner), why=f"delete user {app.owner}"))
    return actions


def certificate_actions(host: Host, app: AppConfig) -> list[Action]:
    """certbot itself deletes the lineage (live, archive, renewal conf): otherwise its timer
    keeps renewing a certificate for an app that is gone."""
    if not certs.has_lineage(host, app.name):
        return []
    name = certs.lineage(app.name)
    return [Run(argv=("certbot", "delete", "--cert-name", name, "--non-interactive"),
                why=f"delete certificate {name}", timeout=300,
                retry_while=CERTBOT_BUSY, retry_for=300)]


def purge_certificate(session: Session, step: Step, app: AppConfig) -> None:
    try:
        session.apply(step, certificate_actions(session.host, app))
    except CommandError as exc:
        step.log = exc.output_tail()
        reason = certs.ca_message("\n".join((exc.stdout, exc.stderr)))
        raise FleetError(f"certbot could not delete certificate {certs.lineage(app.name)}: "
                         f"{reason}") from None


def purge_group(host: Host, group: str) -> list[Action]:
    """Debian's userdel deletes the user's own group too; elsewhere it may linger."""
    if host.run(["getent", "group", group], check=False).ok and \
            not host.run(["getent", "passwd", group], check=False).ok:
        return [Run(argv=("groupdel", group), why=f"delete group {group}")]
    return []

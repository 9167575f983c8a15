"""`fleet backup`, `fleet backups`, `fleet restore`: restic snapshots of the apps' data.

Backups take fleet's backup lock (/run/fleet.backup.lock), not the run lock: a long backup
does not hold up a deploy. A restore takes both: it changes the app (maintenance page,
workers stopped, data swapped, vassal reloaded) and nothing else may meanwhile.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Annotated, Any

import typer
from rich.table import Table

from fleet.cli.common import (
    LOCK_WAIT,
    JsonOpt,
    app,
    configured_app,
    local_host,
    locked_state,
    require_root,
)
from fleet.cli.output import err, out, print_json
from fleet.cli.report import SilentReporter
from fleet.config.settings import AppConfig, BackupSettings, Config
from fleet.config.store import Desired, desired_state, plan_store, with_app
from fleet.converge.apply import converge
from fleet.errors import EXIT_FAILED, EXIT_OK, ConfigError, FleetError
from fleet.host import layout
from fleet.host.executor import perform_all
from fleet.host.layout import AppPaths
from fleet.host.lock import run_lock
from fleet.host.machine import Host
from fleet.host.session import Session
from fleet.server import backup_restore as rs
from fleet.server import restic
from fleet.server.backup import back_up, stale_staging


def backup_settings(config: Config) -> BackupSettings:
    if config.server.backup is None:
        raise ConfigError(layout.SERVER_FILE, "server.backup",
                          "backups are not set up: add a [server.backup] table (empty: the "
                          "defaults) and run fleet apply")
    return config.server.backup


def backup_lock() -> Any:
    return run_lock(layout.BACKUP_LOCK, wait=LOCK_WAIT, on_wait=lambda m: err.print(m))


@app.command()
def backup(
    names: Annotated[list[str] | None, typer.Argument(
        help="The apps to back up (default: every app).", show_default=False)] = None,
    scheduled: Annotated[bool, typer.Option(
        "--scheduled", hidden=True,
        help="Run by fleet-backup.timer: every app, then the keep policy.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Snapshot each app's persist directories into the restic repository of [server.backup].

    SQLite databases are copied with SQLite's online backup API (consistent while the app
    writes); a manifest (commit, release, files with sha256) goes with them. Exit 1 if any
    app's backup failed; each attempt is recorded in /var/lib/fleet/backups/APP.json.

    Example: fleet backup shop
    """
    require_root()
    host = local_host()
    config = desired_state(host, None, None).config
    settings = backup_settings(config)
    apps = [configured_app(config, name) for name in names] if names else list(config.apps)
    with backup_lock():
        perform_all(host, stale_staging(host))  # what a killed backup left
        results = [back_up(host, settings, a) for a in apps]
        pruned = prune(host, settings, apps) if scheduled else {}
    failed = [r for r in results if not r.ok] or [n for n, e in pruned.items() if e]
    if json_out:
        print_json({"apps": {r.app: r.to_json() for r in results},
                    **({"forget": pruned} if scheduled else {}), "failed": len(failed)})
    else:
        for r in results:
            out.print(f"{r.app}: snapshot {r.snapshot}, {r.size} bytes of data, "
                      f"{r.added} bytes added, {r.seconds:.1f} s" if r.ok else
                      f"{r.app}: backup failed: {r.error}", markup=False, soft_wrap=True)
        for name, error in pruned.items():
            if error:
                out.print(f"{name}: keep policy failed: {error}", markup=False)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def prune(host: Host, settings: BackupSettings, apps: list[AppConfig]) -> dict[str, str | None]:
    """The keep policy per app: app -> None or the error."""
    errors: dict[str, str | None] = {}
    for a in apps:
        try:
            restic.forget(host, settings, a.name)
            errors[a.name] = None
        except FleetError as exc:
            errors[a.name] = restic.masked(settings, restic.error_line(exc))
    return errors


@app.command()
def backups(
    name: Annotated[str, typer.Argument(help="The app.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """List an app's snapshots, oldest first: id, time, data size and commit.

    Example: fleet backups shop --json
    """
    require_root()
    host = local_host()
    config = desired_state(host, None, None).config
    settings = backup_settings(config)
    configured_app(config, name)
    found = restic.snapshots(host, settings, name)
    if json_out:
        print_json({"app": name, "snapshots": [s.to_json() for s in found]})
        return
    table = Table("snapshot", "time", "bytes", "commit", box=None)
    for s in found:
        table.add_row(s.short_id, s.time[:19].replace("T", " "),
                      "-" if s.size is None else str(s.size), s.commit or "-")
    out.print(table if found else f"{name}: no snapshots")


@app.command()
def restore(
    name: Annotated[str, typer.Argument(help="The app.", show_default=False)],
    snapshot: Annotated[str | None, typer.Argument(
        help="The snapshot id (fleet backups NAME lists them; default: the latest).",
        show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Restore an app's data from a snapshot, or put everything back as it was.

    The snapshot is fetched and checked against its manifest first; then the app's maintenance
    page goes on and its workers and jobs stop, its data is moved aside, the snapshot's moved
    in, each SQLite file passes PRAGMA integrity_check, and the app reloads through its health
    check. Any failure puts the moved-aside data back (exit 1). On a new server: fleet apply,
    then fleet restore each app (README "Disaster recovery").

    Example: fleet restore shop
    """
    require_root()
    host = local_host()
    started = time.time()
    with backup_lock(), locked_state(host) as desired:
        target = configured_app(desired.config, name)
        settings = backup_settings(desired.config)
        chosen = rs.pick_snapshot(host, settings, name, snapshot)
        try:
            restored = rs.fetch(host, settings, target, chosen.id)
        except FleetError:
            rs.clean_up(host, name)
            raise
        try:
            swap(host, desired, target, restored)
        finally:
            rs.clean_up(host, name)
    result = {"app": name, "snapshot": chosen.short_id, "time": chosen.time,
              "commit": chosen.commit, "seconds": round(time.time() - started, 2)}
    if json_out:
        print_json({**result, "result": "restored"})
    else:
        out.print(f"{name}: restored snapshot {chosen.short_id} of {chosen.time[:19]} "
                  f"({result['seconds']} s)", markup=False)


def swap(host: Host, desired: Desired, target: AppConfig, restored: rs.Restored) -> None:
    """Maintenance on, workers stopped, data swapped, checked, app reloaded; on any failure
    the old data back and the app serving again; maintenance as it was, workers started."""
    was_on = target.maintenance
    if not was_on:
        set_maintenance(host, desired, target.name, True)
    stop_processes(host, target)
    try:
        try:
            rs.swap_in(host, target, restored)
            rs.check_databases(host, target, restored)
            rs.restart(host, target)
        except (FleetError, OSError) as exc:
            with suppress(FleetError, OSError):
                rs.roll_back(host, target, restored)
                rs.restart(host, target)
            raise rs.RestoreFailed(f"restore of {target.name} failed, its data is as before: "
                                   f"{exc}") from None
        rs.clean_up(host, target.name, restored.asides.values())
    finally:
        start_processes(host, target)
        if not was_on:
            set_maintenance(host, desired, target.name, False)


def set_maintenance(host: Host, desired: Desired, name: str, on: bool) -> None:
    """The `fleet maintenance` change, converged quietly (this command prints its own result).
    Without the health step: an app whose data is broken (why it is being restored) must
    still get its maintenance page; restore checks the app's health itself after the swap."""
    raw = dict(desired.apps_raw[name])
    raw["maintenance"] = on
    changed = with_app(desired, name, raw, f"restore {name}")
    session = Session(host, SilentReporter())
    session.act(plan_store(host, changed))
    outcome = converge(changed.config, session, only={name}, health=False)
    if outcome.aborted or session.counts()["failed"]:
        raise FleetError(f"maintenance {'on' if on else 'off'} for {name} did not converge "
                         f"({outcome.aborted or 'a step failed'}); see fleet status")


def stop_processes(host: Host, target: AppConfig) -> None:
    """Workers and jobs (timers too: no job starts meanwhile) of the app."""
    if target.workers or target.jobs:
        host.run(["systemctl", "stop", f"{AppPaths(target.name).unit_prefix}*"], check=False)


def start_processes(host: Host, target: AppConfig) -> None:
    paths = AppPaths(target.name)
    units = [paths.worker_instance(w.name, i) for w in target.workers
             for i in range(1, w.processes + 1)]
    units += [paths.job_unit(j.name, "timer") for j in target.jobs]
    if units:
        host.run(["systemctl", "start", *units], check=False)

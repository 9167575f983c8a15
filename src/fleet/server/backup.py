"""`fleet backup`: one restic snapshot per app of its persist directories plus a manifest.

The copy is made by the app's own user, contained (templates/backup-copy.py): root never
opens a file the app controls. It writes into a fresh directory only that user can reach
(its name is random, its parent root's and traverse-only); once the contained run (and its
whole cgroup) has ended, root takes the tree over (fd-based chown, links not followed), moves
it to a fixed root-only path and snapshots it with restic. Every attempt, failed or not, is
recorded in /var/lib/fleet/backups/APP.json (backup_state).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from fleet.config.settings import AppConfig, BackupSettings
from fleet.errors import FleetError
from fleet.host.actions import Action, Remove, SetAttrs
from fleet.host.executor import perform_all
from fleet.host.files import plan_dir
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.host.render import data_dir
from fleet.server import backup_state, restic
from fleet.server.history import History
from fleet.version import build_id

STAGING_ROOT = "/var/lib/fleet/backup-staging"
MANIFEST = "manifest.json"
COPY_TIMEOUT = 6 * 3600.0


@dataclass
class BackupResult:
    app: str
    ok: bool
    snapshot: str | None = None
    error: str | None = None
    size: int | None = None  # bytes of the app's data in the snapshot
    added: int | None = None  # bytes the repository grew by
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, "result": "ok" if self.ok else "failed",
                "snapshot": self.snapshot, "error": self.error, "bytes": self.size,
                "added": self.added, "seconds": round(self.seconds, 2)}


def script(name: str) -> str:
    return (data_dir("templates") / name).read_text()


def persist_tops(app: AppConfig) -> list[str]:
    """The top directories of the app's persist items (restored and moved as units)."""
    return list(dict.fromkeys(item.split("/")[0] for item in app.persist))


def staged_path(app: str) -> str:
    return f"{STAGING_ROOT}/{app}"


def live_release(host: Host, app: str) -> str | None:
    state = host.state(AppPaths(app).current)
    return state.target.rsplit("/", 1)[-1] if state and state.kind == "link" else None


def discard(host: Host, path: str) -> list[Action]:
    """Delete a staging directory: first made root's and 0700 (through a file descriptor, never
    following a link), so a copy still running as the app's user can reach no further into
    it; then removed (renamed to a trash name, deleted without following a link inside)."""
    state = host.state(path)
    if state is None:
        return []
    actions: list[Action] = []
    if state.kind == "dir" and (state.owner, state.group, state.mode) != ("root", "root", 0o700):
        actions.append(SetAttrs(path=path, mode=0o700, owner="root", group="root"))
    return [*actions, Remove(path=path, why="left by a killed backup")]


def stale_staging(host: Host) -> list[Action]:
    """Everything in STAGING_ROOT, for whoever holds the backup lock: no backup runs, so any
    entry is a killed one's (a copy the app's user was writing, a tree root took over, the
    trash of a delete). Only root creates entries there (its parent is root's, 0711)."""
    return [a for entry in host.listdir(STAGING_ROOT)
            for a in discard(host, f"{STAGING_ROOT}/{entry}")]


def stage(host: Host, app: AppConfig) -> dict[str, Any]:
    """Copy the app's data (as the app's user) into staged_path(app), root-only; the manifest."""
    perform_all(host, plan_dir(host, STAGING_ROOT, 0o711))
    work = f"{STAGING_ROOT}/.{app.name}-{os.urandom(8).hex()}"
    host.mkdir(work, 0o700, app.owner, app.owner)
    shared = AppPaths(app.name).shared
    # SQLite readers of a WAL database write its -shm file: the app's own data stays writable
    # to its own user, as it is to the app.
    data = [f"{shared}/{top}" for top in persist_tops(app)
            if host.state(f"{shared}/{top}") is not None]
    try:
        result = host.run_contained(
            ["/usr/bin/python3", "-I", "-c", script("backup-copy.py"), shared,
             f"{work}/data", *persist_tops(app)],
            user=app.owner, writable=[work, *data], timeout=COPY_TIMEOUT)
        host.chown(work, 0o700, "root", "root")  # the app's user can no longer reach in
        host.own_tree(work, "root", "root", "keep")
        try:
            listing = json.loads(result.stdout)
        except ValueError:
            raise FleetError("the data copy printed no file list") from None
        target = staged_path(app.name)
        if host.state(target) is not None:
            host.remove(target)
        host.run(["mv", "-T", "--", work, target])
    except BaseException:
        perform_all(host, discard(host, work))
        raise
    release = live_release(host, app.name)
    record = History.load(host, app.name).releases.get(release or "")
    manifest = {"app": app.name, "release": release, "commit": record.commit if record else None,
                "time": time.time(), "fleet_version": build_id(),
                "persist": persist_tops(app), **listing}
    host.write(f"{target}/{MANIFEST}", (json.dumps(manifest, indent=1) + "\n").encode(), 0o600,
               "root", "root")
    return manifest


def back_up(host: Host, settings: BackupSettings, app: AppConfig, *,
            clock: Any = time) -> BackupResult:
    """Stage, snapshot, record; a failure is recorded and returned, never raised."""
    started = clock.time()
    result = BackupResult(app.name, ok=False)
    try:
        manifest = stage(host, app)
        result.size = sum(int(f["size"]) for f in manifest["files"])
        restic.ensure_repository(host, settings)
        commit = manifest["commit"][:12] if manifest["commit"] else None
        result.snapshot, result.added = restic.backup(host, settings, app.name,
                                                      staged_path(app.name), commit, result.size)
        result.ok = True
    except (FleetError, OSError, ValueError, KeyError) as exc:
        result.error = restic.masked(settings, restic.error_line(exc))
    finally:
        if host.state(staged_path(app.name)) is not None:
            host.remove(staged_path(app.name))
    result.seconds = clock.time() - started
    backup_state.record(host, app.name, started, snapshot=result.snapshot, error=result.error,
                        size=result.size)
    return result

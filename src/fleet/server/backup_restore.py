"""`fleet restore`: the server-side steps, each undoable.

fetch() restores a snapshot into a root-only directory in the app's home (same filesystem as
its data, so moving is a rename) and checks every file against the manifest's sha256, before
the app is touched. swap_in() moves each persist directory aside (never deleted until the
restore succeeded) and the restored one into place with the app's ownership;
check_databases() runs PRAGMA integrity_check as the app's user, contained; restart() reloads
the vassal and waits for its health check. Any failure: roll_back() puts the moved-aside data
back. The maintenance page and the workers are the caller's (cli/backup.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fleet.config.settings import AppConfig, BackupSettings
from fleet.errors import FleetError
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server import certs, restic
from fleet.server.backup import MANIFEST, persist_tops, script, staged_path
from fleet.server.emperor import wait_for_vassal
from fleet.server.health import check_app

ASIDE_PREFIX = ".fleet-aside-"
RESTORE_DIR = ".fleet-restore"
HASH_BATCH = 200


class RestoreFailed(FleetError):
    """A restore step failed; the message names the step."""


@dataclass
class Restored:
    app: str
    snapshot: str
    data: str  # the restored data/ directory: data/TOP/...
    manifest: dict[str, Any]
    swapped: list[str] = field(default_factory=list)  # tops moved into place
    asides: dict[str, str] = field(default_factory=dict)  # top -> where its old data went


def restore_dir(app: str) -> str:
    return f"{AppPaths(app).home}/{RESTORE_DIR}"


def pick_snapshot(host: Host, settings: BackupSettings, app: str,
                  wanted: str | None) -> restic.Snapshot:
    found = restic.snapshots(host, settings, app)
    if not found:
        where = restic.masked(settings, settings.repository)
        raise RestoreFailed(f"no snapshot of {app} in {where}")
    if wanted is None:
        return found[-1]
    matches = [s for s in found if s.id.startswith(wanted) or s.short_id == wanted]
    if len(matches) != 1:
        raise RestoreFailed(f"{wanted!r} is not a snapshot of {app} (fleet backups {app} "
                            "lists them)")
    return matches[0]


def fetch(host: Host, settings: BackupSettings, app: AppConfig, snapshot: str) -> Restored:
    """restic restore into the app's home, then every file checked against the manifest."""
    target = restore_dir(app.name)
    if host.state(target) is not None:
        host.remove(target)
    host.mkdir(target, 0o700, "root", "root")
    try:
        restic.restore(host, settings, snapshot, target)
    except FleetError as exc:
        raise RestoreFailed(f"restic restore of {snapshot} failed: {exc}") from None
    base = target + staged_path(app.name)
    raw = host.read(f"{base}/{MANIFEST}")
    try:
        manifest = json.loads(raw or b"")
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("app") != app.name:
        raise RestoreFailed(f"snapshot {snapshot} has no manifest of {app.name}")
    restored = Restored(app.name, snapshot, f"{base}/data", manifest)
    verify(host, restored)
    return restored


def verify(host: Host, restored: Restored) -> None:
    """Each manifest file is a regular file (no link on its way) with its recorded sha256."""
    files = restored.manifest.get("files") or []
    for entry in restored.manifest.get("dirs") or []:
        state = host.state(f"{restored.data}/{entry}")
        if state is None or state.kind != "dir":
            raise RestoreFailed(f"snapshot {restored.snapshot}: directory {entry} is missing")
    for entry in files:
        state = host.state(f"{restored.data}/{entry['path']}")
        if state is None or state.kind != "file":
            raise RestoreFailed(f"snapshot {restored.snapshot}: {entry['path']} is missing")
    for start in range(0, len(files), HASH_BATCH):
        batch = files[start:start + HASH_BATCH]
        result = host.run(["sha256sum", "--", *[f["path"] for f in batch]], cwd=restored.data,
                          check=False, timeout=3600)
        sums = {}
        for line in result.stdout.splitlines():
            digest, _, name = line.partition("  ")
            sums[name] = digest
        for entry in batch:
            if sums.get(entry["path"]) != entry["sha256"]:
                raise RestoreFailed(f"snapshot {restored.snapshot}: {entry['path']} does not "
                                    "match its sha256 in the manifest")


def swap_in(host: Host, app: AppConfig, restored: Restored) -> None:
    """Move each persist directory aside and the restored one into place, owned by the app."""
    shared = AppPaths(app.name).shared
    tops = persist_tops(app)
    for top in tops:
        if host.state(f"{shared}/{ASIDE_PREFIX}{top}") is not None:
            raise RestoreFailed(f"{shared}/{ASIDE_PREFIX}{top} is left from an interrupted "
                                "restore: move it away (it may be the only copy) and retry")
    for top in tops:
        live, aside, new = f"{shared}/{top}", f"{shared}/{ASIDE_PREFIX}{top}", \
            f"{restored.data}/{top}"
        if host.state(live) is not None:
            host.run(["mv", "-T", "--", live, aside])
            restored.asides[top] = aside
        if host.state(new) is None:
            host.mkdir(new, 0o700, "root", "root")
        host.run(["mv", "-T", "--", new, live])
        restored.swapped.append(top)
        host.own_tree(live, app.owner, app.owner, "keep")


def check_databases(host: Host, app: AppConfig, restored: Restored) -> None:
    shared = AppPaths(app.name).shared
    databases = [f"{shared}/{f['path']}" for f in restored.manifest.get("files") or []
                 if f.get("sqlite")]
    if not databases:
        return
    try:
        result = host.run_contained(
            ["/usr/bin/python3", "-I", "-c", script("backup-check.py"), *databases],
            user=app.owner, writable=[f"{shared}/{top}" for top in persist_tops(app)],
            timeout=3600)
        verdicts = json.loads(result.stdout)
    except (FleetError, ValueError) as exc:
        raise RestoreFailed(f"integrity_check could not run: {exc}") from None
    for path, verdict in sorted(verdicts.items()):
        if verdict != "ok":
            raise RestoreFailed(f"integrity_check of {path}: {verdict}")


def restart(host: Host, app: AppConfig) -> None:
    """Reload the live vassal (the app reopens its files) and wait for its health check."""
    paths = AppPaths(app.name)
    state = host.state(paths.current)
    release = state.target.rsplit("/", 1)[-1] if state and state.kind == "link" else None
    if release is None:
        return  # never deployed: nothing serves
    vassal = paths.vassal(release)
    if not app.on_demand and host.state(vassal) is not None:
        host.run(["touch", "--no-dereference", vassal])
        written = host.state(vassal)
        if written and not wait_for_vassal(host, paths.vassal_id(release), written.mtime,
                                           app.health.timeout):
            raise RestoreFailed(f"the Emperor did not reload {paths.vassal_id(release)}")
    result = check_app(app, f"{app.name}@{release}",
                       https=certs.served_files(host, app) is not None)
    if not result.passed:
        raise RestoreFailed(f"health check after the restore: {result.detail}")


def roll_back(host: Host, app: AppConfig, restored: Restored) -> None:
    """Put every moved-aside directory back (the restored one is deleted)."""
    shared = AppPaths(app.name).shared
    for top in reversed(restored.swapped):
        if host.state(f"{shared}/{top}") is not None:
            host.remove(f"{shared}/{top}")
    for top, aside in restored.asides.items():
        host.run(["mv", "-T", "--", aside, f"{shared}/{top}"])
    restored.swapped.clear()
    restored.asides.clear()


def clean_up(host: Host, app: str, asides: Iterable[str] = ()) -> None:
    for path in [*asides, restore_dir(app)]:
        if host.state(path) is not None:
            host.remove(path)

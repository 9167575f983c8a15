"""/var/lib/fleet/backups/APP.json: the result of an app's last backup attempt.

Read by `fleet status`, `fleet check`, `remove-app --purge` and by other tools (metrics,
notifications): its shape is an interface, kept exactly:
{"app", "last_attempt", "last_result": "ok"|"failed", "last_success", "snapshot", "error",
"bytes"}.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from fleet.host.executor import perform_all
from fleet.host.files import plan_dir
from fleet.host.machine import Host

STATE_DIR = "/var/lib/fleet/backups"


def state_path(app: str) -> str:
    return f"{STATE_DIR}/{app}.json"


@dataclass
class BackupState:
    app: str
    last_attempt: float | None = None
    last_result: str | None = None  # "ok" or "failed"
    last_success: float | None = None
    snapshot: str | None = None
    error: str | None = None
    bytes: int | None = None


def load(host: Host, app: str) -> BackupState | None:
    raw = host.read(state_path(app))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        known = set(BackupState.__dataclass_fields__)
        return BackupState(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError):
        return None  # damaged: as if never backed up (status says so)


def record(host: Host, app: str, now: float, *, snapshot: str | None, error: str | None,
           size: int | None) -> BackupState:
    """Write the attempt's outcome (atomically, root-only); a failure keeps the last success."""
    previous = load(host, app) or BackupState(app)
    state = BackupState(
        app=app, last_attempt=now, last_result="failed" if error else "ok",
        last_success=previous.last_success if error else now,
        snapshot=previous.snapshot if error else snapshot, error=error,
        bytes=previous.bytes if error else size)
    perform_all(host, plan_dir(host, STATE_DIR, 0o700))
    host.write(state_path(app), (json.dumps(asdict(state), indent=1) + "\n").encode(), 0o600,
               "root", "root")
    return state

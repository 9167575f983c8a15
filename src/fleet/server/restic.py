"""Running restic: its environment (repository, password file, the operator's extra settings)
and the few subcommands fleet uses, with their JSON parsed here.

Secrets reach restic through its environment only, never argv; every error line is masked
(the extra environment's values and any credentials in the repository URL). Checked against
Debian 12's restic 0.14: `backup --json --host --tag`, `snapshots --json --tag`,
`forget --tag --group-by --keep-* --prune`, `restore ID --target`, `init`, `cat config`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.config.settings import BackupSettings
from fleet.errors import CommandError, FleetError
from fleet.host.actions import MASK, Action
from fleet.host.files import plan_dir, plan_file
from fleet.host.machine import Host
from fleet.masking import mask_urls

# One host name for every snapshot: a fresh server restores another's snapshots by tag.
SNAPSHOT_HOST = "fleet"
APP_TAG = "fleet-app="
COMMIT_TAG = "commit="
SIZE_TAG = "size="
RESTIC_TIMEOUT = 6 * 3600.0


class ResticError(FleetError):
    """restic failed; the message is one masked line, `output` all it said (masked)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    app: str
    commit: str | None
    size: int | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.short_id, "time": self.time, "commit": self.commit,
                "size": self.size}


def environment(settings: BackupSettings) -> dict[str, str]:
    return {**dict(settings.env), "RESTIC_REPOSITORY": settings.repository,
            "RESTIC_PASSWORD_FILE": settings.password_file,
            "RESTIC_CACHE_DIR": "/var/cache/fleet/restic"}


def masked(settings: BackupSettings, text: str) -> str:
    for _key, value in settings.env:
        if value:
            text = text.replace(value, MASK)
    return mask_urls(text)


def run(host: Host, settings: BackupSettings, args: Sequence[str],
        timeout: float = RESTIC_TIMEOUT) -> str:
    """restic ARGS with the repository's environment; its stdout, or a ResticError naming the
    last line restic printed."""
    result = host.run(["restic", *args], check=False, env=environment(settings), timeout=timeout)
    if not result.ok:
        output = result.stderr.strip() or result.stdout.strip()
        lines = [line for line in output.splitlines() if line.strip()]
        # restic ends some errors with a question and the location: the Fatal line says why.
        fatal = [line for line in lines if line.startswith("Fatal:")]
        detail = (fatal or lines or [f"exit {result.returncode}"])[-1]
        raise ResticError(masked(settings, f"restic {args[0]}: {detail}"),
                          masked(settings, output))
    return result.stdout


def plan_password(host: Host, settings: BackupSettings) -> list[Action]:
    """A root-only password file with a random password, only when there is none: an existing
    one (the operator's copy, put back on a new server) is never replaced."""
    if host.state(settings.password_file) is not None:
        return []
    from secrets import token_urlsafe  # here only: most runs make no password

    directory = settings.password_file.rsplit("/", 1)[0] or "/"
    return (plan_dir(host, directory, 0o700) if host.state(directory) is None else []) + \
        plan_file(host, settings.password_file, (token_urlsafe(32) + "\n").encode(),
                  0o600, secret=True, why="restic repository password (keep a copy!)")


def ensure_repository(host: Host, settings: BackupSettings) -> bool:
    """Initialise the repository when there is none; True when it was made."""
    try:
        run(host, settings, ["cat", "config"], timeout=300)
        return False
    except ResticError as exc:
        if "Is there a repository" not in exc.output:
            raise
    run(host, settings, ["init"], timeout=300)
    return True


def backup(host: Host, settings: BackupSettings, app: str, path: str, commit: str | None,
           size: int) -> tuple[str, int | None]:
    """Snapshot `path`; (short snapshot id, bytes added to the repository)."""
    tags = [f"{APP_TAG}{app}", f"{SIZE_TAG}{size}"] + ([f"{COMMIT_TAG}{commit}"] if commit else [])
    args = ["backup", "--json", "--host", SNAPSHOT_HOST]
    for tag in tags:
        args += ["--tag", tag]
    output = run(host, settings, [*args, path])
    return parse_backup_summary(output)


def parse_backup_summary(output: str) -> tuple[str, int | None]:
    """restic backup --json prints status lines, then one {"message_type": "summary"}."""
    for line in reversed(output.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("message_type") == "summary":
            snapshot = str(data.get("snapshot_id") or "")[:8]
            added = data.get("data_added")
            if snapshot:
                return snapshot, added if isinstance(added, int) else None
    raise ResticError("restic backup: no summary in its output")


def snapshots(host: Host, settings: BackupSettings, app: str) -> list[Snapshot]:
    """The app's snapshots, oldest first."""
    output = run(host, settings, ["snapshots", "--json", "--tag", f"{APP_TAG}{app}"], timeout=600)
    return parse_snapshots(output, app)


def parse_snapshots(output: str, app: str) -> list[Snapshot]:
    try:
        data = json.loads(output or "[]")
    except ValueError:
        raise ResticError("restic snapshots: output is not JSON") from None
    found = []
    for item in data if isinstance(data, list) else []:
        tags = [str(t) for t in item.get("tags") or []]
        if f"{APP_TAG}{app}" not in tags:
            continue
        commit = next((t[len(COMMIT_TAG):] for t in tags if t.startswith(COMMIT_TAG)), None)
        size = next((t[len(SIZE_TAG):] for t in tags if t.startswith(SIZE_TAG)), None)
        found.append(Snapshot(str(item.get("id", "")), str(item.get("short_id", ""))
                              or str(item.get("id", ""))[:8], str(item.get("time", "")), app,
                              commit, int(size) if size and size.isdigit() else None))
    return sorted(found, key=lambda s: s.time)


def forget(host: Host, settings: BackupSettings, app: str) -> None:
    """Apply the keep policy to the app's snapshots and prune what no snapshot uses."""
    if not settings.keep:
        return
    args = ["forget", "--tag", f"{APP_TAG}{app}", "--group-by", "host,paths"]
    for key, value in settings.keep:
        args += [f"--keep-{key}", str(value)]
    run(host, settings, [*args, "--prune"])


def restore(host: Host, settings: BackupSettings, snapshot: str, target: str) -> None:
    run(host, settings, ["restore", snapshot, "--target", target])


def error_line(exc: Exception) -> str:
    """One line for the state file and messages."""
    text = str(exc) if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, CommandError):
        text = str(exc)
    return (text.splitlines() or [""])[0][:500]

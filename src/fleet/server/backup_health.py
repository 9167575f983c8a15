"""Backups as `fleet status` shows them and `fleet check` judges them.

A problem (only with a schedule): the last backup failed (the timer's, or one run by hand
since), or the last success is older than twice the schedule's period (or there was never
one, though attempts were made). The period is the gap between the schedule's next two
elapses, as `systemd-analyze calendar --iterations=2` gives them ("daily": 1 day, so a
backup older than 2 days is a problem). Without a schedule, check judges nothing: backups
are then the operator's own business.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from fleet.config.settings import AppConfig, BackupSettings, Config
from fleet.errors import EXIT_INVALID, FleetError
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server import backup_state


def parse_elapses(text: str) -> list[float]:
    """The "Next elapse:" and "Iter. #N:" lines of `systemd-analyze calendar`, run with
    TZ=UTC (so they are in UTC; it adds "(in UTC):" lines only in another zone)."""
    stamps = []
    for line in text.splitlines():
        label, _, value = line.strip().partition(": ")
        if label != "Next elapse" and not label.startswith("Iter"):  # "Iter. #2" (252)
            continue
        try:
            moment = datetime.datetime.strptime(value.strip(), "%a %Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            continue
        stamps.append(moment.replace(tzinfo=datetime.timezone.utc).timestamp())
    return stamps


def schedule_period(host: Host, schedule: str) -> float | None:
    """Seconds between two consecutive runs of the schedule, None when systemd cannot say."""
    result = host.run(["systemd-analyze", "calendar", "--iterations=2", schedule], check=False,
                      env={"TZ": "UTC"}, timeout=30)
    stamps = parse_elapses(result.stdout) if result.ok else []
    return stamps[1] - stamps[0] if len(stamps) >= 2 and stamps[1] > stamps[0] else None


def problem(state: backup_state.BackupState | None, period: float | None,
            now: float) -> str | None:
    """Why the app's backups need attention (only with a schedule: period not None)."""
    if period is None or state is None:
        return None
    if state.last_result == "failed":
        return f"last backup failed: {state.error or 'unknown error'}"
    if state.last_success is None:
        return "no backup has succeeded yet"
    if now - state.last_success > 2 * period:
        hours = (now - state.last_success) / 3600
        return f"last backup is {hours:.1f} h old (more than twice the schedule's period)"
    return None


def app_backup(host: Host, settings: BackupSettings | None, app: str,
               period: float | None, now: float) -> dict[str, Any] | None:
    """The app's backup for status --json: the state file plus the problem, if any."""
    if settings is None:
        return None
    state = backup_state.load(host, app)
    record = {"last_attempt": None, "last_result": None, "last_success": None,
              "snapshot": None, "error": None, "bytes": None}
    if state is not None:
        record.update({k: getattr(state, k) for k in record})
    record["problem"] = problem(state, period, now)
    return record


def backups_of(host: Host, config: Config, now: float | None = None) -> dict[str, Any]:
    """Each app's backup record (empty when backups are not used)."""
    settings = config.server.backup
    if settings is None:
        return {}
    period = schedule_period(host, settings.schedule) if settings.schedule else None
    moment = time.time() if now is None else now
    return {app.name: app_backup(host, settings, app.name, period, moment)
            for app in config.apps}


PURGE_FRESH = 86400.0  # a backup younger than this lets --purge delete the data


class PurgeRefused(FleetError):
    """remove-app --purge would delete data no recent backup holds: bad input, exit 2."""

    exit_code = EXIT_INVALID


def has_data(host: Host, app: AppConfig) -> bool:
    """Anything in the app's persist directories (lstat first: a link there is not listed)."""
    shared = AppPaths(app.name).shared
    for top in dict.fromkeys(item.split("/")[0] for item in app.persist):
        state = host.state(f"{shared}/{top}")
        if state is not None and (state.kind != "dir" or host.listdir(f"{shared}/{top}")):
            return True
    return False


def check_purge(host: Host, app: AppConfig, now: float) -> None:
    """Refuse to purge an app's data when no successful backup younger than a day holds it."""
    if not has_data(host, app):
        return
    state = backup_state.load(host, app.name)
    if state is not None and state.last_success is not None \
            and now - state.last_success < PURGE_FRESH:
        return
    raise PurgeRefused(f"{app.name} has data in its persist paths and no backup younger than a "
                       f"day: run `fleet backup {app.name}` first, or add --force to delete "
                       "it anyway")

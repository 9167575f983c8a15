"""Job schedules are checked by the system's own calendar parser before anything changes:
what `systemd-analyze calendar` accepts is exactly what the timer will accept."""

from __future__ import annotations

from collections.abc import Iterable

from fleet.config.settings import AppConfig, ServerConfig
from fleet.errors import ConfigError
from fleet.host.machine import Host


def check_schedules(host: Host, apps: Iterable[AppConfig], source: str,
                    server: ServerConfig | None = None) -> None:
    """A schedule systemd refuses is bad input: one line naming the key, exit 2. Without
    systemd-analyze (fleet push checking on an operator's laptop) the server checks it."""
    schedules = [(f"apps.{app.name}.jobs.{job.name}.schedule", job.schedule)
                 for app in apps for job in app.jobs]
    if server is not None and server.backup is not None and server.backup.schedule:
        schedules.append(("server.backup.schedule", server.backup.schedule))
    for key, schedule in schedules:
        result = host.run(["systemd-analyze", "calendar", "--iterations=1", schedule],
                          check=False, timeout=30)
        if result.returncode == 127:  # not a systemd machine
            return
        if not result.ok:
            raise ConfigError(source, key,
                              f"{schedule!r} is not a systemd calendar expression "
                              "(see `man systemd.time`: 'daily', '*-*-* 03:00', '*:0/5')")

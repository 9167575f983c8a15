"""Job schedules are checked by the system's own calendar parser before anything changes:
what `systemd-analyze calendar` accepts is exactly what the timer will accept."""

from __future__ import annotations

from collections.abc import Iterable

from fleet.config.settings import AppConfig
from fleet.errors import ConfigError
from fleet.host.machine import Host


def check_schedules(host: Host, apps: Iterable[AppConfig], source: str) -> None:
    """A schedule systemd refuses is bad input: one line naming the key, exit 2. Without
    systemd-analyze (fleet push checking on an operator's laptop) the server checks it."""
    for app in apps:
        for job in app.jobs:
            result = host.run(["systemd-analyze", "calendar", "--iterations=1", job.schedule],
                              check=False, timeout=30)
            if result.returncode == 127:  # not a systemd machine
                return
            if not result.ok:
                raise ConfigError(source, f"apps.{app.name}.jobs.{job.name}.schedule",
                                  f"{job.schedule!r} is not a systemd calendar expression "
                                  "(see `man systemd.time`: 'daily', '*-*-* 03:00', '*:0/5')")

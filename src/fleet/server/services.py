"""systemd services: enable at boot, start when stopped, reload or restart only on change."""

from __future__ import annotations

from fleet.host.actions import Action, Run
from fleet.host.machine import Host


def is_active(host: Host, unit: str) -> bool:
    return host.run(["systemctl", "is-active", "--quiet", unit], check=False).ok


def is_enabled(host: Host, unit: str) -> bool:
    return host.run(["systemctl", "is-enabled", "--quiet", unit], check=False).ok


def plan_service(host: Host, unit: str, *, changed: bool, on_change: str = "reload",
                 unit_file_changed: bool = False) -> list[Action]:
    """on_change: "reload" or "restart", what a running service needs after its files changed."""
    actions: list[Action] = []
    if unit_file_changed:
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    if not is_enabled(host, unit):
        actions.append(Run(argv=("systemctl", "enable", "--quiet", unit),
                           why=f"start {unit} at boot"))
    if not is_active(host, unit):
        actions.append(Run(argv=("systemctl", "start", unit), why=f"start {unit}"))
    elif changed or unit_file_changed:
        actions.append(Run(argv=("systemctl", on_change, unit), why=f"{on_change} {unit}"))
    return actions

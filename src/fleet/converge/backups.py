"""fleet apply's share of backups: restic installed, the repository's password file made when
missing, and the scheduled backup's timer written, enabled and started when [server.backup]
has a `schedule`; stopped and removed when it has none. Unchanged: nothing happens."""

from __future__ import annotations

from fleet.config.settings import Config
from fleet.host import layout, pending
from fleet.host.actions import Action, Remove, Run
from fleet.host.files import plan_dir, plan_file, plan_link
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.host.session import Session
from fleet.server import restic
from fleet.server.services import is_active

SERVICE = "fleet-backup.service"
TIMER = "fleet-backup.timer"


def packages(config: Config) -> list[str]:
    """restic only on servers that use backups ([server.backup] present)."""
    return ["restic"] if config.server.backup is not None else []


def plan_backup_units(host: Host, config: Config) -> list[Action]:
    settings = config.server.backup
    unit_files = {f"{layout.UNIT_DIR}/{name}" for name in (SERVICE, TIMER)}
    link = f"{layout.TIMERS_WANTS}/{TIMER}"
    if settings is None or not settings.schedule:
        present = [path for path in [*sorted(unit_files), link] if host.state(path) is not None]
        if not present:
            return []
        actions: list[Action] = []
        if is_active(host, TIMER):
            actions.append(Run(argv=("systemctl", "stop", TIMER), why="no backup schedule"))
        actions += [Remove(path=path, why="no backup schedule") for path in present]
        return [*actions, Run(argv=("systemctl", "daemon-reload"), why="reload systemd units")]
    service = plan_file(host, f"{layout.UNIT_DIR}/{SERVICE}",
                        render(f"systemd/{SERVICE}", fleet=layout.FLEET_BIN), 0o644,
                        why="the scheduled backup")
    timer = plan_file(host, f"{layout.UNIT_DIR}/{TIMER}",
                      render(f"systemd/{TIMER}", schedule=settings.schedule), 0o644,
                      why=f"backups on {settings.schedule}")
    actions = [*service, *timer, *plan_dir(host, layout.TIMERS_WANTS),
               *plan_link(host, link, f"{layout.UNIT_DIR}/{TIMER}")]
    if service or timer:
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    if timer or pending.owes(host, TIMER):  # owed: a run killed before the restart
        actions.append(Run(argv=("systemctl", "restart", TIMER), why="new schedule"))
    elif not is_active(host, TIMER):
        actions.append(Run(argv=("systemctl", "start", TIMER), why="not running"))
    return actions


def converge_backups(config: Config, session: Session) -> None:
    """The "backups" step (only on servers that use or used backups)."""
    settings = config.server.backup
    actions = plan_backup_units(session.host, config)
    if settings is not None:
        actions = restic.plan_password(session.host, settings) + actions
    if settings is None and not actions:
        return
    with session.step("backups") as step:
        session.apply(step, actions)

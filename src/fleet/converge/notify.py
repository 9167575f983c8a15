"""The server-wide parts of the audit log and of notifications, as apply plans them.

Always: the root-only log directory and the logrotate snippet for the audit log. With
[server.notify]: the root-only spool, fleet-notify.service (delivers) and fleet-watch.timer
(health, certbot and backups every minute); without it those units are stopped and removed,
and queue_event() sees no fleet-notify.service and spools nothing.
"""

from __future__ import annotations

from fleet.config.settings import Config
from fleet.host import layout, pending
from fleet.host.actions import Action, Run
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.render import render
from fleet.host.session import Session
from fleet.server import notify
from fleet.server.audit import AUDIT_DIR, AUDIT_LOG
from fleet.server.services import is_active, is_enabled

LOGROTATE_DIR = "/etc/logrotate.d"  # logrotate is a base package; made here for a fake host
LOGROTATE = f"{LOGROTATE_DIR}/fleet"
AUDIT_KEEP = 12  # weeks of audit log kept (each also capped at 10 MB by maxsize)
SPOOL_PARENT = "/var/spool/fleet"
WATCH_INTERVAL = "1min"
WATCH_SERVICE = f"{layout.UNIT_DIR}/{notify.WATCH_SERVICE_NAME}"
WATCH_TIMER = f"{layout.UNIT_DIR}/{notify.WATCH_TIMER_NAME}"


def unit_files() -> dict[str, bytes]:
    return {
        notify.UNIT: render("systemd/fleet-notify.service", fleet_bin=layout.FLEET_BIN,
                            spool=notify.SPOOL),
        WATCH_SERVICE: render("systemd/fleet-watch.service", fleet_bin=layout.FLEET_BIN),
        WATCH_TIMER: render("systemd/fleet-watch.timer", interval=WATCH_INTERVAL),
    }


def plan_audit(session: Session) -> list[Action]:
    host = session.host
    return (plan_dir(host, AUDIT_DIR, 0o700)
            + plan_dir(host, LOGROTATE_DIR, 0o755)
            + plan_file(host, LOGROTATE, render("logrotate-fleet.j2", audit_log=AUDIT_LOG,
                                                 keep=AUDIT_KEEP), 0o644,
                        why="rotate the audit log"))


def plan_units(session: Session, enabled: bool) -> list[Action]:
    host = session.host
    actions: list[Action] = []
    if enabled:
        actions += plan_dir(host, SPOOL_PARENT, 0o700) + plan_dir(host, notify.SPOOL, 0o700)
        files: list[Action] = []
        for path, content in unit_files().items():
            files += plan_file(host, path, content, 0o644)
        actions += files
        if files:
            actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
        if files or not is_enabled(host, notify.WATCH_TIMER_NAME):
            actions.append(Run(argv=("systemctl", "enable", "--quiet", notify.WATCH_TIMER_NAME),
                               why="watch the apps after boot"))
        if files or not is_active(host, notify.WATCH_TIMER_NAME) \
                or pending.owes(host, notify.WATCH_TIMER_NAME):  # a killed run's restart
            actions.append(Run(argv=("systemctl", "restart", notify.WATCH_TIMER_NAME),
                               why="watch the apps every minute"))
        return actions
    present = [p for p in unit_files() if host.state(p) is not None]
    if present:
        actions.append(Run(argv=("systemctl", "disable", "--now", "--quiet",
                                 notify.WATCH_TIMER_NAME), why="notifications are off"))
        for path in present:
            actions += plan_absent(host, path, why="notifications are off")
        actions.append(Run(argv=("systemctl", "daemon-reload"), why="reload systemd units"))
    return actions


def converge_notify(config: Config, session: Session) -> None:
    """The audit log's directory and rotation; the notification units when configured."""
    with session.step("audit and notifications") as step:
        session.apply(step, plan_audit(session)
                      + plan_units(session, config.server.notify.enabled))

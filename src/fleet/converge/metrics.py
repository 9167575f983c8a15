"""The fleet-metrics timer: with [server.metrics] textfile_dir set, a oneshot service run every
INTERVAL writes fleet.prom there (`fleet metrics --textfile DIR`) for node_exporter's textfile
collector; unset, the units an earlier apply wrote are stopped and removed.

Idempotent like every step: unit files are written only when their text differs, systemd is
reloaded only then, and the timer is restarted only when one of its files changed.
"""

from __future__ import annotations

import contextlib

from fleet.config.settings import Config
from fleet.errors import StepFailed
from fleet.host import layout, pending
from fleet.host.actions import Action, Run
from fleet.host.files import plan_absent, plan_dir, plan_file
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.host.session import Session
from fleet.server.services import is_active, is_enabled, plan_service

INTERVAL = "15s"  # node_exporter is often scraped every 15 s or more: fresher is wasted work
SERVICE_FILE = f"{layout.UNIT_DIR}/{layout.METRICS_UNIT}"
TIMER_FILE = f"{layout.UNIT_DIR}/{layout.METRICS_TIMER}"
TIMER_LINK = f"{layout.TIMERS_WANTS}/{layout.METRICS_TIMER}"


def unit_texts(textfile_dir: str) -> tuple[bytes, bytes]:
    """The service and timer files (systemd/fleet-metrics.*)."""
    service = render(f"systemd/{layout.METRICS_UNIT}", fleet_bin=layout.FLEET_BIN,
                     textfile_dir=textfile_dir)
    return service, render(f"systemd/{layout.METRICS_TIMER}", interval=INTERVAL)


def plan_metrics(host: Host, textfile_dir: str | None) -> list[Action]:
    if textfile_dir is None:
        return plan_removed(host)
    service_text, timer_text = unit_texts(textfile_dir)
    # node_exporter's package owns its directory (prometheus:prometheus): only a missing
    # one is made, readable by node_exporter whoever runs it.
    actions = plan_dir(host, textfile_dir, 0o755) if host.state(textfile_dir) is None else []
    service = plan_file(host, SERVICE_FILE, service_text, 0o644, why="metrics service")
    timer = plan_file(host, TIMER_FILE, timer_text, 0o644, why="metrics timer")
    owed = pending.owes(host, layout.METRICS_TIMER)  # a run killed before the restart
    return actions + service + timer + plan_service(
        host, layout.METRICS_TIMER, changed=bool(service or timer) or owed,
        on_change="restart", unit_file_changed=bool(service or timer))


def plan_removed(host: Host) -> list[Action]:
    """[server.metrics] unset: nothing of the timer stays (fleet.prom stays where it was)."""
    files = plan_absent(host, SERVICE_FILE, why="[server.metrics] is off") + plan_absent(
        host, TIMER_FILE, why="[server.metrics] is off")
    if not files:
        return []
    actions: list[Action] = []
    if is_enabled(host, layout.METRICS_TIMER) or is_active(host, layout.METRICS_TIMER):
        actions.append(Run(argv=("systemctl", "disable", "--now", "--quiet",
                                 layout.METRICS_TIMER), why="stop the metrics timer"))
    return actions + plan_absent(host, TIMER_LINK) + files + [
        Run(argv=("systemctl", "daemon-reload"), why="reload systemd units")]


def converge_metrics(config: Config, session: Session) -> None:
    """One step, "metrics": recorded as failed when it fails, and the run goes on (no app
    depends on it)."""
    with contextlib.suppress(StepFailed), session.step("metrics") as step:
        session.apply(step, plan_metrics(session.host, config.server.metrics.textfile_dir))

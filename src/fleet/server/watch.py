"""`fleet watch` (fleet-watch.timer, every minute): raise events for what changed since the
last run: an app's health turning red or green, certbot's renewal failing, a new failed backup.
On-demand apps are not health-checked (the check would start them every minute).

The last seen state is kept in /var/lib/fleet/watch.json, so each change is told once; an app
seen for the first time is recorded without an event (a fresh app raises its deploy event).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.config.settings import AppConfig, Config
from fleet.host import layout
from fleet.host.machine import Host
from fleet.server.health import HealthResult, check_app
from fleet.server.notify import SPOOL, UNIT_NAME, WATCH_STATE, queue_event

BACKUP_RECORDS = f"{layout.STATE_DIR}/backups"
CERTBOT_SERVICE = "certbot.service"
WATCH_TIMEOUT = 5.0  # seconds one app's health check may take in a watch run

Checker = Callable[[AppConfig], HealthResult]
Event = tuple[str, str | None, str, dict[str, object]]  # kind, app, summary, details


@dataclass
class WatchState:
    health: dict[str, str] = field(default_factory=dict)  # app -> "green" | "red"
    certbot_failed: bool = False
    backups: dict[str, str] = field(default_factory=dict)  # app -> last failed attempt seen

    @classmethod
    def load(cls, host: Host) -> WatchState:
        try:
            data = json.loads(host.read(WATCH_STATE) or b"{}")
            return cls(dict(data.get("health", {})), bool(data.get("certbot_failed")),
                       dict(data.get("backups", {})))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def to_bytes(self) -> bytes:
        data = {"health": self.health, "certbot_failed": self.certbot_failed,
                "backups": self.backups}
        return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def default_check(app: AppConfig) -> HealthResult:
    return check_app(app, timeout=min(app.health.timeout, WATCH_TIMEOUT))


def health_events(apps: list[AppConfig], state: WatchState, check: Checker) -> list[Event]:
    events: list[Event] = []
    seen: dict[str, str] = {}
    for app in apps:
        result = check(app)
        color = "green" if result.passed else "red"
        seen[app.name] = color
        before = state.health.get(app.name)
        if before is not None and before != color:
            summary = (f"{app.name} is healthy again ({result.detail})" if result.passed
                       else f"{app.name} fails its health check: {result.detail}")
            events.append((f"health.{color}", app.name, summary,
                           {"status": result.status, "detail": result.detail}))
    state.health = seen
    return events


def certbot_events(host: Host, state: WatchState) -> list[Event]:
    """certbot.service failed (its timer runs `certbot renew`): told once per failure."""
    failed = host.run(["systemctl", "is-failed", "--quiet", CERTBOT_SERVICE], check=False).ok
    events: list[Event] = []
    if failed and not state.certbot_failed:
        log = host.run(["journalctl", "--quiet", "--no-pager", "--output=cat", "--lines=5",
                        "--unit", CERTBOT_SERVICE], check=False, timeout=10)
        events.append(("certificate.failed", None, "certbot's certificate renewal failed",
                       {"error": log.stdout.strip()[-1000:]}))
    state.certbot_failed = failed
    return events


def backup_events(host: Host, state: WatchState) -> list[Event]:
    """A backup record (/var/lib/fleet/backups/APP.json) whose last attempt failed and was not
    seen yet."""
    events: list[Event] = []
    for name in host.listdir(BACKUP_RECORDS):
        if not name.endswith(".json"):
            continue
        try:
            record: Mapping[str, Any] = json.loads(host.read(f"{BACKUP_RECORDS}/{name}") or b"")
        except ValueError:
            continue
        app = str(record.get("app") or name[:-len(".json")])
        attempt = str(record.get("last_attempt"))
        if record.get("last_result") == "failed" and state.backups.get(app) != attempt:
            events.append(("backup.failed", app, f"backup of {app} failed",
                           {"error": record.get("error"), "last_attempt": attempt,
                            "last_success": record.get("last_success")}))
            state.backups[app] = attempt
    return events


def watch(host: Host, config: Config, check: Checker = default_check) -> list[Event]:
    """One watch run: raise the events, store the new state, and wake the deliverer for any
    event still spooled (one that arrived as the deliverer was finishing)."""
    state = WatchState.load(host)
    # An on-demand app is not checked: a request every minute would keep it from ever idling.
    watched = [a for a in config.apps if not a.on_demand]
    events = [*health_events(watched, state, check), *certbot_events(host, state),
              *backup_events(host, state)]
    for kind, app, summary, details in events:
        queue_event(host, kind, app, summary, details)
    if host.read(WATCH_STATE) != state.to_bytes():
        host.write(WATCH_STATE, state.to_bytes(), 0o600, "root", "root")
    if any(n.endswith(".json") for n in host.listdir(SPOOL)):
        host.run(["systemctl", "start", "--no-block", UNIT_NAME], check=False, timeout=30)
    return events

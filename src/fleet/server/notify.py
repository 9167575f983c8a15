"""Notifications, queued: an event is a JSON file in a root-only spool directory, delivered by
fleet-notify.service in the background (fleet.server.delivery), so a webhook that is slow or
down never delays or fails the deploy that raised it.

Anyone may raise an event with `queue_event(host, kind, app, summary, details)` (a backup
failing, say). It costs one file write and `systemctl start --no-block`; without
[server.notify] (no fleet-notify.service written by apply) it does nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping

from fleet import __version__
from fleet.config.settings import NOTIFY_EVENTS
from fleet.host import layout
from fleet.host.machine import Host

SPOOL = "/var/spool/fleet/notify"
UNIT_NAME = "fleet-notify.service"
UNIT = f"{layout.UNIT_DIR}/{UNIT_NAME}"
WATCH_SERVICE_NAME = "fleet-watch.service"
WATCH_TIMER_NAME = "fleet-watch.timer"
WATCH_STATE = f"{layout.STATE_DIR}/watch.json"


def payload(kind: str, app: str | None, summary: str, details: Mapping[str, object],
            now: float, hostname: str) -> dict[str, object]:
    """The JSON every webhook and command receives (README "Notifications")."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {"event": kind, "app": app, "server": hostname, "time": stamp, "unix": round(now, 3),
            "summary": summary, "details": dict(details), "fleet": __version__}


def spool_name(kind: str, now: float) -> str:
    return f"{int(now * 1e6):020d}-{os.getpid()}-{kind}.json"


def queue_event(host: Host, kind: str, app: str | None, summary: str,
                details: Mapping[str, object] | None = None, *, now: float | None = None
                ) -> bool:
    """Spool one event and wake the deliverer without waiting for it. False when notifications
    are off (no fleet-notify.service), the event unknown, or the spool unwritable: raising an
    event must never fail its caller."""
    if kind not in NOTIFY_EVENTS or host.state(UNIT) is None:
        return False
    moment = time.time() if now is None else now
    body = {"payload": payload(kind, app, summary, details or {}, moment, socket.gethostname()),
            "attempts": 0, "due": moment}
    try:
        host.write(f"{SPOOL}/{spool_name(kind, moment)}",
                   (json.dumps(body, sort_keys=True) + "\n").encode(), 0o600, "root", "root")
    except OSError:
        return False
    host.run(["systemctl", "start", "--no-block", UNIT_NAME], check=False, timeout=30)
    return True

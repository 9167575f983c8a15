"""Delivering spooled events (fleet-notify.service runs `fleet notify-deliver`): POST to the
webhook and/or pipe to the command, retried with exponential backoff, then dropped with a
journal line.

Five attempts: at once, then 10 s, 30 s, 90 s and 270 s after each failure (the last ~6.7 min
after the event): a blip is bridged at once, an outage of minutes still gets the event. An
event counts as delivered when every configured target took it; a target that took it is not
sent it again. The command runs as `nobody` (setpriv), never as root: it
is the operator's, but it needs no privilege. Webhook HTTPS trusts the system CAs plus
[server.pip] cert when set (the private CA a closed network already gives fleet).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from fleet.config.settings import NotifySettings
from fleet.host.machine import Host, is_temp_name
from fleet.masking import mask_urls
from fleet.server.notify import SPOOL

BACKOFF = (10.0, 30.0, 90.0, 270.0)  # seconds before attempts 2..5
MAX_ATTEMPTS = len(BACKOFF) + 1
COMMAND_USER = ("nobody", "nogroup")

Post = Callable[[str, bytes, dict[str, str], float, str | None], None]


def retry_delay(attempts: int) -> float | None:
    """Seconds to wait after the `attempts`-th failed attempt; None: give up."""
    return BACKOFF[attempts - 1] if 1 <= attempts <= len(BACKOFF) else None


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(settings: NotifySettings, body: bytes) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "fleet-notify"}
    headers.update(dict(settings.headers))
    if settings.secret:
        headers["X-Fleet-Signature"] = signature(settings.secret, body)
    return headers


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float,
              cafile: str | None) -> None:
    """One POST; any answer but 2xx, or none within `timeout`, raises."""
    context = ssl.create_default_context()
    if cafile:
        context.load_verify_locations(cafile)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def run_command(host: Host, settings: NotifySettings, body: bytes) -> None:
    """The operator's command with the JSON on stdin, as nobody, in /, killed at the timeout."""
    assert settings.command
    user, group = COMMAND_USER
    result = host.run(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                       "--", "sh", "-c", f"cd / && {settings.command}"],
                      check=False, input=body.decode(), timeout=settings.timeout,
                      env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
    if not result.ok:
        raise OSError(f"command exited {result.returncode}: {result.stderr.strip()[-200:]}")


@dataclass
class Spooled:
    name: str
    payload: dict[str, object]
    attempts: int
    due: float
    done: list[str]  # targets that took it: "webhook", "command"


def load(host: Host, name: str) -> Spooled | None:
    try:
        data = json.loads(host.read(f"{SPOOL}/{name}") or b"")
        return Spooled(name, dict(data["payload"]), int(data["attempts"]), float(data["due"]),
                       list(data.get("done", [])))
    except (ValueError, TypeError, KeyError):
        return None


def save(host: Host, item: Spooled) -> None:
    data = {"payload": item.payload, "attempts": item.attempts, "due": item.due,
            "done": item.done}
    host.write(f"{SPOOL}/{item.name}", (json.dumps(data, sort_keys=True) + "\n").encode(),
               0o600, "root", "root")


def log(message: str) -> None:
    print(f"fleet-notify: {mask_urls(message)}", file=sys.stderr, flush=True)


def attempt(host: Host, settings: NotifySettings, item: Spooled, cafile: str | None,
            post: Post) -> list[str]:
    """Send to every target not yet done; returns the errors (empty: delivered)."""
    body = json.dumps(item.payload, sort_keys=True).encode()
    errors: list[str] = []
    if settings.webhook and "webhook" not in item.done:
        try:
            post(settings.webhook, body, webhook_headers(settings, body), settings.timeout,
                 cafile)
            item.done.append("webhook")
        except Exception as exc:  # any failure of the target is a retry, never a crash
            errors.append(f"webhook: {exc}")
    if settings.command and "command" not in item.done:
        try:
            run_command(host, settings, body)
            item.done.append("command")
        except Exception as exc:
            errors.append(f"command: {exc}")
    return errors


def deliver_due(host: Host, settings: NotifySettings, now: float, *, cafile: str | None = None,
                post: Post = post_json) -> float | None:
    """Deliver every spooled event that is due. Returns the seconds until the next one is due
    (0: now), or None when the spool is empty."""
    next_due: float | None = None
    for name in host.listdir(SPOOL):
        if not name.endswith(".json") or is_temp_name(name):
            continue
        item = load(host, name)
        if item is None:
            log(f"dropped {name}: unreadable")
            host.remove(f"{SPOOL}/{name}")
            continue
        event = str(item.payload.get("event"))
        if not settings.enabled or not settings.wants(event):
            host.remove(f"{SPOOL}/{name}")  # notifications off, or an event not asked for
            continue
        if item.due > now:
            next_due = item.due if next_due is None else min(next_due, item.due)
            continue
        errors = attempt(host, settings, item, cafile, post)
        if not errors:
            log(f"delivered {event} ({item.payload.get('app')}) after "
                f"{item.attempts + 1} attempt(s)")
            host.remove(f"{SPOOL}/{name}")
            continue
        item.attempts += 1
        delay = retry_delay(item.attempts)
        if delay is None:
            log(f"dropped {event} ({item.payload.get('app')}) after {item.attempts} attempts: "
                f"{'; '.join(errors)}")
            host.remove(f"{SPOOL}/{name}")
            continue
        item.due = now + delay
        log(f"{event} ({item.payload.get('app')}) attempt {item.attempts} failed "
            f"({'; '.join(errors)}); retry in {delay:.0f} s")
        save(host, item)
        next_due = item.due if next_due is None else min(next_due, item.due)
    return None if next_due is None else max(0.0, next_due - now)


def deliver_until_empty(host: Host, settings: NotifySettings, cafile: str | None,
                        poll: float = 1.0) -> None:
    """Run until the spool is empty, looking for new events every `poll` seconds meanwhile
    (one started service delivers everything; `systemctl start` of a running one is a no-op)."""
    while True:
        wait = deliver_due(host, settings, time.time(), cafile=cafile)
        if wait is None:
            return
        time.sleep(min(wait, poll) if wait > 0 else 0.05)

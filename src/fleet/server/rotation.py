"""Which app servers a front has taken out of rotation, per app: `fleet drain` / `undrain`.

`fleet push` drains an app server on every front before it deploys there and puts it back
once the front itself gets a passing health check from it, so a front never sends a request to
a server mid-deploy. The state lives on the front (not in the operator's file), so every apply
renders the same `down` marks until the server is put back: a server whose deploy broke it
stays out of rotation until a check passes again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from fleet.config.settings import FrontApp, as_app
from fleet.host import layout
from fleet.host.actions import Action
from fleet.host.client import answer_errors, http_get
from fleet.host.files import plan_file
from fleet.host.machine import Host
from fleet.host.poll import poll
from fleet.server.health import judge_reply

DRAINED_FILE = f"{layout.STATE_DIR}/front-drained.json"
Drained = dict[str, set[str]]  # app -> its upstreams (ADDRESS:PORT) out of rotation


def load_drained(host: Host) -> Drained:
    """The stored state; an unreadable file counts as nothing drained (all in rotation)."""
    data = host.read(DRAINED_FILE)
    try:
        raw = json.loads(data or b"{}")
        return {str(app): {str(u) for u in upstreams} for app, upstreams in raw.items()
                if isinstance(upstreams, list)}
    except (ValueError, AttributeError):
        return {}


def plan_drained(host: Host, drained: Drained) -> list[Action]:
    content = json.dumps({app: sorted(u) for app, u in sorted(drained.items()) if u},
                         indent=1, sort_keys=True).encode() + b"\n"
    return plan_file(host, DRAINED_FILE, content, 0o644)


def current(drained: Drained, front: tuple[FrontApp, ...]) -> Drained:
    """The state narrowed to upstreams the front still balances (a removed server's mark
    must not come back with it)."""
    listed = {app.name: set(app.upstreams) for app in front}
    kept = {name: upstreams & listed.get(name, set()) for name, upstreams in drained.items()}
    return {name: upstreams for name, upstreams in kept.items() if upstreams}


def marked_down(app: FrontApp, drained: Drained) -> set[str]:
    """The upstreams rendered `down`: none when that would leave the app no server at all
    (a 502 for everyone is worse than a request to a server mid-deploy)."""
    down = drained.get(app.name, set()) & set(app.upstreams)
    return set() if down >= set(app.upstreams) else down


@dataclass(frozen=True)
class Change:
    app: str
    state: str  # drained | restored | kept | skipped
    detail: str = ""


def drain(front: tuple[FrontApp, ...], drained: Drained, upstream: str,
          apps: list[str]) -> list[Change]:
    """Mark `upstream` down for `apps` (all apps it serves when empty), in `drained`."""
    changes = []
    for app in front:
        if apps and app.name not in apps:
            continue
        if upstream not in app.upstreams:
            if apps:
                changes.append(Change(app.name, "skipped", f"{upstream} is not one of its "
                                                           "servers here"))
            continue
        out = drained.setdefault(app.name, set())
        if not set(app.upstreams) - out - {upstream}:
            changes.append(Change(app.name, "kept", "it is the only server left in rotation"))
            continue
        out.add(upstream)
        changes.append(Change(app.name, "drained"))
    for name in apps:
        if all(app.name != name for app in front):
            changes.append(Change(name, "skipped", "not balanced by this front"))
    return changes


Checker = Callable[[FrontApp, str], str | None]


def check_upstream(app: FrontApp, upstream: str, interval: float = 0.5) -> str | None:
    """GET the app's health path from this one server, as the front would: None when it
    passes within the app's health timeout, else why not."""
    address, _, port = upstream.rpartition(":")
    address = address.strip("[]")
    view = as_app(app)

    def attempt() -> str | None:
        try:
            response = http_get(app.domains[0], app.health.path, timeout=5.0, address=address,
                                port=int(port))
            return judge_reply(view, response.status, response.body)
        except answer_errors() as exc:
            return f"no response ({exc.__class__.__name__}: {exc})"

    return poll(attempt, lambda problem: problem is None, timeout=app.health.timeout,
                interval=interval, fit=True)


def undrain(front: tuple[FrontApp, ...], drained: Drained, upstream: str, apps: list[str],
            check: Checker | None) -> list[Change]:
    """Put `upstream` back for `apps` (all when empty) once `check` passes for each."""
    changes = []
    for app in front:
        if apps and app.name not in apps:
            continue
        if upstream not in drained.get(app.name, set()):
            if apps:
                changes.append(Change(app.name, "skipped", "it was not out of rotation"))
            continue
        problem = check(app, upstream) if check is not None else None
        if problem is not None:
            changes.append(Change(app.name, "kept", f"health check failed: {problem}"))
            continue
        drained[app.name].discard(upstream)
        changes.append(Change(app.name, "restored"))
    return changes


def describe(changes: list[Change]) -> dict[str, dict[str, str]]:
    return {c.app: {"state": c.state, **({"detail": c.detail} if c.detail else {})}
            for c in changes}

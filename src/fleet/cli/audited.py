"""Around every command that changes the server: the audit line, and the deploy events.

One mechanism for every command (fleet.cli.dispatch calls `run_audited`): which commands
count is the AUDITED table below, so a new command is one line there. The apps' live commits
and failed releases are read before and after the command; their difference is the audit
line's "commits" and the deploy.succeeded / deploy.failed / rollback events. Nothing here may
fail the command: a failure to write is a warning on stderr.

Every command line passes through here, most of them (status, check, logs, top) not audited:
what only an audited one needs (the session, the audit log, notifications) is imported by the
functions that use it, so the looking commands start without it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet.cli.output import err
from fleet.errors import EXIT_FAILED
from fleet.host.machine import Host, LocalHost

if TYPE_CHECKING:
    from fleet.host.session import Session
    from fleet.server.audit import AppMark, AuditEntry


@dataclass(frozen=True)
class Audited:
    """How a command is audited: `actions`, when set, are the sub-actions that change the
    server (`env shop set` does, `env shop` only lists); `names_app`: its first argument is
    an app."""

    actions: frozenset[str] | None = None
    names_app: bool = True


AUDITED: dict[str, Audited] = {
    "apply": Audited(names_app=False),
    "init": Audited(names_app=False),
    "add-app": Audited(),
    "deploy": Audited(),
    "rollback": Audited(),
    "remove-app": Audited(),
    "maintenance": Audited(),
    "auth": Audited(frozenset({"add", "remove"})),
    "env": Audited(frozenset({"set", "unset", "import"})),
    "drain": Audited(names_app=False),  # its argument is a server; apps come from --app
    "undrain": Audited(names_app=False),
    "run": Audited(),  # runs a command in an app's release: it may change the app's data
    "backup": Audited(),
    "restore": Audited(),
}
WHOLE_SERVER = frozenset({"apply", "init"})  # these name every app in their line
DEPLOYING = frozenset({"apply", "add-app", "deploy"})


def audit_host() -> Host:
    """The host whose state the audit reads (unit tests give a fake one)."""
    return LocalHost()


def audited_command(args: Sequence[str]) -> str | None:
    """The command of this command line when it changes the server, else None."""
    if "-h" in args or "--help" in args:
        return None
    words = [word for word in args if not word.startswith("-")]
    if not words or words[0] not in AUDITED:
        return None
    rule = AUDITED[words[0]]
    if rule.actions is not None and (len(words) < 3 or words[2] not in rule.actions):
        return None
    return words[0]


def session_result(code: int, sessions: Sequence[Session]) -> str:
    """A plan's "would change" changed nothing (`apply --check`, the plan half of
    `apply --hold-changes`): only the sessions that acted count."""
    if code != 0:
        return "failed"
    return "changed" if any(s.counts()["changed"] for s in sessions if not s.check) else "ok"


def deploy_events(command: str, line: AuditEntry, before: dict[str, AppMark],
                  after: dict[str, AppMark]) -> list[tuple[str, str, str, dict[str, object]]]:
    """What the command did to each app's releases, as notification events."""
    from fleet.server.audit import AppMark

    events: list[tuple[str, str, str, dict[str, object]]] = []
    for app in line.apps:
        old, new = before.get(app, AppMark()), after.get(app, AppMark())
        details: dict[str, object] = {"commit": new.commit, "previous_commit": old.commit,
                                      "release": new.release, "command": " ".join(line.command),
                                      "who": line.who}
        if command == "rollback" and new.commit != old.commit and line.exit == 0:
            events.append(("rollback", app, f"{app} rolled back to {(new.commit or '')[:12]}",
                           details))
        elif command in DEPLOYING and new.failed and new.failed != old.failed:
            release, _, error = new.failed.partition(": ")
            events.append(("deploy.failed", app, f"deploy of {app} failed: {error[:200]}",
                           {**details, "failed_release": release, "error": error}))
        elif command in DEPLOYING and new.commit and new.commit != old.commit:
            events.append(("deploy.succeeded", app,
                           f"{app} now runs {new.commit[:12]} ({new.release})", details))
    return events


def warn(what: str, exc: Exception) -> None:
    err.print(f"fleet: warning: {what}: {exc}", markup=False, soft_wrap=True)


def record(host: Host, command: str, args: Sequence[str],
           before: dict[str, AppMark], code: int) -> None:
    from fleet.host.session import Session
    from fleet.masking import mask_argv
    from fleet.server.audit import append, entry, marks, resolve_operator
    from fleet.server.notify import queue_event

    words = [word for word in args if not word.startswith("-")]
    named = [words[1]] if AUDITED[command].names_app and len(words) > 1 else []
    after = marks(host)
    line = entry(now=time.time(), operator=resolve_operator(os.environ, host),
                 command=mask_argv(["fleet", *args]), named=named,
                 whole_server=command in WHOLE_SERVER, before=before, after=after,
                 result=session_result(code, Session.started), code=code)
    try:
        append(line.line())
    except OSError as exc:
        warn("audit log not written", exc)
    for kind, app, summary, details in deploy_events(command, line, before, after):
        queue_event(host, kind, app, summary, details)


def run_audited(args: Sequence[str], run: Callable[[], int]) -> int:
    """Run the command line; when it changes the server, append its audit line and raise its
    deploy events afterwards (also when it failed, or crashed)."""
    command = audited_command(args)
    if command is None or os.geteuid() != 0:  # not root: refused before touching anything
        return run()
    from fleet.server.audit import marks

    host = audit_host()
    try:
        before = marks(host)
    except Exception as exc:  # an unreadable history must not stop the command
        warn("audit log not written", exc)
        return run()
    code = EXIT_FAILED
    try:
        code = run()
    finally:
        try:
            record(host, command, args, before, code)
        except Exception as exc:
            warn("audit log not written", exc)
    return code

"""nginx: write fleet's files, test them with `nginx -t` before every reload, and put back the
previous files when a change is rejected, so one app's bad site never takes the others down."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.errors import FleetError
from fleet.host import pending
from fleet.host.actions import Action, WriteFile
from fleet.host.machine import Host
from fleet.host.poll import wait_until
from fleet.host.session import Session, Step
from fleet.server.services import plan_service

WORKER = b"nginx: worker process"
UNIT = "nginx"


def mark_reload_pending(session: Session) -> None:
    """Before fleet changes an nginx file: the running nginx will need a reload. A run killed
    after the write and before the reload leaves it owed (host/pending.py), and the next run
    reloads even though its files are then unchanged (they were written by the killed run)."""
    if not session.check:
        pending.owe(session.host, [UNIT])


def reload_pending(host: Host) -> bool:
    return pending.owes(host, UNIT)


def apply_reload(session: Session, step: Step, *, changed: bool) -> bool:
    """nginx enabled, running, and reloaded when its files changed in this run or in a run
    that was killed before its reload; the reload (or start) pays what was owed."""
    return session.apply(step, plan_service(session.host, UNIT,
                                            changed=changed or reload_pending(session.host)))


def test_config(session: Session) -> str | None:
    """nginx's complaint about the files as they are now, or None when they are valid."""
    if session.check:
        return None
    result = session.host.run(["nginx", "-t", "-q"], check=False)
    return None if result.ok else nginx_complaint(result.stderr)


def nginx_complaint(stderr: str) -> str:
    """The line that says what is wrong ([emerg]), not the closing "test failed"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "[emerg]" in line or "[crit]" in line:
            return line
    return lines[-1] if lines else "nginx -t failed"


def revert(host: Host, actions: Sequence[Action]) -> None:
    """Undo file writes that made nginx's configuration invalid."""
    for action in reversed(actions):
        if isinstance(action, WriteFile):
            if action.old is None:
                host.remove(action.path)
            else:
                host.write(action.path, action.old, action.mode, action.owner, action.group)


def apply_tested(session: Session, step: Step, actions: list[Action], what: str) -> bool:
    """Apply file actions, test nginx, and revert them with a clear error if nginx refuses."""
    if actions:
        mark_reload_pending(session)
    changed = session.apply(step, actions)
    problem = test_config(session) if changed else None
    if problem:
        revert(session.host, actions)
        raise FleetError(f"nginx rejected {what}, kept the previous files: {problem}")
    return changed


def worker_pids(host: Host) -> set[int]:
    """PIDs of nginx's worker processes now."""
    return {p.pid for p in host.processes() if p.cmdline.startswith(WORKER)}


def wait_workers_gone(host: Host, pids: set[int], timeout: float = 60.0) -> bool:
    """After a reload, wait until the workers of the old configuration have finished their
    requests and exited: only then may the upstreams they used go away."""
    return wait_until(lambda: not pids & {p.pid for p in host.processes()},
                      timeout=timeout, interval=0.1)

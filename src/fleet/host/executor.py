"""Carry out actions on a host. Resources decide; this is the only place that acts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from fleet.errors import CommandError
from fleet.host.actions import (
    Action,
    BuildVenv,
    ContainedRun,
    ExposeTree,
    FetchWheel,
    MakeDir,
    Move,
    OwnTree,
    Remove,
    Run,
    SetAttrs,
    Symlink,
    Unknown,
    WriteFile,
)
from fleet.host.machine import Host
from fleet.host.poll import RealTime, poll


def perform(host: Host, action: Action) -> None:
    if isinstance(action, WriteFile):
        host.write(action.path, action.content, action.mode, action.owner, action.group)
    elif isinstance(action, SetAttrs):
        host.chown(action.path, action.mode, action.owner, action.group)
    elif isinstance(action, MakeDir):
        host.mkdir(action.path, action.mode, action.owner, action.group)
    elif isinstance(action, Symlink):
        host.symlink(action.path, action.target)
    elif isinstance(action, Remove):
        host.remove(action.path)
    elif isinstance(action, Move):
        host.run(["mv", "-T", action.src, action.dest])
    elif isinstance(action, Run):
        run_command(host, action)
    elif isinstance(action, ContainedRun):
        host.run_contained(list(action.argv), user=action.user, cwd=action.cwd,
                           env=dict(action.env), writable=action.writable,
                           timeout=action.timeout, limits=action.limits)
    elif isinstance(action, BuildVenv):
        host.build_venv(action.path, action.python, action.uv)
    elif isinstance(action, OwnTree):
        host.own_tree(action.path, action.owner, action.group, action.modes)
    elif isinstance(action, ExposeTree):
        host.expose_tree(action.home, action.path)
    elif isinstance(action, FetchWheel):
        host.fetch_wheel(action.indexes, action.project, action.filename, action.sha256,
                         action.member, action.dest, action.tmp, action.cert, action.timeout)
    elif isinstance(action, Unknown):
        raise TypeError(f"cannot perform an undecided step: {action.what}")
    else:  # pragma: no cover - a new action type without an executor branch
        raise TypeError(f"no executor for {type(action).__name__}")


def run_command(host: Host, action: Run, sleep: Callable[[float], None] = time.sleep) -> None:
    """Run once; while the error says someone else holds what it needs, wait and try again."""

    def attempt() -> CommandError | None:
        try:
            host.run(list(action.argv), env=dict(action.env), cwd=action.cwd,
                     timeout=action.timeout)
            return None
        except CommandError as exc:
            if action.retry_while and action.retry_while in (exc.stderr + exc.stdout):
                return exc  # someone else holds it: worth waiting for
            raise

    error = poll(attempt, lambda error: error is None, timeout=action.retry_for, interval=2.0,
                 clock=RealTime(sleep))
    if error is not None:
        raise error


def perform_all(host: Host, actions: Iterable[Action]) -> None:
    for action in actions:
        perform(host, action)

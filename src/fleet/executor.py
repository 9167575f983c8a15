"""Carry out actions on a host. Resources decide; this is the only place that acts."""

from __future__ import annotations

from collections.abc import Iterable

from fleet.actions import (
    Action,
    BuildVenv,
    MakeDir,
    Move,
    Remove,
    Run,
    SetAttrs,
    Symlink,
    Unknown,
    WriteFile,
)
from fleet.host import Host


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
        host.run(list(action.argv), env=dict(action.env), cwd=action.cwd,
                 timeout=action.timeout)
    elif isinstance(action, BuildVenv):
        host.build_venv(action.path, action.python)
    elif isinstance(action, Unknown):
        raise TypeError(f"cannot perform an undecided step: {action.what}")
    else:  # pragma: no cover - a new action type without an executor branch
        raise TypeError(f"no executor for {type(action).__name__}")


def perform_all(host: Host, actions: Iterable[Action]) -> None:
    for action in actions:
        perform(host, action)

"""Compare a desired file, directory or link with the host and return the actions to converge."""

from __future__ import annotations

from fleet.errors import ConfigError
from fleet.host.actions import Action, MakeDir, Remove, SetAttrs, Symlink, WriteFile
from fleet.host.machine import FileState, Host


def plan_file(host: Host, path: str, content: bytes, mode: int = 0o644, owner: str = "root",
              group: str = "root", *, secret: bool = False, why: str = "") -> list[Action]:
    state = host.state(path)
    if state is None:
        return [WriteFile(path=path, content=content, mode=mode, owner=owner, group=group,
                          old=None, secret=secret, why=why)]
    if state.kind != "file":
        return [Remove(path=path, why="not a regular file"),
                WriteFile(path=path, content=content, mode=mode, owner=owner, group=group,
                          old=None, secret=secret, why=why)]
    old = host.read(path)
    if old != content:
        return [WriteFile(path=path, content=content, mode=mode, owner=owner, group=group, old=old,
                          secret=secret, why=why)]
    if (state.mode, state.owner, state.group) != (mode, owner, group):
        return [SetAttrs(path=path, mode=mode, owner=owner, group=group)]
    return []


def plan_dir(host: Host, path: str, mode: int = 0o755, owner: str = "root",
             group: str = "root") -> list[Action]:
    state = host.state(path)
    if state is None:
        return [MakeDir(path=path, mode=mode, owner=owner, group=group)]
    if state.kind != "dir":
        return [Remove(path=path, why="not a directory"), MakeDir(path=path, mode=mode,
                                                                  owner=owner, group=group)]
    if (state.mode, state.owner, state.group) != (mode, owner, group):
        return [SetAttrs(path=path, mode=mode, owner=owner, group=group)]
    return []


def plan_link(host: Host, path: str, target: str) -> list[Action]:
    state = host.state(path)
    if state is not None and state.kind == "link" and state.target == target:
        return []
    if state is not None and state.kind == "dir":
        return [Remove(path=path, why="replaced by a link"), Symlink(path=path, target=target)]
    return [Symlink(path=path, target=target)]


def plan_absent(host: Host, path: str, why: str = "") -> list[Action]:
    return [] if host.state(path) is None else [Remove(path=path, why=why)]


def require_file(host: Host, path: str, key: str) -> FileState:
    """An operator-named file (certificate, key, env_file) must exist as a regular file; else
    an input error naming the file and the key, before anything changes."""
    state = host.state(path)
    if state is None:
        raise ConfigError(path, key, "no such file")
    if state.kind != "file":
        raise ConfigError(path, key, f"must be a regular file, not a {state.kind}")
    return state

"""The app's git repository: a root-owned mirror, fetched on every run, resolved to a commit."""

from __future__ import annotations

import re

from fleet.actions import Action, Move, Remove, Run
from fleet.errors import FleetError
from fleet.host import Host

GIT = ("git", "-c", "safe.directory=*")
GIT_ENV = (("GIT_TERMINAL_PROMPT", "0"), ("GIT_ASKPASS", "/bin/false"))
SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def git(repo: str, *args: str) -> list[str]:
    return [*GIT, "-C", repo, *args]


def plan_clone(host: Host, url: str, repo: str) -> list[Action]:
    """Clone a mirror beside the final path, then rename: a killed clone is never mistaken."""
    if host.state(repo) is not None:
        current = host.run(git(repo, "config", "--get", "remote.origin.url"), check=False)
        if current.stdout.strip() != url:
            return [Run(tuple(git(repo, "remote", "set-url", "origin", url)),
                        "point the mirror at the new repo URL")]
        return []
    tmp = f"{repo}.tmp"
    actions: list[Action] = []
    if host.state(tmp) is not None:
        actions.append(Remove(tmp, "left by an interrupted clone"))
    actions += [Run((*GIT, "clone", "--mirror", "--quiet", url, tmp), f"clone {url}",
                    GIT_ENV, timeout=900),
                Move(tmp, repo)]
    return actions


def fetch(host: Host, repo: str) -> None:
    """Refresh the mirror. Not a change of the server's state: only of fleet's cache of it."""
    host.run(git(repo, "fetch", "--prune", "--quiet", "origin"), env=dict(GIT_ENV), timeout=900)


def resolve(host: Host, repo: str, ref: str | None) -> str:
    wanted = ref or "HEAD"
    result = host.run(git(repo, "rev-parse", "--verify", "--quiet", f"{wanted}^{{commit}}"),
                      check=False)
    sha = result.stdout.strip()
    if not result.ok or not SHA_RE.match(sha):
        raise FleetError(f"ref {wanted!r} not found in the repository")
    return sha


def parse_ls_remote(output: str, ref: str | None) -> str | None:
    """The commit a remote ref points at, from `git ls-remote URL`; tags are peeled."""
    refs: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    if ref is None:
        return refs.get("HEAD")
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            return refs[name]
    return ref if SHA_RE.match(ref) else None


def remote_commit(host: Host, url: str, ref: str | None) -> str | None:
    """Look the ref up without touching the server (for plans); None when it cannot be known."""
    if ref is not None and SHA_RE.match(ref):
        return ref
    result = host.run([*GIT, "ls-remote", url], check=False, env=dict(GIT_ENV), timeout=120)
    return parse_ls_remote(result.stdout, ref) if result.ok else None


def read_blob(host: Host, repo: str, commit: str, path: str) -> bytes | None:
    result = host.run(git(repo, "show", f"{commit}:{path}"), check=False)
    return result.stdout.encode() if result.ok else None


def has_path(host: Host, repo: str, commit: str, path: str) -> bool:
    result = host.run(git(repo, "cat-file", "-e", f"{commit}:{path}"), check=False)
    return result.ok

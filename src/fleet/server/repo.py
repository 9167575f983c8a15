"""The app's git repository: a root-owned mirror, fetched on every run, resolved to a commit.

Credentials in the repo URL never reach git's command line or the mirror's config: git gets
the URL without them and a credential helper (set through GIT_CONFIG_* variables, readable by
root only in /proc/PID/environ) that prints them from the environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from fleet.errors import CommandError, FleetError
from fleet.host.actions import Action, Move, Remove, Run
from fleet.host.machine import Host
from fleet.masking import RepoUrl, mask_urls, split_credentials

GIT = ("git", "-c", "safe.directory=*")
GIT_BIN = "/usr/bin/git"  # Debian's git: present once the packages step installed it
GIT_ENV = (("GIT_TERMINAL_PROMPT", "0"), ("GIT_ASKPASS", "/bin/false"))
GIT_TIMEOUT = 900.0  # [server] git_timeout
REF_CHECKS = 8  # remotes asked at once: each is mostly waiting on the network
SHA_RE = re.compile(r"[0-9a-f]{40}")
LOCK_EXISTS_RE = re.compile(r"Unable to create '[^']*\.lock': File exists")
# A shell function git runs as `HELPER get`: printf is a dash builtin, so the values are
# expanded inside the shell and appear on no command line.
CREDENTIAL_HELPER = ('!f() { test "$1" = get || return 0; printf \'username=%s\\npassword=%s\\n\' '
                     '"$FLEET_GIT_USERNAME" "$FLEET_GIT_PASSWORD"; }; f')


def git_env(repo: RepoUrl, timeout: float = GIT_TIMEOUT) -> tuple[tuple[str, str], ...]:
    """What every command that talks to the remote gets: no prompt, a stalled transfer
    aborted by curl itself (so no helper outlives a killed git), and the credentials."""
    env = [*GIT_ENV, ("GIT_HTTP_LOW_SPEED_LIMIT", "1"),
           ("GIT_HTTP_LOW_SPEED_TIME", str(max(1, int(min(timeout, 60)))))]
    if repo.has_credentials:
        # An empty helper first resets any helper from git's system or global config, so
        # the credentials are never handed to (and stored by) another helper.
        env += [("GIT_CONFIG_COUNT", "2"),
                ("GIT_CONFIG_KEY_0", "credential.helper"), ("GIT_CONFIG_VALUE_0", ""),
                ("GIT_CONFIG_KEY_1", f"credential.{repo.origin()}.helper"),
                ("GIT_CONFIG_VALUE_1", CREDENTIAL_HELPER),
                ("FLEET_GIT_USERNAME", repo.username), ("FLEET_GIT_PASSWORD", repo.password)]
    return tuple(env)


def git(repo: str, *args: str) -> list[str]:
    return [*GIT, "-C", repo, *args]


def plan_clone(host: Host, url: str, repo: str, timeout: float = GIT_TIMEOUT) -> list[Action]:
    """Clone a mirror beside the final path, then rename: a killed clone is never mistaken.

    The mirror's remote URL is the one without credentials: a mirror cloned by an older fleet
    with a token in its config is rewritten here (the token leaves the file)."""
    remote = split_credentials(url)
    if host.state(repo) is not None:
        if origin_in_config(host.read(f"{repo}/config")) == remote.url:
            return []  # what git would say: no command needed (one less per app and run)
        current = host.run(git(repo, "config", "--get", "remote.origin.url"), check=False)
        if current.stdout.strip() != remote.url:
            return [Run(argv=tuple(git(repo, "remote", "set-url", "origin", "--", remote.url)),
                        why="point the mirror at the new repo URL (without credentials)")]
        return []
    tmp = f"{repo}.tmp"
    actions: list[Action] = []
    if host.state(tmp) is not None:
        actions.append(Remove(path=tmp, why="left by an interrupted clone"))
    actions += [Run(argv=(*GIT, "clone", "--mirror", "--quiet", "--", remote.url, tmp),
                    why=f"clone {mask_urls(remote.url)}", env=git_env(remote, timeout),
                    timeout=timeout),
                Move(src=tmp, dest=repo)]
    return actions


def origin_in_config(text: bytes | None) -> str | None:
    """The plain `url = ...` of `[remote "origin"]` in a mirror's config file, as git clone
    and `remote set-url` write it; None when it is written any other way (git decides then)."""
    section = None
    for raw in (text or b"").decode(errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == '[remote "origin"]' and line.startswith("url = "):
            value = line[len("url = "):]
            return None if any(c in value for c in '"\\;#') else value
    return None


def remote_refs(host: Host, urls: Iterable[str],
                timeout: float = GIT_TIMEOUT) -> dict[str, str | None]:
    """`git ls-remote` of each distinct remote, asked in parallel (None: no answer): one
    question per remote and run, however many apps share it, instead of a fetch per app."""
    distinct = list(dict.fromkeys(urls))

    def ask(url: str) -> str | None:
        remote = split_credentials(url)
        result = host.run([*GIT, "ls-remote", "--", remote.url], check=False,
                          env=dict(git_env(remote, timeout)), timeout=min(120, timeout))
        return result.stdout if result.ok else None

    if len(distinct) <= 1:
        return {url: ask(url) for url in distinct}
    with ThreadPoolExecutor(max_workers=min(REF_CHECKS, len(distinct))) as pool:
        return dict(zip(distinct, pool.map(ask, distinct), strict=True))


def up_to_date(host: Host, repo: str, wanted: str | None, advertised: str | None) -> str | None:
    """The commit the remote advertises for `wanted` (`advertised`: its ls-remote output),
    when the mirror already has it: no fetch needed then."""
    if advertised is None:
        return None
    known = parse_ls_remote(advertised, wanted)
    if known is None or not SHA_RE.fullmatch(known):
        return None
    # The mirror holds that commit: nothing to fetch to deploy it (fleet exports commits,
    # never refs, so a mirror ref that lags does not matter). Asked about the commit, not the
    # ref: the answer never changes and is kept between runs (fleet.host.git_answers).
    present = host.run(git(repo, "cat-file", "-e", f"{known}^{{commit}}"), check=False)
    return known if present.ok else None


def fetch(host: Host, url: str, repo: str, timeout: float = GIT_TIMEOUT) -> list[str]:
    """Refresh the mirror. Not a change of the server's state: only of fleet's cache of it.

    A git killed mid-fetch (a killed fleet run) leaves its `*.lock` files, and every later
    fetch refuses ("Unable to create ... .lock: File exists"). Only fleet touches the mirror
    and fleet's runs hold the host lock one at a time, so a lock found here is stale: it is
    removed and the fetch retried once. Returns the lock files removed."""
    argv = git(repo, "fetch", "--prune", "--quiet", "origin")
    env = dict(git_env(split_credentials(url), timeout))
    result = host.run(argv, check=False, env=env, timeout=timeout)
    if result.ok:
        return []
    removed = stale_locks(host, repo) if LOCK_EXISTS_RE.search(result.stderr) else []
    if not removed:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr)
    host.run(["rm", "-f", "--", *removed])
    host.run(argv, env=env, timeout=timeout)
    return removed


def stale_locks(host: Host, repo: str) -> list[str]:
    """git's lock files in the mirror (refs, packed-refs, config, HEAD, shallow). git refuses
    ref names ending in .lock, and find follows no symlink: nothing the remote chose."""
    found = host.run(["find", repo, "-xdev", "-type", "f", "-name", "*.lock"], check=False)
    return [line for line in found.stdout.splitlines() if line.startswith(f"{repo}/")]


def resolve(host: Host, repo: str, ref: str | None) -> str:
    wanted = ref or "HEAD"
    result = host.run(git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options",
                                f"{wanted}^{{commit}}"),
                      check=False)
    sha = result.stdout.strip()
    if not result.ok or not SHA_RE.fullmatch(sha):
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
    return ref if SHA_RE.fullmatch(ref) else None


def remote_commit(host: Host, url: str, ref: str | None,
                  timeout: float = GIT_TIMEOUT) -> str | None:
    """Look the ref up without touching the server (for plans); None when it cannot be known."""
    if ref is not None and SHA_RE.fullmatch(ref):
        return ref
    remote = split_credentials(url)
    result = host.run([*GIT, "ls-remote", "--", remote.url], check=False,
                      env=dict(git_env(remote, timeout)), timeout=min(120, timeout))
    return parse_ls_remote(result.stdout, ref) if result.ok else None


def read_blob(host: Host, repo: str, commit: str, path: str) -> bytes | None:
    result = host.run(git(repo, "show", f"{commit}:{path}"), check=False)
    return result.stdout.encode() if result.ok else None


def has_path(host: Host, repo: str, commit: str, path: str) -> bool:
    result = host.run(git(repo, "cat-file", "-e", f"{commit}:{path}"), check=False)
    return result.ok

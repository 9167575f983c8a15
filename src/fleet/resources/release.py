"""A release: the code of one commit, extracted root-owned, and the virtualenv it runs in.

Both are built beside their final path and renamed (or marked complete) last, so a killed
run never leaves something half-built that a later run would trust.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath

from fleet.actions import Action, BuildVenv, MakeDir, Move, Remove, Run, Symlink, WriteFile
from fleet.config import AppConfig, PipSettings
from fleet.host import Host
from fleet.layout import SYSTEM_PYTHON, AppPaths
from fleet.resources.repo import git, has_path, read_blob

VENV_MARKER = ".fleet-complete"
ARCHIVE_PREFIX = "fleet-archive-"  # git archive's tar of a build, inside the mirror
PIP_ENV = (("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_INPUT", "1"),
           ("PIP_ROOT_USER_ACTION", "ignore"))


def release_id(commit: str) -> str:
    return commit[:12]


def app_dir(root: str, app: AppConfig) -> str:
    return root if app.path == "." else f"{root}/{app.path}"


def secure(path: str, group: str) -> list[Action]:
    """Code is readable by the app's group and nobody else, and writable by root only."""
    return [Run(("chown", "-R", f"root:{group}", path), "make root-owned"),
            Run(("chmod", "-R", "u=rwX,g=rX,o=", path), "make read-only to the app")]


def expose_static(home: str, root: str, app: AppConfig) -> list[Action]:
    """nginx serves static directories itself: let it traverse to them and read them."""
    actions: list[Action] = []
    for _url, directory in app.static:
        target = PurePosixPath(app_dir(root, app)) / directory
        parents = [p for p in target.parents if str(p).startswith(home) and str(p) != home]
        actions += [Run(("chmod", "o+x", *sorted(str(p) for p in parents)), "let nginx in"),
                    Run(("chmod", "-R", "o+rX", str(target)), "let nginx read static files")]
    return actions


def stale_archives(host: Host, repo: str) -> list[Action]:
    """The code of a build is exported as a tar inside the root-only mirror, never in a
    world-traversable place; one a killed run left there is swept by the next build."""
    return [Remove(f"{repo}/{name}", "left by an interrupted run")
            for name in host.listdir(repo) if name.startswith(ARCHIVE_PREFIX)]


def plan_release(host: Host, app: AppConfig, commit: str) -> list[Action]:
    paths = AppPaths(app.name)
    final = paths.release(release_id(commit))
    actions: list[Action] = stale_archives(host, paths.repo)
    if host.state(final) is not None:
        return actions
    tmp = f"{paths.releases}/.{release_id(commit)}.tmp"
    tarball = f"{paths.repo}/{ARCHIVE_PREFIX}{release_id(commit)}.tar"  # root-only (0700)
    if host.state(tmp) is not None:
        actions.append(Remove(tmp, "left by an interrupted run"))
    actions += [
        MakeDir(tmp, 0o750, "root", app.owner),
        Run(tuple(git(paths.repo, "archive", "--format=tar", "-o", tarball, commit)),
            f"export commit {commit[:12]}"),
        Run(("tar", "-x", "-f", tarball, "-C", tmp), "unpack the code"),
        Remove(tarball),
    ]
    for item in app.persist:
        inside = app_dir(tmp, app) + "/" + item
        if has_path(host, paths.repo, commit, str(PurePosixPath(app.path) / item)):
            actions.append(Remove(inside, "the persistent copy replaces the repo's"))
        actions += [MakeDir(str(PurePosixPath(inside).parent), 0o750, "root", app.owner),
                    Symlink(inside, f"{paths.shared}/{item}")]
    actions += secure(tmp, app.owner)
    actions += expose_static(paths.home, tmp, app)
    actions.append(Move(tmp, final))
    return actions


@dataclass(frozen=True)
class Dependencies:
    """How an app's dependencies are installed, and what identifies that install."""

    kind: str  # "requirements", "project" or "none"
    digest: str  # what must be equal for two releases to share a venv

    def venv_key(self, python_version: str) -> str:
        data = f"{self.kind}\0{self.digest}\0{python_version}".encode()
        return hashlib.sha256(data).hexdigest()[:16]


def dependencies(host: Host, app: AppConfig, commit: str) -> Dependencies:
    repo = AppPaths(app.name).repo
    base = PurePosixPath(app.path)
    requirements = read_blob(host, repo, commit, str(base / "requirements.txt"))
    if requirements is not None:
        return Dependencies("requirements", hashlib.sha256(requirements).hexdigest())
    if any(has_path(host, repo, commit, str(base / f)) for f in ("pyproject.toml", "setup.py")):
        # The project itself is installed into the venv, so its code is part of the key.
        return Dependencies("project", commit)
    return Dependencies("none", "")


def python_version(host: Host) -> str:
    return host.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version)"]).stdout.strip()


def venv_ready(host: Host, venv: str) -> bool:
    if host.state(f"{venv}/{VENV_MARKER}") is None:
        return False
    return host.run([f"{venv}/bin/python", "-c", "import sys"], check=False).ok


def pip_env(pip: PipSettings) -> tuple[tuple[str, str], ...]:
    env = list(PIP_ENV)
    if pip.index_url:
        env.append(("PIP_INDEX_URL", pip.index_url))
    if pip.extra_index_urls:
        env.append(("PIP_EXTRA_INDEX_URL", " ".join(pip.extra_index_urls)))
    if pip.cert:
        env.append(("PIP_CERT", pip.cert))
    return tuple(env)


def plan_venv(host: Host, app: AppConfig, commit: str, deps: Dependencies, venv: str,
              pip: PipSettings) -> list[Action]:
    if venv_ready(host, venv):
        return []
    code = app_dir(AppPaths(app.name).release(release_id(commit)), app)
    actions: list[Action] = []
    if host.state(venv) is not None:
        actions.append(Remove(venv, "incomplete or broken"))
    actions.append(BuildVenv(venv, SYSTEM_PYTHON))
    pip_cmd = (f"{venv}/bin/python", "-m", "pip", "install", "--no-input")
    secrets = tuple(u for u in (pip.index_url, *pip.extra_index_urls) if u)
    if deps.kind == "requirements":
        actions.append(Run((*pip_cmd, "-r", "requirements.txt"), "install requirements.txt",
                           pip_env(pip), code, 1800, secrets))
    elif deps.kind == "project":
        actions.append(Run((*pip_cmd, "."), "install the project", pip_env(pip), code, 1800,
                           secrets))
        actions += secure(AppPaths(app.name).release(release_id(commit)), app.owner)
        actions += expose_static(AppPaths(app.name).home,
                                 AppPaths(app.name).release(release_id(commit)), app)
    actions += secure(venv, app.owner)
    actions.append(WriteFile(f"{venv}/{VENV_MARKER}", f"{deps.kind} {deps.digest}\n".encode(),
                             0o640, "root", app.owner))
    return actions

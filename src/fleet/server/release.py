"""A release: the code of one commit, extracted root-owned, and the virtualenv it runs in.

Both are built beside their final path and renamed (or marked complete) last, so a killed
run never leaves something half-built that a later run would trust.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

from fleet.config.settings import AppConfig, PipSettings
from fleet.errors import FleetError
from fleet.host.actions import (
    Action,
    BuildVenv,
    ContainedRun,
    ExposeTree,
    MakeDir,
    Move,
    OwnTree,
    Remove,
    Run,
    Symlink,
    WriteFile,
)
from fleet.host.facts import FactsHost, runs_binary
from fleet.host.files import plan_dir, plan_file
from fleet.host.layout import BUILD_CACHE, BUILD_SCRIPT, LIB_DIR, SYSTEM_PYTHON, AppPaths
from fleet.host.machine import Host, RunResult
from fleet.host.render import render
from fleet.server.repo import git, has_path, read_blob
from fleet.server.resource_limits import unit_limits

VENV_MARKER = ".fleet-complete"
# The marker's second line for a venv uv built relocatable: a copy of it may seed the app's
# next build (venvs built before have no such line and are never copied).
SEEDABLE = "seedable uv-relocatable"
ARCHIVE_PREFIX = "fleet-archive-"  # git archive's tar of a build, inside the mirror
PIP_ENV = (("PIP_DISABLE_PIP_VERSION_CHECK", "1"), ("PIP_NO_INPUT", "1"),
           ("PIP_ROOT_USER_ACTION", "ignore"))


def release_id(commit: str) -> str:
    return commit[:12]


TWIN_SUFFIX = "-b"


def twin_release(commit: str, live: str | None, env_changed: bool) -> str:
    """The release a commit is served as. A new environment for the live commit is served by
    its twin (the same code in a second directory, `ID-b`, or back to `ID`), started beside
    the live vassal and health-gated like a deploy, since a vassal reloaded in place drops
    requests (measured: 35 of 3093 answered 502 while one reloaded). Other new settings of the
    live commit reload its vassal in place."""
    base = release_id(commit)
    if live not in (base, base + TWIN_SUFFIX):
        return base
    if not env_changed:
        return live
    return base if live != base else base + TWIN_SUFFIX


def app_dir(root: str, app: AppConfig) -> str:
    return root if app.path == "." else f"{root}/{app.path}"


def secure(path: str, group: str) -> list[Action]:
    """Code is readable by the app's group and nobody else, and writable by root only. The
    tree may hold links the repo (or a build) chose: they are never followed."""
    return [OwnTree(path=path, owner="root", group=group, modes="private")]


def expose_static(home: str, root: str, app: AppConfig) -> list[Action]:
    """nginx serves static directories itself: let it traverse to them and read them (a link
    on the way is refused, one inside is neither followed nor served)."""
    return [ExposeTree(home=home, path=str(PurePosixPath(app_dir(root, app)) / directory))
            for _url, directory in app.static]


def repo_paths(app: AppConfig) -> list[tuple[str, str]]:
    """(config key, path inside the repo) of every path root acts on in a release."""
    base = PurePosixPath(app.path)
    paths = [] if app.path == "." else [("path", app.path)]
    paths += [("static", str(base / directory)) for _url, directory in app.static]
    paths += [("persist", str(base / item)) for item in app.persist]
    return paths


def tree_entry_mode(host: Host, repo: str, commit: str, path: str) -> str | None:
    """The git mode of one path in the commit's tree ("040000", "120000" for a link, ...),
    or None when it is not there."""
    result = host.run(git(repo, "ls-tree", "--full-tree", commit, "--", path), check=False)
    for line in result.stdout.splitlines():
        meta, _, name = line.partition("\t")
        if name == path and meta.split():
            return meta.split()[0]
    return None


def check_repo_paths(host: Host, app: AppConfig, commit: str) -> None:
    """Every path root acts on must be plain directories all the way down in the commit:
    a link (`static -> /etc`) would make root chmod, serve or link through its target."""
    repo = AppPaths(app.name).repo
    for key, path in repo_paths(app):
        parts = PurePosixPath(path).parts
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            mode = tree_entry_mode(host, repo, commit, prefix)
            if mode is None:
                break  # missing: nothing below it either (persist items are created)
            if mode == "120000":
                raise FleetError(f"{key} {path!r}: {prefix!r} is a symbolic link in commit "
                                 f"{commit[:12]}; fleet refuses links in the paths it acts on")
            last = depth == len(parts)
            if mode != "040000" and not (last and key == "persist"):
                raise FleetError(f"{key} {path!r}: {prefix!r} is not a directory in commit "
                                 f"{commit[:12]}")


def stale_archives(host: Host, repo: str) -> list[Action]:
    """The code of a build is exported as a tar inside the root-only mirror, never in a
    world-traversable place; one a killed run left there is swept by the next build."""
    return [Remove(path=f"{repo}/{name}", why="left by an interrupted run")
            for name in host.listdir(repo) if name.startswith(ARCHIVE_PREFIX)]


def plan_release(host: Host, app: AppConfig, commit: str,
                 release: str | None = None) -> list[Action]:
    """The commit's code in its release directory (`release`: a twin of the same commit, see
    twin_release)."""
    paths = AppPaths(app.name)
    release = release or release_id(commit)
    final = paths.release(release)
    check_repo_paths(host, app, commit)
    actions: list[Action] = stale_archives(host, paths.repo)
    if host.state(final) is not None:
        return actions
    tmp = f"{paths.releases}/.{release}.tmp"
    tarball = f"{paths.repo}/{ARCHIVE_PREFIX}{release}.tar"  # root-only (0700)
    if host.state(tmp) is not None:
        actions.append(Remove(path=tmp, why="left by an interrupted run"))
    actions += [
        MakeDir(path=tmp, mode=0o750, owner="root", group=app.owner),
        Run(argv=tuple(git(paths.repo, "archive", "--format=tar", "-o", tarball, commit)),
            why=f"export commit {commit[:12]}"),
        Run(argv=("tar", "-x", "-f", tarball, "-C", tmp), why="unpack the code"),
        Remove(path=tarball),
    ]
    for item in app.persist:
        inside = app_dir(tmp, app) + "/" + item
        if has_path(host, paths.repo, commit, str(PurePosixPath(app.path) / item)):
            actions.append(Remove(path=inside, why="the persistent copy replaces the repo's"))
        actions += [MakeDir(path=str(PurePosixPath(inside).parent), mode=0o750, owner="root",
                            group=app.owner),
                    Symlink(path=inside, target=f"{paths.shared}/{item}")]
    actions += secure(tmp, app.owner)
    actions += expose_static(paths.home, tmp, app)
    actions.append(Move(src=tmp, dest=final))
    return actions


@dataclass(frozen=True)
class Dependencies:
    """How an app's dependencies are installed, and what identifies that install."""

    kind: str  # "requirements", "project" or "none"
    digest: str  # what must be equal for two releases to share a venv
    # A project with a uv.lock: uv installs exactly what it pins (`uv sync --frozen`). Not part
    # of the key: the digest (the commit) already covers the lock.
    locked: bool = False

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
        return Dependencies("project", commit,
                            locked=has_path(host, repo, commit, str(base / "uv.lock")))
    return Dependencies("none", "")


PYTHON_VERSION = (SYSTEM_PYTHON, "-I", "-c", "import sys; print(sys.version)")


def python_version(host: Host) -> str:
    """The system Python's version: -I and cwd "/" so nothing beside fleet is imported."""
    return host.run(list(PYTHON_VERSION), cwd="/").stdout.strip()


def know_python_version(host: FactsHost) -> None:
    """When fleet itself runs on the system Python's binary, its version is this process's
    own: one Python start (15-35 ms) less per run."""
    if runs_binary(SYSTEM_PYTHON):
        host.remember(PYTHON_VERSION, RunResult(0, sys.version + "\n", ""), cwd="/")


def venv_ready(host: Host, venv: str) -> bool:
    """From file facts only: running the venv's python would run its .pth files as root."""
    if host.state(f"{venv}/{VENV_MARKER}") is None:
        return False
    link = host.state(f"{venv}/bin/python")
    if link is None or link.kind != "link":
        return link is not None and link.kind == "file"
    target = link.target if link.target.startswith("/") else f"{venv}/bin/{link.target}"
    return host.state(target) is not None


def index_env(pip: PipSettings, index: str, extra: str,
              cert: str) -> list[tuple[str, str]]:
    """[server.pip]'s index, extra indexes and CA bundle under one installer's names."""
    env = [(index, pip.index_url)] if pip.index_url else []
    if pip.extra_index_urls:
        env.append((extra, " ".join(pip.extra_index_urls)))
    return env + ([(cert, pip.cert)] if pip.cert else [])


def pip_env(pip: PipSettings) -> tuple[tuple[str, str], ...]:
    return (*PIP_ENV, *index_env(pip, "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"))


def uv_env(pip: PipSettings, cache: str, venv: str) -> tuple[tuple[str, str], ...]:
    """uv's settings for one contained build. Its cache sits in the app's private build cache
    and is copied from, never linked: root takes the venv's files over after the build, and
    a hard link would hand it the cache's files too. uv trusts the system's certificates
    (where pip looks) and never downloads a Python: the venv's is the system's. Bytecode is
    compiled as pip does, since the venv is read-only to the app."""
    env = [("UV_CACHE_DIR", f"{cache}/uv"), ("UV_LINK_MODE", "copy"),
           ("UV_COMPILE_BYTECODE", "1"), ("UV_PYTHON_DOWNLOADS", "never"),
           ("UV_PROJECT_ENVIRONMENT", venv),
           ("UV_NO_PROGRESS", "1"), ("UV_SYSTEM_CERTS", "1")]
    return (*env, *index_env(pip, "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "SSL_CERT_FILE"))


def install_argv(deps: Dependencies, venv: str, src: str,
                 uv: str | None, seeded: bool = False) -> tuple[tuple[str, ...], str]:
    """The command that installs the dependencies from the build copy `src` (run contained,
    by the build script, after the copy), and what it does: pip in the venv, or uv (`uv sync
    --frozen` for a uv.lock: the locked set, without dev groups, the project installed as a
    copy since `src` is removed after). Into a venv `seeded` with the previous one's
    packages, `uv pip install` resolves as into an empty one (--upgrade: installed versions
    are not preferred) and removes what the new set does not hold (--exact); `uv sync` is
    exact already."""
    if uv is None:
        pip_cmd = (f"{venv}/bin/python", "-I", "-m", "pip", "install", "--no-input")
        if deps.kind == "requirements":
            return (*pip_cmd, "-r", f"{src}/requirements.txt"), "install requirements.txt"
        return (*pip_cmd, src), "install the project"
    uv_pip = (uv, "pip", "install", *(("--upgrade", "--exact") if seeded else ()),
              "--python", f"{venv}/bin/python")
    how = " into a copy of the previous venv" if seeded else ""
    if deps.kind == "requirements":
        return ((*uv_pip, "-r", f"{src}/requirements.txt"),
                f"install requirements.txt with uv{how}")
    if deps.locked:
        return ((uv, "sync", "--frozen", "--no-dev", "--no-editable", "--project", src),
                f"install the project and its uv.lock with uv{how}")
    return (*uv_pip, src), f"install the project with uv{how}"


def python_minor(version: str) -> str:
    """"3.11" of sys.version's "3.11.2 (main, ...)": the lib/pythonX.Y a venv installs into."""
    return ".".join(version.split()[0].split(".")[:2]) if version.split() else ""


def venv_seed(host: Host, app: AppConfig, live_venv: str | None, venv: str,
              version: str) -> str | None:
    """The venv a new uv build of `app` may start from: the one its live release runs in,
    when it is that app's own (a venv directory of its own, by the name fleet gives it: no
    other app's can be named), complete, built relocatable by uv (the marker root wrote says
    so) and for the same Python (lib/pythonX.Y). Else None: a fresh build. Read from file
    facts and the root-owned marker only: nothing in the venv is run or followed."""
    paths = AppPaths(app.name)
    if not live_venv or live_venv == venv:
        return None
    parent, _, key = live_venv.rpartition("/")
    if parent != paths.venvs or not re.fullmatch(r"[0-9a-f]{16}", key):
        return None
    marker = host.state(f"{live_venv}/{VENV_MARKER}")
    if marker is None or marker.kind != "file" or marker.owner != "root" \
            or not venv_ready(host, live_venv):
        return None
    if SEEDABLE not in (host.read(f"{live_venv}/{VENV_MARKER}") or b"").decode(
            errors="replace").splitlines():
        return None
    site = host.state(f"{live_venv}/lib/python{python_minor(version)}/site-packages")
    return live_venv if site is not None and site.kind == "dir" else None


def build_cache(app: AppConfig) -> str:
    """The app's private pip cache and HOME for its builds: 0700, owned by the app's user."""
    return f"{BUILD_CACHE}/{app.name}"


def plan_venv(host: Host, app: AppConfig, commit: str, deps: Dependencies, venv: str,
              pip: PipSettings, release: str | None = None,
              uv: str | None = None, seed: str | None = None) -> list[Action]:
    """Root makes an empty venv and hands it to the app's user; pip, or uv when `uv` (its
    binary) is given, and every setup.py or build backend they run, runs contained as that
    user; then root takes the venv back, marks it complete, and only a complete venv is ever
    used. A venv uv builds is made by `uv venv`: uv installs from outside it, so it gets no
    pip or setuptools (virtualenv copied about 1,000 files of them into every venv, for
    root to hand over and take back, and nothing used them). `seed` (uv only, see
    venv_seed): the build first copies that venv's packages in, as the app's user, so that
    only what changed is installed and compiled."""
    if venv_ready(host, venv):
        return []
    paths = AppPaths(app.name)
    code = app_dir(paths.release(release or release_id(commit)), app)
    cache = build_cache(app)
    actions: list[Action] = []
    if host.state(venv) is not None:
        actions.append(Remove(path=venv, why="incomplete or broken"))
    cached = host.state(cache)
    if cached is not None and (cached.kind != "dir" or cached.owner != app.owner):
        # The app's account was deleted and made again (a new uid): what the old one cached
        # is not writable by the new one, and uv, unlike pip, fails on an unwritable cache.
        actions.append(Remove(path=cache, why=f"a build cache not owned by {app.owner}"))
    actions += [MakeDir(path=BUILD_CACHE, mode=0o755), MakeDir(path=cache, mode=0o700,
                                                               owner=app.owner, group=app.owner),
                BuildVenv(path=venv, python=SYSTEM_PYTHON, uv=uv),
                OwnTree(path=venv, owner=app.owner, group=app.owner, modes="keep",
                        why="hand the new venv to the app's user for the build")]
    builder_env = pip_env(pip) if uv is None else uv_env(pip, cache, venv)
    env = (*builder_env, ("HOME", cache), ("PIP_CACHE_DIR", f"{cache}/pip"), ("TMPDIR", "/tmp"))
    secrets = tuple(u for u in (pip.index_url, *pip.extra_index_urls) if u)

    def contained(argv: tuple[str, ...], why: str, cwd: str = "/") -> ContainedRun:
        return ContainedRun(argv=argv, user=app.owner, why=why, env=env, cwd=cwd,
                            writable=(venv, cache), timeout=1800, secrets=secrets,
                            limits=unit_limits(app))

    if deps.kind in ("requirements", "project"):
        # pip writes into the source it builds (build/, *.egg-info: a project, or a local
        # path or `-e .` in requirements.txt), and the release is root-owned and read-only:
        # build from a private copy the app's user owns.
        src = f"{cache}/src"
        if host.state(src) is not None:
            actions.append(Remove(path=src, why="a previous build's copy"))
        actions += plan_dir(host, LIB_DIR, 0o755) + plan_file(
            host, BUILD_SCRIPT, render("build"), 0o755, why="what an app's contained build runs")
        seed = seed if uv is not None else None
        argv, why = install_argv(deps, venv, src, uv, seeded=seed is not None)
        # uv makes its lock files 0644 whatever the umask: the script makes them readable by
        # the app only, like everything its build writes (the cache dir is 0700 anyway).
        private = f"{cache}/uv" if uv is not None else ""
        cwd = src if deps.kind == "requirements" else "/"
        # One contained run for the copy, the install and uv's chmod: each run is a
        # transient unit systemd starts and collects (bench/README.md, "Containment").
        actions.append(contained(("/bin/sh", BUILD_SCRIPT, code, src, cwd, private,
                                  seed or "", venv if seed else "", *argv),
                                 f"copy the code, {why}" + (", keep uv's cache private"
                                                            if private else "")))
        actions.append(Remove(path=src, why="the build copy"))
    actions += secure(venv, app.owner)
    seedable = f"{SEEDABLE}\n" if uv is not None else ""
    actions.append(WriteFile(path=f"{venv}/{VENV_MARKER}",
                             content=f"{deps.kind} {deps.digest}\n{seedable}".encode(),
                             mode=0o640, owner="root", group=app.owner))
    return actions

"""uv builds (issue 19): how uv is installed (root only unpacks a hash-checked wheel), the
command and environment each kind of app gets, and the fallbacks to pip."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.config.settings import AppConfig, PipSettings
from fleet.host.actions import (
    BuildVenv,
    ContainedRun,
    FetchWheel,
    Move,
    OwnTree,
    Run,
    WriteFile,
)
from fleet.host.executor import perform
from fleet.host.machine import UV_VENV_ENV, LocalHost, RunResult, uv_venv_argv
from fleet.server import uv as uv_tool
from fleet.server.release import (
    SEEDABLE,
    VENV_MARKER,
    Dependencies,
    dependencies,
    plan_venv,
    venv_seed,
)
from tests.unit.fakehost import FakeHost, build_parts, build_seed
from tests.unit.support import CONFIG, SHA_A2, SHA_B1, config, run, server

pytestmark = pytest.mark.usefixtures("healthy")

VENV = "/srv/fleet/blog/venvs/abc"
CACHE = "/var/cache/fleet/blog"
SRC = f"{CACHE}/src"
UV = uv_tool.UV_BIN
TOKEN = "https://user:s3cret@pypi.example.com/simple"
APP = AppConfig(name="blog", repo="git://x/blog.git", domains=("blog.test",))


def build(deps: Dependencies, uv: str | None = UV,
          pip: PipSettings = PipSettings()) -> ContainedRun:
    """The one contained run of a build (the build script: copy, install, and for uv its
    cache made private), seen as the installer it runs: its argv, and the cwd the script
    runs it from."""
    actions = plan_venv(FakeHost(), APP, "a" * 40, deps, VENV, pip, uv=uv)
    (run_,) = [a for a in actions if isinstance(a, ContainedRun)]
    parts = build_parts(list(run_.argv))
    assert parts is not None and run_.cwd == "/"  # the script cds into the copy itself
    code, src, cwd, private, installer = parts
    assert code == "/srv/fleet/blog/releases/aaaaaaaaaaaa" and src == SRC
    # uv's lock files come out 0644: made private to the app after
    assert private == (f"{CACHE}/uv" if uv is not None else "")
    return replace(run_, argv=tuple(installer), cwd=cwd)


def test_uv_builds_start_from_an_empty_uv_venv_and_pip_builds_from_a_seeded_one() -> None:
    """uv installs from outside the venv: no pip or setuptools seeded (virtualenv's copy of
    them was uv-only overhead); pip runs from inside the venv and needs its own copy."""
    for uv in (UV, None):
        actions = plan_venv(FakeHost(), APP, "a" * 40, Dependencies("requirements", "d"), VENV,
                            PipSettings(), uv=uv)
        (venv,) = [a for a in actions if isinstance(a, BuildVenv)]
        assert venv.path == VENV and venv.python == "/usr/bin/python3" and venv.uv == uv
        assert ("uv venv" in venv.describe()) == (uv is not None)
        kinds = [type(a) for a in actions]  # made by root, then handed to the app's user
        assert kinds.index(BuildVenv) < kinds.index(OwnTree) < kinds.index(ContainedRun)


def test_uv_venv_reads_no_config_keeps_no_cache_and_downloads_no_python() -> None:
    argv = uv_venv_argv(UV, VENV, "/usr/bin/python3")
    assert argv[:2] == [UV, "venv"] and argv[-1] == VENV
    assert argv[argv.index("--python") + 1] == "/usr/bin/python3"
    for flag in ("--no-config", "--no-cache", "--no-project", "--no-python-downloads"):
        assert flag in argv
    assert "--seed" not in argv and UV_VENV_ENV == {"UV_PYTHON_DOWNLOADS": "never"}


def test_localhost_makes_a_uv_venv_with_the_uv_binary_from_the_root_directory(
        tmp_path: Path) -> None:
    """The executor's BuildVenv with uv runs that binary (logged like any command), from
    "/" with the clean environment: here a stand-in that records what it was given."""
    record = tmp_path / "record"
    fake_uv = tmp_path / "uv"
    fake_uv.write_text(f'#!/bin/sh\n{{ pwd; echo "$UV_PYTHON_DOWNLOADS"; echo "$@"; }} > {record}\n'
                       f'mkdir -p "$(eval echo \\${{$#}})/bin"\n')
    fake_uv.chmod(fake_uv.stat().st_mode | stat.S_IXUSR)
    logged: list[list[str]] = []
    venv = tmp_path / "venv"
    perform(LocalHost(logged.append), BuildVenv(path=str(venv), uv=str(fake_uv)))
    cwd, downloads, args = record.read_text().splitlines()
    assert cwd == "/" and downloads == "never"
    assert args.split() == uv_venv_argv(str(fake_uv), str(venv), "/usr/bin/python3")[1:]
    assert logged == [uv_venv_argv(str(fake_uv), str(venv), "/usr/bin/python3")]
    assert venv.is_dir() and os.listdir(venv) == ["bin"]


def test_requirements_install_with_uv_pip_contained_as_the_app() -> None:
    install = build(Dependencies("requirements", "d"))
    assert install.argv == (UV, "pip", "install", "--python", f"{VENV}/bin/python",
                            "-r", f"{SRC}/requirements.txt")
    assert install.user == "blog" and install.cwd == SRC
    assert install.writable == (VENV, CACHE)
    env = dict(install.env)
    assert env["UV_CACHE_DIR"] == f"{CACHE}/uv"  # the app's private cache
    assert env["UV_LINK_MODE"] == "copy"  # root takes the venv's files: never the cache's
    assert env["UV_PYTHON_DOWNLOADS"] == "never" and env["UV_COMPILE_BYTECODE"] == "1"
    assert env["UV_SYSTEM_CERTS"] == "1" and env["HOME"] == CACHE


def test_a_project_with_uv_lock_is_synced_frozen_into_the_venv() -> None:
    install = build(Dependencies("project", "a" * 40, locked=True))
    assert install.argv == (UV, "sync", "--frozen", "--no-dev", "--no-editable",
                            "--project", SRC)
    assert dict(install.env)["UV_PROJECT_ENVIRONMENT"] == VENV


def test_a_project_without_a_lock_is_installed_with_uv_pip() -> None:
    install = build(Dependencies("project", "a" * 40))
    assert install.argv == (UV, "pip", "install", "--python", f"{VENV}/bin/python", SRC)


def test_pip_settings_reach_uv_and_stay_masked() -> None:
    pip = PipSettings(index_url=TOKEN, extra_index_urls=("https://a.test/s", "https://b.test/s"),
                      cert="/etc/ssl/corp.pem")
    install = build(Dependencies("requirements", "d"), pip=pip)
    env = dict(install.env)
    assert env["UV_INDEX_URL"] == TOKEN and TOKEN not in " ".join(install.argv)
    assert env["UV_EXTRA_INDEX_URL"] == "https://a.test/s https://b.test/s"
    assert env["SSL_CERT_FILE"] == "/etc/ssl/corp.pem"
    assert TOKEN in install.secrets


def test_without_uv_pip_builds_as_before() -> None:
    install = build(Dependencies("requirements", "d"), uv=None)
    assert install.argv[:4] == (f"{VENV}/bin/python", "-I", "-m", "pip")
    assert not [k for k, _ in install.env if k.startswith("UV_")]
    locked = build(Dependencies("project", "a" * 40, locked=True), uv=None)
    assert locked.argv[-1] == SRC and "sync" not in locked.argv  # pip installs the project


def test_dependencies_notice_a_uv_lock_without_changing_the_venv_key() -> None:
    host = server()
    host.repo_files[SHA_B1] = {**host.repo_files[SHA_B1], "uv.lock": b"version = 1\n"}
    app = AppConfig(name="beta", repo="git://remote/beta.git", domains=("beta.test",))
    run(host, config(host))  # clones the mirror
    deps = dependencies(host, app, SHA_B1)
    assert deps.locked and deps.kind == "project"
    assert deps.venv_key("3.11") == Dependencies("project", SHA_B1).venv_key("3.11")


def test_root_fetches_the_pinned_wheel_itself_and_runs_nothing() -> None:
    """No pip, no venv, no command at all: fleet downloads the file of the server's machine,
    checks its pinned sha256 and unpacks only the binary, then renames the directory into
    place."""
    pip = PipSettings(index_url=TOKEN, extra_index_urls=("https://mirror.test/simple",),
                      cert="/etc/ca.pem")
    actions = uv_tool.plan_uv(FakeHost(), pip, "x86_64")
    assert not [a for a in actions if isinstance(a, (Run, ContainedRun, BuildVenv))]
    (fetch,) = [a for a in actions if isinstance(a, FetchWheel)]
    filename, sha256 = uv_tool.UV_WHEELS["x86_64"]
    assert (fetch.filename, fetch.sha256) == (filename, sha256)
    assert "x86_64" in filename and filename.startswith(f"uv-{uv_tool.UV_VERSION}-")
    assert fetch.indexes == (TOKEN, "https://mirror.test/simple") and fetch.cert == "/etc/ca.pem"
    assert fetch.member == f"uv-{uv_tool.UV_VERSION}.data/scripts/uv"
    assert fetch.dest == f"{uv_tool.UV_TMP}/wheel/bin/uv" and fetch.tmp == uv_tool.UV_TMP
    text = fetch.describe()
    assert "s3cret" not in text and "https://********@pypi.example.com/simple" in text
    assert "check its sha256" in text and "unpack only" in text
    (move,) = [a for a in actions if isinstance(a, Move)]
    assert (move.src, move.dest) == (f"{uv_tool.UV_TMP}/wheel", uv_tool.UV_DIR)
    kinds = [type(a) for a in actions]
    assert kinds.index(FetchWheel) < kinds.index(Move)  # renamed into place last
    aarch64 = uv_tool.plan_uv(FakeHost(), PipSettings(), "aarch64")
    (fetch,) = [a for a in aarch64 if isinstance(a, FetchWheel)]
    assert "aarch64" in fetch.filename and fetch.sha256 == uv_tool.UV_WHEELS["aarch64"][1]
    assert fetch.indexes == ("https://pypi.org/simple/",)


def test_a_machine_without_a_pinned_wheel_is_named() -> None:
    with pytest.raises(uv_tool.NoWheel, match="'riscv64'"):
        uv_tool.plan_uv(FakeHost(), PipSettings(), "riscv64")


def test_an_unknown_machine_falls_back_to_pip_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uv_tool, "UV_WHEELS", {})
    host = server()
    session, outcome = run(host, config(host, UV_CONFIG))
    (step,) = [s for s in session.steps if s.name == "uv"]
    assert step.notes and "builds use pip" in step.notes[0] and "no uv" in step.notes[0]
    assert not host.fetched and host.state(UV) is None and not uv_runs(host)
    assert outcome.apps["alpha"].health == "passed"


def installers(host: FakeHost) -> list[list[str]]:
    """What the builds' contained runs installed with."""
    return [parts[-1] for argv, *_ in host.contained if (parts := build_parts(argv))]


def uv_runs(host: FakeHost) -> list[list[str]]:
    return [argv for argv in installers(host) if argv[0] == UV]


UV_CONFIG = '[server]\nbuilder = "uv"\n' + CONFIG


def test_apply_installs_uv_once_and_builds_with_it() -> None:
    host = server()
    session, _ = run(host, config(host, UV_CONFIG))
    assert host.state(UV) is not None
    assert [s for s in session.steps if s.name == "uv" and s.actions]
    assert len(host.fetched) == 1 and host.fetched[0][-1] == f"{uv_tool.UV_TMP}/wheel/bin/uv"
    assert len(uv_runs(host)) == 2  # alpha's requirements, beta's project
    assert len(host.ran(UV, "venv")) == 2  # their venvs: made by uv, nothing seeded
    session, _ = run(host, config(host, UV_CONFIG))
    assert not [s for s in session.steps if s.name == "uv" and s.actions]


def test_uv_that_cannot_be_installed_falls_back_to_pip_and_says_so() -> None:
    host = server()
    host.uv_fails = True
    session, outcome = run(host, config(host, UV_CONFIG))
    (step,) = [s for s in session.steps if s.name == "uv"]
    assert step.notes and "builds use pip" in step.notes[0]
    assert host.state(uv_tool.UV_TMP) is None and host.state(UV) is None
    assert not uv_runs(host) and outcome.apps["alpha"].health == "passed"
    assert not [c for c in host.commands if c[1:2] == ["venv"]]  # seeded venvs, for pip
    pips = [argv for argv in installers(host) if argv[1:4] == ["-I", "-m", "pip"]]
    assert len(pips) == 2


def test_builder_pip_never_installs_uv() -> None:
    host = server()
    text = "[server]\nbuilder = \"pip\"\n" + CONFIG
    session, _ = run(host, config(host, text))
    assert not [s for s in session.steps if s.name == "uv"]
    assert host.state(UV) is None and not uv_runs(host)


def test_a_cache_left_by_an_earlier_account_of_the_app_is_dropped_before_the_build() -> None:
    """userdel + a re-created user (new uid): the old cache's files are not the new account's,
    and uv fails on a cache it cannot write (the e2e's killed-deploy runs after such a test)."""
    host = FakeHost()
    host.mkdir(CACHE, 0o700, "1007", "1007")
    actions = plan_venv(host, APP, "a" * 40, Dependencies("requirements", "d"), VENV,
                        PipSettings(), uv=UV)
    removes = [a for a in actions if getattr(a, "path", None) == CACHE]
    assert [type(a).__name__ for a in removes] == ["Remove", "MakeDir"], removes
    host.chown(CACHE, 0o700, "blog", "blog")
    kept = plan_venv(host, APP, "a" * 40, Dependencies("requirements", "d"), VENV,
                     PipSettings(), uv=UV)
    assert [type(a).__name__ for a in kept if getattr(a, "path", None) == CACHE] == ["MakeDir"]


# ---------------------------------------------------------------- seeded builds
SEEDABLE_LINE = f"{SEEDABLE}\n".encode()
PY = "3.11.2 (main) [GCC 12.2.0]"
OLD = "/srv/fleet/blog/venvs/0123456789abcdef"
NEW = "/srv/fleet/blog/venvs/fedcba9876543210"


def built_venv(host: FakeHost, venv: str, marker: bytes = b"requirements d\n" + SEEDABLE_LINE,
               python: str = "3.11") -> None:
    """A venv as a finished uv build leaves it: root's, complete, packages for `python`."""
    host.build_venv(venv, "/usr/bin/python3")
    host.mkdir(f"{venv}/lib/python{python}/site-packages", 0o750, "root", "blog")
    host.mkdir("/usr/bin", 0o755, "root", "root")
    host.write("/usr/bin/python3", b"", 0o755, "root", "root")
    host.write(f"{venv}/{VENV_MARKER}", marker, 0o640, "root", "blog")


def test_a_uv_build_is_seeded_from_the_apps_complete_relocatable_live_venv() -> None:
    host = FakeHost()
    built_venv(host, OLD)
    assert venv_seed(host, APP, OLD, NEW, PY) == OLD


@pytest.mark.parametrize("why, live, setup", [
    ("no live release", None, lambda h: None),
    ("the new venv itself", NEW, lambda h: built_venv(h, NEW)),
    ("another app's venv", "/srv/fleet/other/venvs/0123456789abcdef",
     lambda h: built_venv(h, "/srv/fleet/other/venvs/0123456789abcdef")),
    ("a path out of the app's venvs", "/srv/fleet/blog/venvs/../../other/venvs/0123456789abcdef",
     lambda h: built_venv(h, "/srv/fleet/blog/venvs/../../other/venvs/0123456789abcdef")),
    ("not a venv name fleet gives", "/srv/fleet/blog/venvs/abc", lambda h: built_venv(
        h, "/srv/fleet/blog/venvs/abc")),
    ("incomplete (no marker)", OLD, lambda h: (built_venv(h, OLD), h.remove(
        f"{OLD}/{VENV_MARKER}"))),
    ("built before venvs were relocatable", OLD, lambda h: built_venv(
        h, OLD, marker=b"requirements d\n")),
    ("built by pip", OLD, lambda h: built_venv(h, OLD, marker=b"requirements d\n")),
    ("a marker the app wrote", OLD, lambda h: (built_venv(h, OLD), h.chown(
        f"{OLD}/{VENV_MARKER}", 0o640, "blog", "blog"))),
    ("another Python", OLD, lambda h: built_venv(h, OLD, python="3.13")),
])
def test_no_seed(why: str, live: str | None, setup) -> None:
    host = FakeHost()
    setup(host)
    assert venv_seed(host, APP, live, NEW, PY) is None, why


def test_a_seeded_uv_build_copies_the_seed_then_installs_exactly_the_new_set() -> None:
    host = FakeHost()
    actions = plan_venv(host, APP, "a" * 40, Dependencies("requirements", "d"), VENV,
                        PipSettings(), uv=UV, seed=OLD)
    (run_,) = [a for a in actions if isinstance(a, ContainedRun)]
    assert build_seed(run_.argv) == (OLD, VENV)  # copied by the app's user, contained
    assert run_.user == "blog" and run_.writable == (VENV, CACHE)  # the seed: read only
    parts = build_parts(run_.argv)
    assert parts is not None
    assert parts[-1] == [UV, "pip", "install", "--upgrade", "--exact", "--python",
                         f"{VENV}/bin/python", "-r", f"{SRC}/requirements.txt"]
    kinds = [type(a) for a in actions]  # an empty relocatable venv first, root's after
    assert kinds.index(BuildVenv) < kinds.index(ContainedRun) < len(kinds) - 2
    assert actions[-2] == OwnTree(path=VENV, owner="root", group="blog", modes="private")
    marker = actions[-1]
    assert isinstance(marker, WriteFile) and marker.content == b"requirements d\n" + SEEDABLE_LINE
    project = plan_venv(host, APP, "a" * 40, Dependencies("project", "a" * 40), VENV,
                        PipSettings(), uv=UV, seed=OLD)
    (run_,) = [a for a in project if isinstance(a, ContainedRun)]
    assert build_parts(run_.argv)[-1][3:5] == ["--upgrade", "--exact"]  # type: ignore[index]
    locked = plan_venv(host, APP, "a" * 40, Dependencies("project", "a" * 40, locked=True),
                       VENV, PipSettings(), uv=UV, seed=OLD)
    (run_,) = [a for a in locked if isinstance(a, ContainedRun)]
    assert build_seed(run_.argv) == (OLD, VENV)
    assert build_parts(run_.argv)[-1][:3] == [UV, "sync", "--frozen"]  # type: ignore[index]


def test_unseeded_and_pip_builds_copy_nothing_and_pip_venvs_are_never_seeds() -> None:
    for uv, seed in ((UV, None), (None, OLD)):
        actions = plan_venv(FakeHost(), APP, "a" * 40, Dependencies("requirements", "d"), VENV,
                            PipSettings(), uv=uv, seed=seed)
        (run_,) = [a for a in actions if isinstance(a, ContainedRun)]
        assert build_seed(run_.argv) == ("", "")
        assert "--exact" not in run_.argv
        marker = actions[-1]
        assert isinstance(marker, WriteFile)
        assert (SEEDABLE_LINE in marker.content) == (uv is not None)


def requirements_change(host: FakeHost, text: bytes = b"flask\nsix\n") -> None:
    host.repo_files[SHA_A2] = {"requirements.txt": text, "wsgi.py": b"app = 2\n"}
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}


def alpha_builds(host: FakeHost) -> list[list[str]]:
    return [argv for argv, *_ in host.contained
            if build_parts(argv) and argv[2].startswith("/srv/fleet/alpha/")]


def test_apply_seeds_a_changed_requirements_build_from_the_live_venv() -> None:
    host = server()
    cfg = config(host, UV_CONFIG)
    run(host, cfg)
    (first,) = alpha_builds(host)
    assert build_seed(first) == ("", "")  # nothing to start from
    live_venv = json.loads(host.read("/var/lib/fleet/apps/alpha.json") or b"")[
        "releases"][0]["venv"]
    requirements_change(host)
    _session, outcome = run(host, cfg)
    assert outcome.apps["alpha"].health == "passed"
    second = alpha_builds(host)[1]
    seed, venv = build_seed(second)
    assert seed == live_venv and venv != live_venv and venv.startswith("/srv/fleet/alpha/")
    assert "--exact" in second


def test_a_seeded_build_that_fails_is_built_again_from_an_empty_venv() -> None:
    host = server()
    cfg = config(host, UV_CONFIG)
    run(host, cfg)
    requirements_change(host)

    def seeded_fails(_host: FakeHost, argv: list[str]):
        if build_parts(argv) and argv[2].startswith("/srv/fleet/alpha/") and argv[6]:
            return RunResult(1, "", "error: failed to copy the seed")
        return None

    host.handlers.append(seeded_fails)
    session, outcome = run(host, cfg)
    assert outcome.apps["alpha"].health == "passed"
    builds = alpha_builds(host)[1:]
    assert [bool(build_seed(b)[0]) for b in builds] == [True, False]
    (step,) = [s for s in session.steps if s.name == "virtualenv" and s.app == "alpha"]
    assert any("built again from an empty venv" in n for n in step.notes), step.notes
    removed = [a for a in session.side_actions if getattr(a, "why", "") == "failed build"]
    assert len(removed) == 1

"""Contained runs: the systemd-run command line, the secret-free environment file, and the
build and init steps that use them (issue 14, item 1)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from fleet.config.settings import AppConfig, PipSettings
from fleet.host.actions import MASK, BuildVenv, ContainedRun, OwnTree, Run, WriteFile
from fleet.host.layout import BUILD_SCRIPT
from fleet.host.machine import LocalHost, contained_argv, env_file_text
from fleet.host.render import render
from fleet.server.release import Dependencies, plan_venv, python_version, venv_ready
from tests.unit.fakehost import FakeHost, build_parts

VENV = "/srv/fleet/blog/venvs/abc"
TOKEN = "https://user:s3cret@pypi.example.com/simple"


def test_contained_argv_sandboxes_and_carries_no_environment() -> None:
    argv = contained_argv(["/v/bin/python", "-I", "-m", "pip"], user="blog", cwd="/",
                          writable=("/v", "/var/cache/fleet/blog"), timeout=60,
                          env_file="/run/.fleet-env-x")
    assert argv[:5] == ["systemd-run", "--wait", "--pipe", "--collect", "--quiet"]
    props = {argv[i + 1] for i, a in enumerate(argv) if a == "-p"}
    assert {"User=blog", "Group=blog", "ProtectSystem=strict", "ProtectHome=yes",
            "PrivateTmp=yes", "NoNewPrivileges=yes", "StandardInput=null",
            "RuntimeMaxSec=60", "WorkingDirectory=/", "ReadWritePaths=/v",
            "ReadWritePaths=/var/cache/fleet/blog",
            "EnvironmentFile=/run/.fleet-env-x"} <= props
    assert argv[argv.index("--") + 1:] == ["/v/bin/python", "-I", "-m", "pip"]


def test_env_file_quotes_values() -> None:
    text = env_file_text({"A": 'x "y" $HOME \\ z', "B": "plain"})
    assert text == 'A="x \\"y\\" \\$HOME \\\\ z"\nB="plain"\n'


def test_contained_run_masks_secrets_in_its_plan_line() -> None:
    action = ContainedRun(argv=("pip", "--index-url", TOKEN), user="blog", why="install",
                          secrets=(TOKEN,))
    assert TOKEN not in action.describe() and MASK in action.describe()
    assert "as blog, contained" in action.describe()


def test_localhost_gives_children_no_stdin() -> None:
    result = LocalHost().run(["sh", "-c", "cat; echo done"], timeout=10)
    assert result.stdout == "done\n"


def test_venv_ready_never_runs_the_venvs_python() -> None:
    host = FakeHost()
    host.mkdir(f"{VENV}/bin", 0o755, "root", "blog")
    host.symlink(f"{VENV}/bin/python", "/usr/bin/python3")
    host.write(f"{VENV}/.fleet-complete", b"x", 0o640, "root", "blog")
    assert not venv_ready(host, VENV)  # the link's target is missing on this host
    host.mkdir("/usr/bin", 0o755, "root", "root")
    host.write("/usr/bin/python3", b"", 0o755, "root", "root")
    assert venv_ready(host, VENV)
    assert host.commands == []


def test_python_version_is_isolated() -> None:
    host = FakeHost()
    python_version(host)
    assert host.commands == [["/usr/bin/python3", "-I", "-c", "import sys; print(sys.version)"]]


def test_pip_runs_contained_as_the_app_user_then_root_takes_the_venv() -> None:
    host = FakeHost()
    app = AppConfig(name="blog", repo="git://x/blog.git", domains=("blog.test",))
    pip = PipSettings(index_url=TOKEN)
    actions = plan_venv(host, app, "a" * 40, Dependencies("requirements", "d"), VENV, pip)
    kinds = [type(a) for a in actions]
    marker = next(a for a in actions if isinstance(a, WriteFile) and a.path.endswith("complete"))
    assert kinds.index(BuildVenv) < kinds.index(ContainedRun) < actions.index(marker)
    (build,) = [a for a in actions if isinstance(a, ContainedRun)]
    parts = build_parts(build.argv)
    assert parts is not None
    code, src, cwd, private, installer = parts
    # pip builds local paths (`./pkg`, `-e .`) in place: never in the read-only release.
    assert code == "/srv/fleet/blog/releases/aaaaaaaaaaaa"
    assert src == cwd == "/var/cache/fleet/blog/src" and private == ""
    assert build.user == "blog" and installer[:4] == [f"{VENV}/bin/python", "-I", "-m", "pip"]
    assert installer[-2:] == ["-r", "/var/cache/fleet/blog/src/requirements.txt"]
    (script,) = [a for a in actions if isinstance(a, WriteFile) and a.path == BUILD_SCRIPT]
    assert script.owner == "root" and script.mode == 0o755  # root's, read-only to the app
    assert build.writable == (VENV, "/var/cache/fleet/blog")
    assert ("PIP_INDEX_URL", TOKEN) in build.env and TOKEN not in " ".join(build.argv)
    assert ("HOME", "/var/cache/fleet/blog") in build.env
    runs = [a for a in actions if isinstance(a, Run)]
    assert not [r for r in runs if "pip" in " ".join(r.argv)]  # nothing of pip as root
    owns = [a for a in actions if isinstance(a, OwnTree)]
    assert owns[0] == OwnTree(path=VENV, owner="blog", group="blog", modes="keep",
                              why=owns[0].why)  # handed to the app
    assert owns[-1] == OwnTree(path=VENV, owner="root", group="blog",
                               modes="private")  # secure(): taken back
    assert actions.index(owns[-1]) > actions.index(build)


def test_project_builds_from_a_private_copy() -> None:
    host = FakeHost()
    app = AppConfig(name="blog", repo="git://x/blog.git", domains=("blog.test",))
    actions = plan_venv(host, app, "a" * 40, Dependencies("project", "a" * 40), VENV,
                        PipSettings())
    (build,) = [a for a in actions if isinstance(a, ContainedRun)]
    parts = build_parts(build.argv)
    assert parts is not None
    _code, src, cwd, _private, installer = parts
    assert installer[-1] == src == "/var/cache/fleet/blog/src" and cwd == "/"


def test_a_timed_out_command_takes_its_whole_tree_with_it(tmp_path) -> None:
    """git's remote helper, hung on a silent server, outlived git and held the pipes: at the
    timeout every descendant goes, and run() returns instead of waiting for them."""
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    result = LocalHost().run(["sh", "-c", f"sleep 300 & echo $! > {marker}; sleep 300"],
                             check=False, timeout=1)
    assert result.returncode == 124 and "timed out after 1 s" in result.stderr
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child)


def running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan stays one until init reaps it)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def build_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "build"
    script.write_bytes(render("build"))
    return subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True,
                          check=False)


def test_the_build_script_copies_installs_from_cwd_then_makes_the_cache_private(
        tmp_path: Path) -> None:
    """templates/build, run by a real shell: the copy, the installer run from CWD (its exit
    status is the build's), then PRIVATE made unreadable to others even when it failed."""
    code, src, cache = tmp_path / "code", tmp_path / "src", tmp_path / "uv"
    code.mkdir()
    (code / "requirements.txt").write_text("flask\n")
    (cache / "locks").mkdir(parents=True)
    (cache / "locks" / "lock").write_text("")
    (cache / "locks" / "lock").chmod(0o644)  # as uv makes them
    out = tmp_path / "out"
    done = build_script(tmp_path, str(code), str(src), str(src), str(cache), "", "",
                        "/bin/sh", "-c", 'pwd > "$0"; cat requirements.txt >> "$0"; exit 3',
                        str(out))
    assert done.returncode == 3  # the installer's
    assert out.read_text() == f"{src}\nflask\n"  # ran in the copy
    assert (src / "requirements.txt").read_text() == "flask\n"
    assert stat.S_IMODE((cache / "locks" / "lock").stat().st_mode) == 0o640
    assert stat.S_IMODE((cache / "locks").stat().st_mode) & 0o007 == 0


def test_the_build_script_runs_nothing_when_the_copy_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = build_script(tmp_path, str(tmp_path / "missing"), str(tmp_path / "src"), "/", "",
                        "", "", "/bin/sh", "-c", 'echo ran > "$0"', str(out))
    assert done.returncode != 0 and not out.exists()
    (tmp_path / "code").mkdir()
    ok = build_script(tmp_path, str(tmp_path / "code"), str(tmp_path / "copy"), "/", "",
                      "", "", "/bin/true")
    assert ok.returncode == 0  # without PRIVATE: nothing made private, the installer's 0


def test_the_build_script_seeds_the_venv_with_the_previous_ones_files_and_times(
        tmp_path: Path) -> None:
    """SEED's bin/ and lib/ are copied over the new venv before the installer runs, with
    their times (a compiled file stays up to date with its source), links copied as links
    (the new venv's own bin/python replaced), and nothing else of SEED: its completeness
    marker must never make the new venv look finished."""
    seed, venv = tmp_path / "seed", tmp_path / "venv"
    site = seed / "lib" / "python3.11" / "site-packages" / "flask"
    (site / "__pycache__").mkdir(parents=True)
    (site / "app.py").write_text("x = 1\n")
    (site / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"pyc")
    (seed / "bin").mkdir()
    (seed / "bin" / "flask").write_text("#!/bin/sh\n")
    (seed / "bin" / "flask").chmod(0o750)
    (seed / "bin" / "python").symlink_to("/usr/bin/python3")
    (seed / ".fleet-complete").write_text("requirements d\n")
    old = 1_600_000_000
    for path in (site / "app.py", site / "__pycache__" / "app.cpython-311.pyc"):
        os.utime(path, (old, old))
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to("/usr/bin/python3.11")
    (venv / "pyvenv.cfg").write_text("relocatable = true\n")
    (tmp_path / "code").mkdir()
    out = tmp_path / "out"
    done = build_script(tmp_path, str(tmp_path / "code"), str(tmp_path / "src"), "/", "",
                        str(seed), str(venv), "/bin/sh", "-c", 'ls "$1" > "$0"', str(out),
                        str(venv / "lib" / "python3.11" / "site-packages" / "flask"))
    assert done.returncode == 0, done.stderr
    assert out.read_text().split() == ["__pycache__", "app.py"]  # copied before the install
    copied = venv / "lib" / "python3.11" / "site-packages" / "flask"
    assert (copied / "app.py").stat().st_mtime == old
    assert (copied / "__pycache__" / "app.cpython-311.pyc").stat().st_mtime == old
    assert os.readlink(venv / "bin" / "python") == "/usr/bin/python3"
    assert os.access(venv / "bin" / "flask", os.X_OK)
    assert not (venv / ".fleet-complete").exists()
    assert (venv / "pyvenv.cfg").read_text() == "relocatable = true\n"  # the new venv's

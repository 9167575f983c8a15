"""Error paths that must never make a server worse: env_file secrets, interrupted dpkg, the run
lock, CLI input errors. The same scenarios on a real server are in tests/e2e/test_reliability.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet.cli.report import summary_json
from fleet.config.envfile import app_environment, check_env_files, parse_env_file
from fleet.config.parse import parse_document, parse_toml
from fleet.errors import EXIT_INVALID, CommandError, ConfigError, LockError
from fleet.host.lock import run_lock
from fleet.host.session import Session
from fleet.server.packages import plan_packages
from tests.unit.fakehost import FakeHost
from tests.unit.support import Quiet, run, server
from tests.unit.support import config as load_config

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Value-42"
SECRETS_FILE = "/etc/secrets/alpha.env"
APP = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
env_file = "/etc/secrets/alpha.env"
[apps.alpha.env]
PUBLIC = "visible"
SHARED = "from-env-table"
"""


def with_secrets(text: str = f"# comment\n\nTOKEN={SECRET}\nSHARED=from-file\n",
                 mode: int = 0o600, owner: str = "root") -> FakeHost:
    host = server()
    host.mkdir("/etc/secrets", 0o700, "root", "root")
    host.write(SECRETS_FILE, text.encode(), mode, owner, owner)
    return host


# ----------------------------------------------------------------------------- env_file


@pytest.mark.parametrize(("value", "problem"), [
    ("relative.env", "must be an absolute path"),
    ("/etc/../root/x.env", "must be an absolute path without '..'"),
    (3, "expected a string, got integer"),
])
def test_env_file_key_shape_is_checked_before_the_server(value: object, problem: str) -> None:
    text = APP.replace('"/etc/secrets/alpha.env"', json.dumps(value))
    with pytest.raises(ConfigError) as info:
        parse_document("f.toml", parse_toml("f.toml", text))
    assert str(info.value).startswith("f.toml: apps.alpha.env_file: ")
    assert problem in str(info.value)


def test_misspelt_env_file_key_suggests_the_right_one() -> None:
    text = APP.replace("env_file =", "envfile =")
    with pytest.raises(ConfigError, match="did you mean 'env_file'"):
        parse_document("f.toml", parse_toml("f.toml", text))


@pytest.mark.parametrize(("host", "problem"), [
    (server(), "no such file"),
    (with_secrets(mode=0o644), "readable by nobody else (chmod 600; it is root 0644)"),
    (with_secrets(mode=0o640), "it is root 0640"),
    (with_secrets(owner="www-data"), "it is www-data 0600"),
    (with_secrets(f"TOKEN {SECRET}\n"), "line 1: expected KEY=VALUE"),
    (with_secrets(f"1TOKEN={SECRET}\n"), "line 1: is not a valid environment variable name"),
], ids=["missing", "world-readable", "group-readable", "not-root", "no-equals", "bad-name"])
def test_unsafe_or_bad_env_file_is_refused_without_showing_values(host: FakeHost,
                                                                  problem: str) -> None:
    cfg = load_config(host, APP)
    with pytest.raises(ConfigError) as info:
        check_env_files(host, cfg)
    message = str(info.value)
    assert info.value.exit_code == EXIT_INVALID
    assert message.startswith(SECRETS_FILE + ": ") and problem in message, message
    assert SECRET not in message and "\n" not in message


def test_env_table_wins_over_env_file() -> None:
    host = with_secrets()
    app = load_config(host, APP).apps[0]
    assert dict(app_environment(host, app)) == {
        "PUBLIC": "visible", "SHARED": "from-env-table", "TOKEN": SECRET}
    assert parse_env_file("x", " A =b=c d\n#x\n") == (("A", "b=c d"),)


def test_env_file_secret_reaches_env_file_only_and_never_the_report() -> None:
    host = with_secrets()
    cfg = load_config(host, APP)
    session, outcome = run(host, cfg)
    env = host.files["/etc/fleet/env/alpha.env"]
    assert (env.mode, env.owner) == (0o600, "root")
    assert f"TOKEN={SECRET}\n".encode() in env.content
    assert b"PUBLIC=visible\n" in env.content and b"SHARED=from-env-table\n" in env.content
    report = json.dumps(summary_json(session, outcome, {}))
    assert SECRET not in report and "alpha" in report
    leaked = [p for p, e in host.files.items()
              if e.kind == "file" and SECRET.encode() in e.content and e.mode & 0o077]
    assert leaked == []


def test_changed_secret_reloads_only_that_app() -> None:
    host = with_secrets()
    text = APP + '\n[apps.beta]\nrepo = "git://remote/beta.git"\ndomains = ["beta.test"]\n'
    run(host, load_config(host, text))
    host.write(SECRETS_FILE, b"TOKEN=rotated\n", 0o600, "root", "root")
    session, _ = run(host, load_config(host, text))
    changed = {(s.name, s.app) for s in session.steps if s.actions}
    # served by the commit's twin release, gated beside the live one (issue 20)
    assert changed == {("release", "alpha"), ("deploy", "alpha"), ("nginx site", "alpha"),
                       ("nginx", None), ("retire", "alpha")}, changed
    written = [getattr(a, "path", "") for s in session.steps for a in s.actions]
    assert "/etc/fleet/env/alpha.env" in written
    assert any(p.startswith("/etc/uwsgi/vassals/alpha@") for p in written)


def test_plan_with_env_file_changes_nothing() -> None:
    host = with_secrets()
    cfg = load_config(host, APP)
    before = {p: (e.content, e.mode, e.owner) for p, e in host.files.items()}
    session = Session(host, Quiet(), check=True)
    from fleet.converge.apply import converge

    converge(cfg, session)
    assert {p: (e.content, e.mode, e.owner) for p, e in host.files.items()} == before


# ----------------------------------------------------------------------------- packages


def test_interrupted_dpkg_is_finished_before_apt_runs() -> None:
    host = FakeHost()
    host.mkdir("/var/lib/dpkg/updates", 0o755, "root", "root")
    host.write("/var/lib/dpkg/updates/0001", b"", 0o644, "root", "root")
    actions = plan_packages(host, ["nginx"])
    argvs = [a.argv for a in actions]  # type: ignore[attr-defined]
    assert argvs[0] == ("dpkg", "--configure", "-a")
    assert argvs[-1][0] == "apt-get" and "install" in argvs[-1] and "nginx" in argvs[-1]
    assert "DPkg::Lock::Timeout=300" in argvs[-1]  # waits for another package run's lock
    # dpkg's replay, and apt's lists and archives locks (another apt-get, unattended-upgrades
    # downloading after boot) are waited for too: DPkg::Lock::Timeout covers only dpkg's.
    assert [a.retry_while for a in actions] == ["lock"] * 3  # type: ignore[attr-defined]
    host.packages.add("nginx")
    assert [a.argv for a in plan_packages(host, ["nginx"])] == [  # type: ignore[attr-defined]
        ("dpkg", "--configure", "-a")]
    host.remove("/var/lib/dpkg/updates/0001")
    assert plan_packages(host, ["nginx"]) == []


# ----------------------------------------------------------------------------- lock


def test_second_run_refuses_naming_the_holder_pid(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.host.lock")
    messages: list[str] = []
    with run_lock(path), pytest.raises(LockError) as info, \
            run_lock(path, wait=0.5, on_wait=messages.append):
        pass
    assert f"PID {os.getpid()}" in str(info.value)
    assert messages == [f"waiting for the fleet run with PID {os.getpid()} to finish"]


def test_lock_of_a_killed_run_does_not_block(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.host.lock")
    code = ("import sys, time; from fleet.host.lock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"PID {holder.pid}"), run_lock(path):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        start = time.monotonic()
        with run_lock(path, wait=5):
            assert time.monotonic() - start < 1
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- CLI input


@pytest.mark.parametrize(("args", "expected"), [
    (["apply", "--no-such-option"], "No such option: --no-such-option"),
    (["apply", "--prune=maybe"], "fleet: "),
    (["add-app", "x", "--repo", "r", "--domain", "x.test", "--env", "K=s3cret"],
     "--env: K: a value on the command line is readable by every local user"),
    (["add-app", "x", "--repo", "r", "--domain", "x.test", "--env", "=v"],
     "--env: =: a value on the command line"),
    (["add-app", "x", "--repo", "r", "--domain", "x.test", "--env-file", "/nonexistent.env"],
     "/nonexistent.env: no such file"),
])
def test_bad_command_line_is_one_line_exit_2(args: list[str], expected: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True,
                            text=True, cwd=ROOT, env=env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_a_command_waits_while_someone_else_holds_its_lock() -> None:
    from fleet.host.actions import Run
    from fleet.host.executor import run_command
    from fleet.host.machine import RunResult

    host = FakeHost()
    answers = [RunResult(2, "", "dpkg: error: dpkg database lock was locked by another "
                                "process with pid 913"), RunResult(0, "", "")]
    host.handlers.append(lambda _host, argv: answers.pop(0) if argv[0] == "dpkg" else None)
    naps: list[float] = []
    run_command(host, Run(argv=("dpkg", "--configure", "-a"), retry_while="lock", retry_for=60),
                sleep=naps.append)
    assert naps == [2.0] and not answers
    host.handlers[:] = [lambda _host, argv: RunResult(2, "", "dpkg: error: broken")]
    with pytest.raises(CommandError):
        run_command(host, Run(argv=("dpkg", "--configure", "-a"), retry_while="lock",
                              retry_for=60), sleep=naps.append)

"""The operator's commands at the edges: usage errors, init, logs filtering, status parsing,
check's JSON, remove-app's purge decisions. The real server is exercised in tests/e2e."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.cli import init as init_cmd
from fleet.cli import inspect as inspect_cmd
from fleet.cli import remove as remove_cmd
from fleet.cli.common import app as cli_app
from fleet.config import parse as config
from fleet.server.health import HealthResult
from fleet.server.logs import (
    filter_app_lines,
    filter_entries,
    journal_argv,
    last_cursor,
    last_error,
    unit_patterns,
)
from fleet.server.status import ini_value, vassal_owner, vassal_status
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import fleet_main

ROOT = Path(__file__).resolve().parents[2]


def stored_server(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    """A FakeHost with two stored apps, used by the commands instead of the real machine."""
    host = FakeHost()
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    for name in ("alpha", "beta"):
        host.write(f"/etc/fleet/apps/{name}.toml",
                   f'repo = "git://r/{name}.git"\ndomains = ["{name}.test"]\n'.encode(),
                   0o600, "root", "root")
    monkeypatch.setattr(inspect_cmd, "local_host", lambda: host)
    monkeypatch.setattr(inspect_cmd, "require_root", lambda: None)
    return host


# ----------------------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [["logs"], ["no-such-command"], ["check", "--timeout", "x"],
                                  ["logs", "alpha", "-n", "-3"], ["remove-app"]])
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "fleet", *args], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("fleet: ") and "Traceback" not in result.stderr


def test_every_command_has_an_example_in_its_help() -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    for command in cli_app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        result = runner.invoke(cli_app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example: fleet " in result.output, name


def test_unknown_app_is_one_line_exit_2(monkeypatch, capsys) -> None:
    stored_server(monkeypatch)
    code, out, err = fleet_main(monkeypatch, capsys, "logs", "gamma")
    assert code == 2 and out == ""
    assert err.strip() == ("fleet: no app named 'gamma' in /etc/fleet/apps "
                           "(configured: alpha, beta)")


# ----------------------------------------------------------------------------- init


def uncommented(text: str) -> str:
    """The example with every optional `# key = value` / `# [table]` line switched on."""
    pattern = re.compile(r"^# ?((\[[A-Za-z_.]+\])|([A-Za-z_\"/-]+ = .*))$")
    return "\n".join(m.group(1) if (m := pattern.match(line)) else line
                     for line in text.splitlines())


def test_init_writes_a_valid_private_config_and_refuses_to_overwrite(
        monkeypatch, capsys, tmp_path: Path) -> None:
    target = tmp_path / "fleet.toml"
    code, out, _ = fleet_main(monkeypatch, capsys, "init", str(target))
    assert code == 0 and str(target) in out
    assert target.stat().st_mode & 0o777 == 0o600
    server, emperor, apps = config.parse_document(str(target),
                                                  config.parse_toml("t", target.read_text()))
    assert server == config.ServerConfig() and emperor == config.EmperorConfig()
    assert apps["hello"].domains == ("hello.example.com",)
    target.write_text("mine\n")
    code, out, err = fleet_main(monkeypatch, capsys, "init", str(target))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "already exists" in err and target.read_text() == "mine\n"
    code, _, _ = fleet_main(monkeypatch, capsys, "init", str(target), "--force")
    assert code == 0 and target.read_bytes() == init_cmd.example_config()


def test_init_example_documents_every_key_with_valid_values() -> None:
    """Switching every optional line on still parses, and names every key the parser knows."""
    text = uncommented(init_cmd.example_config().decode())
    data = config.parse_toml("uncommented", text)
    server, emperor, apps = config.parse_document("uncommented", data)
    assert server is not None and emperor is not None
    assert server.pip.index_url and server.pip.cert and server.pip.extra_index_urls
    hello = data["apps"]["hello"]
    assert sorted(data["server"]) == sorted(config.SERVER_KEYS)
    assert sorted(data["server"]["pip"]) == sorted(config.PIP_KEYS)
    assert sorted(data["server"]["notify"]) == sorted(config.NOTIFY_KEYS)
    assert sorted(data["server"]["acme"]) == sorted(config.ACME_KEYS)
    assert sorted(data["emperor"]) == sorted(config.EMPEROR_KEYS)
    assert sorted(hello) == sorted(config.APP_KEYS)
    assert sorted(hello["health"]) == sorted(config.HEALTH_KEYS)
    assert apps["hello"].env and apps["hello"].static and emperor.vassal_set


def test_init_dash_prints_the_example(monkeypatch, capsys) -> None:
    code, out, _ = fleet_main(monkeypatch, capsys, "init", "-")
    assert code == 0 and out.encode() == init_cmd.example_config()


# ----------------------------------------------------------------------------- logs


JOURNAL = """*** starting uWSGI Emperor ***
[alpha] *** Operational MODE: preforking ***
[alphabet] not alpha's
[alpha@0123456789ab] WSGI app 0 (mountpoint='') ready
[emperor] vassal alpha@0123456789ab.ini is ready to accept requests
[emperor] vassal beta-alpha.ini is ready to accept requests
Mon Jan  1 00:00:00 2024 - [emperor] curse the uwsgi instance alpha.ini (pid: 42)
[beta] ModuleNotFoundError: No module named 'x'
"""


def test_log_filter_keeps_the_apps_lines_and_the_emperors_lines_about_it() -> None:
    assert filter_app_lines(JOURNAL, "alpha") == [
        "*** Operational MODE: preforking ***",
        "0123456789ab: WSGI app 0 (mountpoint='') ready",
        "[emperor] vassal alpha@0123456789ab.ini is ready to accept requests",
        "Mon Jan  1 00:00:00 2024 - [emperor] curse the uwsgi instance alpha.ini (pid: 42)",
    ]
    assert filter_app_lines(JOURNAL, "beta") == ["ModuleNotFoundError: No module named 'x'"]


def entry(unit: str, message: object, cursor: str = "c", field: str = "_SYSTEMD_UNIT") -> str:
    return json.dumps({field: unit, "MESSAGE": message, "__CURSOR": cursor})


def test_journal_entries_of_workers_and_jobs_are_labelled_and_other_apps_left_out() -> None:
    text = "\n".join([
        entry("fleet-emperor.service", "[alpha] web line"),
        entry("fleet-emperor.service", "[beta] not alpha's"),
        entry("fleet-alpha.worker.celery@2.service", "task done"),
        entry("fleet-alpha.job.prune.service", "Finished.", field="UNIT"),  # from systemd
        entry("fleet-alphabet.worker.celery@1.service", "not alpha's either"),
        entry("fleet-alpha.worker.celery@1.service", [104, 105, 255], cursor="last"),
        "not json",
    ])
    assert filter_entries(text, "alpha") == ["web line", "celery#2: task done",
                                             "job prune: Finished.", "celery#1: hi\ufffd"]
    assert last_cursor(text) == "last" and last_cursor("") is None


def test_log_filters_pick_one_workers_or_jobs_units() -> None:
    assert unit_patterns("shop") == ["fleet-emperor.service", "fleet-shop.worker.*",
                                     "fleet-shop.job.*"]
    assert unit_patterns("shop", process="celery") == ["fleet-shop.worker.celery@*"]
    assert unit_patterns("shop", job="prune") == ["fleet-shop.job.prune.*"]
    argv = journal_argv(unit_patterns("shop", job="prune"), 10)
    assert argv[-2:] == ["--unit", "fleet-shop.job.prune.*"] and "json" in argv


def test_last_error_picks_the_reason_not_the_epilogue() -> None:
    tail = ("Traceback (most recent call last):\n  File \"wsgi.py\", line 3\n"
            "ModuleNotFoundError: No module named 'does_not_exist_xyz'\n"
            "unable to load app 0 (mountpoint='') (callable not found or import error)\n"
            "*** no app loaded. GAME OVER ***\n")
    assert last_error(tail).startswith("unable to load app 0")
    assert last_error("just a line\n") == "just a line"
    assert last_error("") is None


def test_logs_nginx_without_per_app_files_says_why(monkeypatch, capsys) -> None:
    stored_server(monkeypatch)
    monkeypatch.setattr("fleet.server.logs.NGINX_LOG_DIR", "/nonexistent")
    code, _, err = fleet_main(monkeypatch, capsys, "logs", "alpha", "--nginx")
    assert code == 1 and "no nginx logs for alpha" in err and "fleet apply" in err


# ----------------------------------------------------------------------------- status


def test_vassal_names_and_stats_socket_are_read_from_the_files() -> None:
    assert vassal_owner("alpha@0123456789ab.ini") == ("alpha", "0123456789ab")
    assert vassal_owner("alpha.ini") == ("alpha", None)
    assert vassal_owner(".fleet-tmp.ini") is None and vassal_owner("x.socket") is None
    ini = "[uwsgi]\nstats = /run/fleet/a/old.stats\nstats = /run/fleet/a/r1.stats\n"
    assert ini_value(ini, "stats") == "/run/fleet/a/r1.stats"


def test_a_throttled_vassal_is_reported_as_such(tmp_path: Path) -> None:
    host = FakeHost()
    host.files["/etc/uwsgi/vassals"] = Entry("dir", mode=0o755)
    host.write("/etc/uwsgi/vassals/broken@r1.ini",
               f"stats = {tmp_path}/missing.stats\n".encode(), 0o600, "root", "root")
    emperor = {"vassals": [], "blacklist": [{"id": "broken@r1.ini", "attempt": 3,
                                             "throttle_level": 4000}]}
    vassal = vassal_status(host, "broken@r1.ini", emperor)
    assert (vassal.state, vassal.attempts, vassal.release) == ("throttled", 4, "r1")
    respawning = {"vassals": [{"id": "broken@r1.ini", "pid": 7, "respawns": 2}]}
    assert vassal_status(host, "broken@r1.ini", respawning).state == "failing"
    assert vassal_status(host, "broken@r1.ini", None).state == "stopped"


# ----------------------------------------------------------------------------- check


def test_check_json_reports_each_app_and_exits_1_on_a_failure(monkeypatch, capsys) -> None:
    stored_server(monkeypatch)

    def fake_check(app, **kwargs):
        assert kwargs["timeout"] <= 5
        if app.name == "beta":
            return HealthResult(False, 502, "HTTP 502", 5.0)
        return HealthResult(True, 200, "HTTP 200", 0.01)

    monkeypatch.setattr(inspect_cmd, "check_app", fake_check)
    code, out, _ = fleet_main(monkeypatch, capsys, "check", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["failed"] == 1
    assert data["apps"]["alpha"]["health"] == "passed"
    assert data["apps"]["beta"] == {"health": "failed", "detail": "HTTP 502", "status": 502,
                                    "elapsed": 5.0}
    monkeypatch.setattr(inspect_cmd, "check_app",
                        lambda app, **_: HealthResult(True, 200, "HTTP 200", 0.0))
    code, out, _ = fleet_main(monkeypatch, capsys, "check")
    assert code == 0 and "2 of 2 apps passed" in out


# ----------------------------------------------------------------------------- remove-app


def test_purge_deletes_only_a_user_fleet_created_for_the_app() -> None:
    host = FakeHost()
    host.mkdir("/srv/fleet/alpha/shared", 0o750, "root", "root")
    app = config.parse_app_document("t", "alpha", {"repo": "r", "domains": ["a.test"]})
    # An earlier fleet's account (home /srv/fleet/alpha, nologin) and one marked as fleet's.
    for line in ("alpha:x:999:999::/srv/fleet/alpha:/usr/sbin/nologin",
                 "alpha:x:999:999:fleet app alpha:/srv/fleet/alpha:/usr/sbin/nologin"):
        host.handlers[:] = [lambda h, argv, line=line: _passwd(argv, line)]
        described = [a.describe() for a in remove_cmd.purge_actions(host, app)]
        assert "remove /srv/fleet/alpha (purged)" in described
        assert "delete user alpha: userdel alpha" in described
    # Never an account fleet did not create for this app: another app's, a login shell's, root.
    for line in ("alpha:x:33:33::/var/www:/bin/sh",
                 "alpha:x:999:999:fleet app beta:/srv/fleet/beta:/usr/sbin/nologin",
                 "alpha:x:999:999::/srv/fleet/alpha:/bin/bash",
                 "alpha:x:0:0:fleet app alpha:/srv/fleet/alpha:/usr/sbin/nologin"):
        host.handlers[:] = [lambda h, argv, line=line: _passwd(argv, line)]
        assert not any("userdel" in d for d in
                       (a.describe() for a in remove_cmd.purge_actions(host, app)))


def _passwd(argv: list[str], line: str):
    from fleet.host.machine import RunResult

    if argv[:2] == ["getent", "passwd"]:
        return RunResult(0, line + "\n", "")
    return None


def test_verbose_shows_each_command_with_url_credentials_masked(monkeypatch, capsys) -> None:
    from fleet.cli.common import OPTIONS, local_host

    monkeypatch.setattr(OPTIONS, "verbose", True)
    host = local_host()
    assert host.log_command is not None
    host.log_command(["git", "clone", "--mirror", "https://bob:t0ken@git.example.com/a.git",
                      "pkg[extra]"])
    err = capsys.readouterr().err
    assert err.strip() == ("$ git clone --mirror https://********@git.example.com/a.git "
                           "'pkg[extra]'")
    monkeypatch.setattr(OPTIONS, "verbose", False)
    assert local_host().log_command is None


def test_check_on_a_front_checks_each_balanced_app_through_it(monkeypatch, capsys) -> None:
    host = stored_server(monkeypatch)
    host.write("/etc/fleet/fleet.toml", b'[front.apps.shop]\ndomains = ["shop.test"]\n'
               b'upstreams = ["10.0.0.11:80"]\nhealth = { path = "/ping" }\n', 0o600, "root",
               "root")
    checked: list[tuple[str, str, str]] = []

    def fake_check(app, **kwargs):
        checked.append((app.name, app.domains[0], app.health.path))
        return HealthResult(app.name != "shop", 502, "HTTP 502", 0.1)

    monkeypatch.setattr(inspect_cmd, "check_app", fake_check)
    code, out, _ = fleet_main(monkeypatch, capsys, "check", "--json")
    assert code == 1 and json.loads(out)["apps"]["shop"]["health"] == "failed"
    assert ("shop", "shop.test", "/ping") in checked

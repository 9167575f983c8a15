"""Backups (issue 17): [server.backup] parsing, the scheduled backup's units that fleet apply
plans, the purge refusal, the state file, and a restore that puts the data back whichever step
fails. restic, SQLite and systemd themselves are proven in tests/e2e/test_backups.py."""

from __future__ import annotations

import json

import pytest

from fleet.cli import backup as backup_cli
from fleet.config.settings import AppConfig, BackupSettings
from fleet.converge.backups import SERVICE, TIMER, converge_backups, packages
from fleet.errors import EXIT_INVALID, ConfigError
from fleet.host.machine import RunResult
from fleet.host.session import Session
from fleet.server import backup_health, backup_state, restic
from fleet.server import backup_restore as rs
from fleet.server.backup import back_up
from fleet.server.health import HealthResult
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import Quiet, changed_steps, config, error_of, parse, server

UNITS = "/etc/systemd/system"
APP = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
"""
SCHEDULED = """
[server.backup]
schedule = "daily"
keep = { last = 2, daily = 7 }
env = { AWS_SECRET_ACCESS_KEY = "s3cr3t-value" }
""" + APP


# --------------------------------------------------------------------------- config


def test_an_empty_table_means_the_defaults_and_no_table_means_no_backups() -> None:
    server_cfg, _, _ = parse("[server.backup]\n")
    assert server_cfg.backup == BackupSettings()
    assert server_cfg.backup.repository == "/var/backups/fleet/restic"
    assert parse("[server]\n")[0].backup is None
    settings = parse(SCHEDULED)[0].backup
    assert settings.schedule == "daily" and settings.keep == (("last", 2), ("daily", 7))
    assert settings.env == (("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"),)
    assert parse('[server.backup]\nrepository = "sftp:u@h:/b"\n')[0].backup.repository \
        == "sftp:u@h:/b"


@pytest.mark.parametrize(("text", "key", "words"), [
    ("reposit = '/x'", "server.backup.reposit", "unknown key (did you mean 'repository'?)"),
    ("repository = 'backups'", "server.backup.repository", "absolute directory"),
    ("repository = '/a/../b'", "server.backup.repository", "absolute directory"),
    ("repository = '/a b'", "server.backup.repository", "without whitespace"),
    ("password_file = 'pw'", "server.backup.password_file", "absolute file path"),
    ("schedule = ''", "server.backup.schedule", "is empty"),
    ("schedule = 5", "server.backup.schedule", "expected a string"),
    ("keep = { lastt = 2 }", "server.backup.keep.lastt", "unknown key"),
    ("keep = { last = 0 }", "server.backup.keep.last", "between 1 and"),
    ("keep = { daily = '7' }", "server.backup.keep.daily", "expected an integer"),
    ("env = { RESTIC_PASSWORD = 'x' }", "server.backup.env.RESTIC_PASSWORD", "set by fleet"),
    ("env = { 'A-B' = 'x' }", "server.backup.env.A-B", "not a valid environment"),
    ("env = { A = 1 }", "server.backup.env.A", "expected a string"),
])
def test_bad_backup_settings_are_one_line_naming_the_key(text: str, key: str,
                                                         words: str) -> None:
    message = error_of(f"[server.backup]\n{text}\n")
    assert f": {key}: " in message and words in message


def test_a_schedule_systemd_refuses_is_bad_input() -> None:
    host = server()
    host.bad_schedules.add("every tuesday")
    with pytest.raises(ConfigError) as info:
        config(host, '[server.backup]\nschedule = "every tuesday"\n' + APP)
    assert info.value.exit_code == EXIT_INVALID
    assert "fleet.toml: server.backup.schedule: 'every tuesday' is not a systemd calendar" \
        in str(info.value)
    assert not any(k.startswith("/etc/fleet") for k in host.files)  # nothing written


# --------------------------------------------------------------------------- apply


def converge_step(host: FakeHost, text: str) -> Session:
    session = Session(host, Quiet())
    converge_backups(config(host, text), session)
    return session


def test_apply_writes_the_timer_once_and_removes_it_with_the_schedule() -> None:
    host = server()
    cfg = config(host, SCHEDULED)
    assert packages(cfg) == ["restic"] and packages(config(host, APP)) == []
    session = converge_step(host, SCHEDULED)
    assert changed_steps(session) == ["backups"]
    timer = host.read(f"{UNITS}/{TIMER}").decode()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer
    assert "ExecStart=/usr/local/bin/fleet backup --scheduled" in \
        host.read(f"{UNITS}/{SERVICE}").decode()
    assert host.state(f"{UNITS}/timers.target.wants/{TIMER}").target == f"{UNITS}/{TIMER}"
    assert TIMER in host.active and host.ran("systemctl", "restart", TIMER)
    password = host.files["/etc/fleet/backup.password"]
    assert (password.mode, password.owner) == (0o600, "root") and len(password.content) > 40
    # Unchanged: nothing happens, the password is never replaced.
    host.commands.clear()
    assert changed_steps(converge_step(host, SCHEDULED)) == []
    assert not host.ran("systemctl", "restart") and not host.ran("systemctl", "daemon-reload")
    # A new schedule: the timer is rewritten and restarted, the service left alone.
    converge_step(host, SCHEDULED.replace('"daily"', '"*:0/5"'))
    assert "OnCalendar=*:0/5" in host.read(f"{UNITS}/{TIMER}").decode()
    # No schedule: stopped and removed; without [server.backup] at all, nothing more to do.
    session = converge_step(host, "[server.backup]\n" + APP)
    assert changed_steps(session) == ["backups"] and TIMER not in host.active
    assert host.state(f"{UNITS}/{TIMER}") is None and host.state(f"{UNITS}/{SERVICE}") is None
    assert host.state(f"{UNITS}/timers.target.wants/{TIMER}") is None
    assert changed_steps(converge_step(host, APP)) == []
    assert host.read("/etc/fleet/backup.password") == password.content


# --------------------------------------------------------------------------- state, check


def test_a_failure_is_recorded_and_keeps_the_last_success() -> None:
    host = FakeHost()
    backup_state.record(host, "alpha", 100.0, snapshot="abcd1234", error=None, size=5)
    state = backup_state.record(host, "alpha", 200.0, snapshot=None, error="restic: boom",
                                size=None)
    entry = host.files["/var/lib/fleet/backups/alpha.json"]
    assert (entry.mode, entry.owner) == (0o600, "root")
    assert json.loads(entry.content) == {
        "app": "alpha", "last_attempt": 200.0, "last_result": "failed", "last_success": 100.0,
        "snapshot": "abcd1234", "error": "restic: boom", "bytes": 5}
    assert backup_health.problem(state, 86400, 300.0) == "last backup failed: restic: boom"
    ok = backup_state.record(host, "alpha", 300.0, snapshot="beef", error=None, size=6)
    assert backup_health.problem(ok, 86400, 300.0 + 2 * 86400 - 1) is None
    assert "h old" in backup_health.problem(ok, 86400, 300.0 + 2 * 86400 + 1)
    assert backup_health.problem(ok, None, 10**10) is None  # no schedule: not judged


def test_the_period_comes_from_two_elapses_of_the_schedule() -> None:
    # systemd-analyze calendar --iterations=2 daily, under TZ=UTC (systemd 252)
    text = ("  Original form: daily\nNormalized form: *-*-* 00:00:00\n"
            "    Next elapse: Sat 2026-11-28 00:00:00 UTC\n       From now: 17h left\n"
            "       Iter. #2: Sun 2026-11-29 00:00:00 UTC\n       From now: 1 day 17h left\n")
    host = FakeHost(handlers=[lambda _h, argv: RunResult(0, text, "")
                              if argv[0] == "systemd-analyze" else None])
    assert backup_health.schedule_period(host, "daily") == 86400


def test_restic_output_is_parsed_and_errors_are_masked() -> None:
    out = ('{"message_type":"status","percent_done":1}\n'
           '{"message_type":"summary","snapshot_id":"0123456789abcdef","data_added":42}\n')
    assert restic.parse_backup_summary(out) == ("01234567", 42)
    listing = json.dumps([
        {"id": "aa" * 32, "short_id": "aaaaaaaa", "time": "2026-01-02T03:04:05Z",
         "tags": ["fleet-app=alpha", "size=10", "commit=abc"]},
        {"id": "bb" * 32, "short_id": "bbbbbbbb", "time": "2026-01-01T00:00:00Z",
         "tags": ["fleet-app=alphabet"]}])
    found = restic.parse_snapshots(listing, "alpha")
    assert [(s.short_id, s.size, s.commit) for s in found] == [("aaaaaaaa", 10, "abc")]
    settings = parse(SCHEDULED)[0].backup

    def failing(_host, argv):
        return RunResult(1, "", "Fatal: s3cr3t-value rejected\n") if argv[0] == "restic" else None

    host = FakeHost(handlers=[failing])
    with pytest.raises(restic.ResticError) as info:
        restic.run(host, settings, ["snapshots"])
    assert "s3cr3t-value" not in str(info.value) and "********" in str(info.value)


def app_with_data(host: FakeHost, name: str = "alpha") -> AppConfig:
    host.users.add(name)
    for path in ("/srv/fleet", f"/srv/fleet/{name}", f"/srv/fleet/{name}/shared",
                 f"/srv/fleet/{name}/shared/instance"):
        host.files[path] = Entry("dir", mode=0o700, owner=name, group=name)
    host.files[f"/srv/fleet/{name}/shared/instance/app.db"] = Entry("file", b"old data",
                                                                    owner=name, group=name)
    return AppConfig(name=name, repo="git://r", domains=("a.test",))


def test_purge_is_refused_while_data_has_no_recent_backup() -> None:
    host = FakeHost()
    app = app_with_data(host)
    with pytest.raises(backup_health.PurgeRefused) as info:
        backup_health.check_purge(host, app, 1000.0)
    assert info.value.exit_code == EXIT_INVALID and "--force" in str(info.value)
    assert "\n" not in str(info.value) and "fleet backup alpha" in str(info.value)
    backup_state.record(host, "alpha", 1000.0, snapshot="a", error=None, size=1)
    backup_health.check_purge(host, app, 1000.0 + 3600)  # a backup an hour old: allowed
    with pytest.raises(backup_health.PurgeRefused):
        backup_health.check_purge(host, app, 1000.0 + 2 * 86400)
    host.remove("/srv/fleet/alpha/shared/instance/app.db")
    backup_health.check_purge(host, app, 10**10)  # no data: nothing to lose


def test_a_failed_backup_is_recorded_not_raised() -> None:
    host = FakeHost()
    app = app_with_data(host)
    host.handlers.append(lambda _h, argv: RunResult(1, "", "copy broke")
                         if "-c" in argv else None)
    result = back_up(host, BackupSettings(), app)
    assert not result.ok and "copy broke" in (result.error or "")
    state = backup_state.load(host, "alpha")
    assert state.last_result == "failed" and state.last_success is None
    assert not [k for k in host.files if k.startswith("/var/lib/fleet/backup-staging/")]


STAGING = "/var/lib/fleet/backup-staging"


def killed_backup(host: FakeHost) -> None:
    """What a backup killed mid-way leaves: the copy the app's user was writing (with a link
    the app planted) and the tree root had taken over; and a file the link points at."""
    host.users.add("alpha")
    host.files["/etc/shadow"] = Entry("file", b"root:secret\n", mode=0o640, group="shadow")
    host.files[STAGING] = Entry("dir", mode=0o711)
    copy = f"{STAGING}/.alpha-0123456789abcdef"
    host.files[copy] = Entry("dir", mode=0o700, owner="alpha", group="alpha")
    host.files[f"{copy}/data"] = Entry("dir", mode=0o755, owner="alpha", group="alpha")
    host.files[f"{copy}/data/app.db"] = Entry("file", b"rows", owner="alpha", group="alpha")
    host.files[f"{copy}/data/shadow"] = Entry("link", owner="alpha", target="/etc/shadow")
    host.files[f"{STAGING}/alpha"] = Entry("dir", mode=0o700)
    host.files[f"{STAGING}/alpha/manifest.json"] = Entry("file", b"{}", mode=0o600)


def test_a_killed_backups_staging_is_swept_by_the_next_apply_unless_a_backup_runs() -> None:
    from fleet.host import layout
    from fleet.host.actions import Remove, SetAttrs
    from fleet.host.lock import unless_held
    from tests.unit.support import run

    host = server()
    killed_backup(host)
    with unless_held(layout.BACKUP_LOCK) as mine:  # a backup is running: it may be its own
        assert mine
        session, _ = run(host, config(host, APP))
    assert "leftover temp files" not in changed_steps(session)
    assert host.state(f"{STAGING}/.alpha-0123456789abcdef") is not None

    session, _ = run(host, config(host, APP))
    step = next(s for s in session.steps if s.name == "leftover temp files")
    copy, why = f"{STAGING}/.alpha-0123456789abcdef", "left by a killed backup"
    # The app's copy is made root's (fd-based, no link followed) before it is deleted.
    assert step.actions == [SetAttrs(path=copy, mode=0o700, owner="root", group="root"),
                            Remove(path=copy, why=why), Remove(path=f"{STAGING}/alpha", why=why)]
    assert host.listdir(STAGING) == [] and host.state(STAGING).mode == 0o711
    shadow = host.files["/etc/shadow"]
    assert (shadow.content, shadow.owner, shadow.group, shadow.mode) == (
        b"root:secret\n", "root", "shadow", 0o640)
    assert "leftover temp files" not in changed_steps(run(host, config(host, APP))[0])


def test_the_next_backup_sweeps_a_killed_ones_staging_before_it_starts(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from fleet.server.backup import BackupResult
    from tests.unit.support import fleet_main

    host = server()
    killed_backup(host)
    seen: list[list[str]] = []

    def backing_up(h: FakeHost, _settings: BackupSettings, app: AppConfig) -> BackupResult:
        seen.append(h.listdir(STAGING))
        return BackupResult(app.name, ok=True, snapshot="abc", size=4, added=4)

    desired = SimpleNamespace(config=config(host, "[server.backup]\n" + APP))
    monkeypatch.setattr(backup_cli, "require_root", lambda: None)
    monkeypatch.setattr(backup_cli, "local_host", lambda: host)
    monkeypatch.setattr(backup_cli, "desired_state", lambda *_a: desired)
    monkeypatch.setattr(backup_cli, "back_up", backing_up)
    code, out, _err = fleet_main(monkeypatch, capsys, "backup")
    assert code == 0 and "alpha: snapshot abc" in out
    assert seen == [[]] and host.read("/etc/shadow") == b"root:secret\n"


# --------------------------------------------------------------------------- restore


def mv(host: FakeHost, argv: list[str]) -> RunResult | None:
    if argv[:3] != ["mv", "-T", "--"]:
        return None
    src, dst = argv[3], argv[4]
    for key in sorted(k for k in list(host.files) if k == src or k.startswith(src + "/")):
        host.files[dst + key[len(src):]] = host.files.pop(key)
    return RunResult(0, "", "")


def restored_tree(host: FakeHost) -> rs.Restored:
    data = "/srv/fleet/alpha/.fleet-restore/var/lib/fleet/backup-staging/alpha/data"
    host.mkdir(f"{data}/instance", 0o700, "root", "root")
    host.write(f"{data}/instance/app.db", b"restored", 0o600, "root", "root")
    manifest = {"app": "alpha", "files": [{"path": "instance/app.db", "sha256": "x",
                                           "size": 8, "sqlite": True}]}
    return rs.Restored("alpha", "snap", data, manifest)


@pytest.mark.parametrize("failing", ["move", "integrity", "health", "none"])
def test_a_restore_puts_the_old_data_back_whichever_step_fails(
        monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    host = FakeHost()
    app = app_with_data(host)
    host.handlers.append(mv)
    host.files["/srv/fleet/alpha/current"] = Entry("link", target="/srv/fleet/alpha/releases/r1")
    calls: list[str] = []
    checks = iter([failing != "health", True])

    def mv_fails(_host, argv):
        if failing == "move" and argv[:3] == ["mv", "-T", "--"] and "/.fleet-restore/" in argv[3]:
            return RunResult(1, "", "mv: cannot move")
        return None

    def integrity(_host, argv):
        if "-c" in argv:
            verdict = "ok" if failing != "integrity" else "*** in database main ***"
            return RunResult(0, json.dumps({argv[-1]: verdict}), "")
        return None

    host.handlers[:0] = [mv_fails, integrity]
    monkeypatch.setattr(backup_cli, "set_maintenance",
                        lambda _h, _d, name, on: calls.append(f"maintenance {on}"))
    monkeypatch.setattr(rs, "check_app", lambda *_a, **_k: HealthResult(
        next(checks), 200, "HTTP 200", 0.0))
    restored = restored_tree(host)
    if failing == "none":
        backup_cli.swap(host, None, app, restored)
        assert host.read("/srv/fleet/alpha/shared/instance/app.db") == b"restored"
        assert host.files["/srv/fleet/alpha/shared/instance/app.db"].owner == "alpha"
        assert host.state("/srv/fleet/alpha/shared/.fleet-aside-instance") is None
    else:
        with pytest.raises(rs.RestoreFailed) as info:
            backup_cli.swap(host, None, app, restored)
        assert "its data is as before" in str(info.value) and "\n" not in str(info.value)
        assert host.read("/srv/fleet/alpha/shared/instance/app.db") == b"old data"
        assert host.state("/srv/fleet/alpha/shared/.fleet-aside-instance") is None
    assert calls == ["maintenance True", "maintenance False"]  # always back off


def test_a_snapshot_that_does_not_match_its_manifest_is_refused_before_any_change() -> None:
    host = FakeHost()
    app_with_data(host)
    restored = restored_tree(host)
    host.handlers.append(lambda _h, argv: RunResult(0, "0000  instance/app.db\n", "")
                         if argv[0] == "sha256sum" else None)
    with pytest.raises(rs.RestoreFailed) as info:
        rs.verify(host, restored)
    assert "instance/app.db does not match its sha256" in str(info.value)
    assert host.read("/srv/fleet/alpha/shared/instance/app.db") == b"old data"


def test_a_missing_repository_is_initialised_and_other_errors_are_not() -> None:
    missing = ("Fatal: unable to open config file: stat /r/config: no such file or directory\n"
               "Is there a repository at the following location?\n/r\n")
    host = FakeHost(handlers=[lambda _h, argv: RunResult(1, "", missing)
                              if argv[:3] == ["restic", "cat", "config"] else None])
    assert restic.ensure_repository(host, BackupSettings(repository="/r")) is True
    assert host.ran("restic", "init")
    host = FakeHost(handlers=[lambda _h, argv: RunResult(1, "", "Fatal: wrong password or no "
                                                         "key found\n")
                              if argv[0] == "restic" else None])
    with pytest.raises(restic.ResticError) as info:
        restic.ensure_repository(host, BackupSettings(repository="/r"))
    assert str(info.value) == "restic cat: Fatal: wrong password or no key found"
    assert not host.ran("restic", "init")


def test_the_plan_never_shows_the_backup_environment() -> None:
    from fleet.config.store import desired_state, plan_store
    from fleet.host.actions import WriteFile

    host = server()
    actions = plan_store(host, desired_state(host, "fleet.toml", SCHEDULED))
    written = next(a for a in actions if isinstance(a, WriteFile)
                   and a.path == "/etc/fleet/fleet.toml")
    assert written.secret and "s3cr3t-value" not in written.diff()
    assert b"s3cr3t-value" in written.content

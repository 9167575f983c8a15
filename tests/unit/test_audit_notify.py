"""The audit log and notifications with the fake host: who ran a command, what is masked,
which commands leave a line, the retry schedule, the event filter, the events raised."""

from __future__ import annotations

import base64
import gzip
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from fleet.cli.audited import AUDITED, audited_command, deploy_events, session_result
from fleet.cli.dispatch import COMMAND_MODULES
from fleet.cluster.inventory import load_inventory
from fleet.cluster.push import Payload, push
from fleet.config.settings import NotifySettings
from fleet.host.machine import RunResult
from fleet.masking import MASK, mask_argv
from fleet.server import delivery
from fleet.server.audit import (
    ROOT_KEYS,
    AppMark,
    Operator,
    append,
    entry,
    key_fingerprint,
    read_entries,
    resolve_operator,
)
from fleet.server.delivery import BACKOFF, MAX_ATTEMPTS, deliver_due, retry_delay
from fleet.server.health import HealthResult
from fleet.server.notify import SPOOL, UNIT, queue_event
from fleet.server.watch import WatchState, backup_events, health_events
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import error_of, parse
from tests.unit.test_push import FILE, FakeSsh

# Commands that only look, or that run on the operator's machine (push: each host's own
# apply leaves the line there), or that fleet's own units run every minute.
LOOKING = {"plan", "releases", "status", "check", "logs", "push", "history", "backups", "top",
           "metrics", "watch", "notify-deliver"}
KEY_BLOB = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(range(32))).decode()


def test_every_command_is_audited_or_known_to_only_look() -> None:
    for command in COMMAND_MODULES:
        assert (command in AUDITED) != (command in LOOKING), command
    assert {"backup", "restore"} <= set(AUDITED)  # coming commands: one line each


@pytest.mark.parametrize(("args", "expected"), [
    (["apply", "fleet.toml"], "apply"),
    (["-v", "deploy", "shop"], "deploy"),
    (["env", "shop", "set", "KEY"], "env"),
    (["env", "shop"], None),  # lists only
    (["auth", "shop", "list"], None),
    (["auth", "shop", "add", "alice"], "auth"),
    (["deploy", "--help"], None),
    (["plan", "fleet.toml"], None),
    (["status"], None),
    (["history", "--json"], None),
])
def test_which_command_lines_are_audited(args: list[str], expected: str | None) -> None:
    assert audited_command(args) == expected


def fake_journal(line: str):
    def handler(_host: FakeHost, argv: list[str]) -> RunResult | None:
        return RunResult(0, line, "") if argv[0] == "journalctl" else None
    return handler


def key_host() -> FakeHost:
    host = FakeHost()
    host.files["/root/.ssh"] = Entry("dir", mode=0o700)
    host.files[ROOT_KEYS] = Entry("file", f"ssh-ed25519 {KEY_BLOB} bob@laptop\n".encode())
    fingerprint = key_fingerprint(KEY_BLOB)
    host.handlers.append(fake_journal(
        "Accepted publickey for root from 10.9.9.9 port 4242 ssh2: ED25519 other\n"
        f"Accepted publickey for root from 10.0.0.5 port 5555 ssh2: ED25519 {fingerprint}\n"))
    return host


SSH = {"SSH_CONNECTION": "10.0.0.5 5555 10.0.0.11 22", "USER": "root"}


@pytest.mark.parametrize(("env", "expected"), [
    ({**SSH, "FLEET_OPERATOR": "carol@desk", "SUDO_USER": "alice"},
     Operator("carol@desk", "push")),
    ({**SSH, "SUDO_USER": "alice"}, Operator("alice", "sudo")),
    (SSH, Operator("bob@laptop", "ssh-key")),
    ({"SSH_CONNECTION": "10.0.0.6 6666 10.0.0.11 22", "USER": "root"}, Operator("root", "login")),
    ({"LOGNAME": "dave"}, Operator("dave", "login")),
])
def test_who_resolution_order(env: dict[str, str], expected: Operator) -> None:
    assert resolve_operator(env, key_host()) == expected


def test_ssh_key_from_expose_auth_info_without_the_journal() -> None:
    host = key_host()
    host.handlers.clear()  # no journal at all
    host.files["/run/auth"] = Entry("file", f"publickey ssh-ed25519 {KEY_BLOB}\n".encode())
    host.files["/run"] = Entry("dir")
    env = {**SSH, "SSH_USER_AUTH": "/run/auth"}
    assert resolve_operator(env, host) == Operator("bob@laptop", "ssh-key")


def test_an_unknown_key_is_named_by_its_fingerprint() -> None:
    host = key_host()
    host.files[ROOT_KEYS] = Entry("file", b"")
    assert resolve_operator(SSH, host) == Operator(key_fingerprint(KEY_BLOB) or "", "ssh-key")


def test_argv_masking() -> None:
    argv = ["fleet", "run", "shop", "--", "flask", "create-user", "--password", "hunter2",
            "--token=abc", "API_KEY=s3cret", "https://bob:tok@git.example.com/x.git"]
    assert mask_argv(argv) == ["fleet", "run", "shop", "--", "flask", "create-user",
                               "--password", MASK, f"--token={MASK}", f"API_KEY={MASK}",
                               f"https://{MASK}@git.example.com/x.git"]


def test_lines_append_whole_and_root_only(tmp_path: Path) -> None:
    path = str(tmp_path / "log" / "audit.log")
    lines = [json.dumps({"n": i, "pad": "x" * 5000}).encode() + b"\n" for i in range(40)]
    threads = [threading.Thread(target=append, args=(line, path)) for line in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = Path(path).read_text()
    assert sorted(json.loads(line)["n"] for line in text.splitlines()) == list(range(40))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_entry_names_the_app_and_its_commits_and_history_filters() -> None:
    before = {"shop": AppMark("aaa", "r1"), "blog": AppMark("bbb", "r2")}
    after = {"shop": AppMark("ccc", "r3"), "blog": AppMark("bbb", "r2")}
    line = entry(now=0.0, operator=Operator("alice", "sudo"), command=["fleet", "deploy", "shop"],
                 named=["shop"], whole_server=False, before=before, after=after,
                 result="changed", code=0)
    assert line.apps == ["shop"] and line.commits == {"shop": {"before": "aaa", "after": "ccc"}}
    assert line.time == "1970-01-01T00:00:00Z" and line.who == "alice"
    host = FakeHost()
    host.files["/var/log"] = Entry("dir")
    host.files["/var/log/fleet"] = Entry("dir")
    other = entry(now=1.0, operator=Operator("bob", "login"), command=["fleet", "apply"],
                  named=[], whole_server=True, before=before, after=before, result="ok", code=0)
    host.files["/var/log/fleet/audit.log"] = Entry("file", line.line() + b"junk\n" + other.line())
    log = "/var/log/fleet/audit.log"
    assert [e["who"] for e in read_entries(host, path=log)] == ["alice", "bob"]
    assert [e["who"] for e in read_entries(host, "shop", limit=1, path=log)] == ["bob"]
    assert [e["who"] for e in read_entries(host, limit=1, path=log)] == ["bob"]


def test_history_reads_the_rotated_logs_when_the_current_one_falls_short() -> None:
    """logrotate (compress, delaycompress) leaves audit.log.1 as it was and gzips the older."""
    def lines(*names: str) -> bytes:
        return b"".join(entry(now=float(i), operator=Operator(n, "sudo"),
                              command=["fleet", "deploy", n.split("-")[0]],
                              named=[n.split("-")[0]], whole_server=False, before={}, after={},
                              result="ok", code=0).line() for i, n in enumerate(names))

    log = "/var/log/fleet/audit.log"
    host = FakeHost()
    host.files["/var/log"] = Entry("dir")
    host.files["/var/log/fleet"] = Entry("dir")
    host.files[log] = Entry("file", lines("shop-5", "blog-6"))
    host.files[f"{log}.1"] = Entry("file", lines("shop-3", "blog-4"))
    host.files[f"{log}.2.gz"] = Entry("file", gzip.compress(lines("shop-1", "blog-2")))
    host.files[f"{log}.4.gz"] = Entry("file", gzip.compress(lines("shop-0")))  # after a gap

    def who(app: str | None = None, limit: int | None = None) -> list[str]:
        return [str(e["who"]) for e in read_entries(host, app, limit, path=log)]

    assert who(limit=2) == ["shop-5", "blog-6"]
    assert who(limit=3) == ["blog-4", "shop-5", "blog-6"]
    assert who(limit=50) == who() == ["shop-1", "blog-2", "shop-3", "blog-4", "shop-5", "blog-6"]
    assert who("shop", limit=2) == ["shop-3", "shop-5"]
    assert who("shop") == ["shop-1", "shop-3", "shop-5"]
    read = host.read
    opened: list[str] = []
    host.read = lambda path: (opened.append(path), read(path))[1]  # type: ignore[method-assign]
    assert who(limit=3) and opened == [log, f"{log}.1"]  # no older file than needed
    # A damaged rotated file is skipped: its lines are lost, not the command.
    host.files[f"{log}.2.gz"] = Entry("file", b"not gzip")
    assert who(limit=4) == ["shop-3", "blog-4", "shop-5", "blog-6"]
    assert who() == ["shop-3", "blog-4", "shop-5", "blog-6"]


def test_deploy_events_from_the_marks() -> None:
    before = {"shop": AppMark("aaa", "r1"), "blog": AppMark("bbb", "r2")}
    after = {"shop": AppMark("ccc", "r3"), "blog": AppMark("bbb", "r2", "r9: import failed")}
    line = entry(now=0.0, operator=Operator("alice", "sudo"), command=["fleet", "apply"],
                 named=[], whole_server=True, before=before, after=after, result="failed",
                 code=1)
    kinds = {(k, a) for k, a, _, _ in deploy_events("apply", line, before, after)}
    assert kinds == {("deploy.succeeded", "shop"), ("deploy.failed", "blog")}
    failed = next(d for k, _, _, d in deploy_events("apply", line, before, after)
                  if k == "deploy.failed")
    assert failed["error"] == "import failed" and failed["failed_release"] == "r9"
    back = entry(now=0.0, operator=Operator("a", "sudo"), command=["fleet", "rollback", "shop"],
                 named=["shop"], whole_server=False, before=after, after=before,
                 result="changed", code=0)
    assert [k for k, *_ in deploy_events("rollback", back, after, before)] == ["rollback"]


def test_result_word() -> None:
    assert session_result(1, []) == "failed"
    assert session_result(0, []) == "ok"


def notify_host() -> FakeHost:
    host = FakeHost()
    for d in ("/var/spool", "/var/spool/fleet", SPOOL):
        host.files[d] = Entry("dir", mode=0o700)
    host.files[UNIT] = Entry("file", b"[Service]\n")
    return host


def test_queue_event_spools_and_wakes_the_deliverer_without_waiting() -> None:
    host = notify_host()
    assert queue_event(host, "deploy.succeeded", "shop", "shop now runs abc", {"commit": "abc"})
    assert host.ran("systemctl", "start", "--no-block", "fleet-notify.service")
    spooled = [p for p in host.files if p.startswith(SPOOL + "/")]
    assert len(spooled) == 1 and host.files[spooled[0]].mode == 0o600
    body = json.loads(host.files[spooled[0]].content)["payload"]
    assert {"event", "app", "server", "time", "summary", "details", "fleet"} <= set(body)
    assert body["details"] == {"commit": "abc"}
    host.files.pop(UNIT)  # notifications off: nothing spooled, nothing started
    assert not queue_event(host, "deploy.failed", "shop", "x")
    assert not queue_event(notify_host(), "no.such.event", "shop", "x")


def test_retry_schedule_then_drop() -> None:
    assert [retry_delay(n) for n in range(1, MAX_ATTEMPTS + 1)] == [*BACKOFF, None]
    assert BACKOFF == (10.0, 30.0, 90.0, 270.0) and sum(BACKOFF) < 600
    host = notify_host()
    queue_event(host, "deploy.failed", "shop", "boom", now=1000.0)
    tries: list[float] = []
    now = 1000.0

    def down(*_args: object) -> None:
        tries.append(now)
        raise OSError("connection refused")

    settings = NotifySettings(webhook="https://hooks.example.com/x")
    while (wait := deliver_due(host, settings, now, post=down)) is not None:
        now += wait
    assert [t - 1000.0 for t in tries] == [0.0, 10.0, 40.0, 130.0, 400.0]
    assert not [p for p in host.files if p.startswith(SPOOL + "/")]  # dropped


def test_delivered_once_the_receiver_is_back_and_signed() -> None:
    host = notify_host()
    queue_event(host, "health.red", "shop", "down", now=0.0)
    sent: list[tuple[bytes, dict[str, str]]] = []
    up = {"ok": False}

    def post(url: str, body: bytes, headers: dict[str, str], timeout: float,
             cafile: str | None) -> None:
        if not up["ok"]:
            raise OSError("refused")
        sent.append((body, headers))

    settings = NotifySettings(webhook="https://h.example.com/", secret="k",
                              headers=(("X-Team", "ops"),))
    assert deliver_due(host, settings, 0.0, post=post) == 10.0
    up["ok"] = True
    assert deliver_due(host, settings, 4.0, post=post) == 6.0  # not due yet
    assert deliver_due(host, settings, 10.0, post=post) is None
    body, headers = sent[0]
    assert json.loads(body)["event"] == "health.red"
    assert headers["X-Team"] == "ops"
    assert headers["X-Fleet-Signature"] == delivery.signature("k", body)


def test_event_filter_drops_what_was_not_asked_for() -> None:
    host = notify_host()
    queue_event(host, "health.green", "shop", "up", now=0.0)
    queue_event(host, "deploy.failed", "shop", "boom", now=0.0)
    got: list[str] = []
    settings = NotifySettings(webhook="https://h/", events=("deploy.failed",))
    deliver_due(host, settings, 0.0,
                post=lambda _u, body, *_: got.append(json.loads(body)["event"]))
    assert got == ["deploy.failed"]
    assert not [p for p in host.files if p.startswith(SPOOL + "/")]


def test_command_target_runs_as_nobody_with_the_json_on_stdin() -> None:
    host = notify_host()
    queue_event(host, "rollback", "shop", "back", now=0.0)
    deliver_due(host, NotifySettings(command="logger -t fleet"), 0.0)
    [argv] = host.ran("setpriv")
    assert argv[:4] == ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    assert argv[-1].endswith("logger -t fleet")


def test_watch_tells_each_health_change_once() -> None:
    from fleet.config.settings import AppConfig

    _, _, apps = parse('[apps.shop]\nrepo = "https://git.example.com/s.git"\n'
                       'domains = ["shop.example.com"]\n')
    shop: AppConfig = apps[0] if isinstance(apps, list) else next(iter(apps.values()))
    state = WatchState()
    health = {"passed": True}

    def check(_app: AppConfig) -> HealthResult:
        return HealthResult(health["passed"], 200 if health["passed"] else 502, "HTTP x", 0.1)

    assert health_events([shop], state, check) == []  # first sight: recorded, not told
    health["passed"] = False
    assert [e[0] for e in health_events([shop], state, check)] == ["health.red"]
    assert health_events([shop], state, check) == []
    health["passed"] = True
    assert [e[0] for e in health_events([shop], state, check)] == ["health.green"]


def test_watch_tells_a_new_failed_backup_once() -> None:
    host = FakeHost()
    host.files["/var/lib/fleet"] = Entry("dir")
    host.files["/var/lib/fleet/backups"] = Entry("dir")
    record = {"app": "shop", "last_attempt": 5.0, "last_result": "failed", "error": "disk full",
              "last_success": 1.0, "snapshot": None, "bytes": 0}
    host.files["/var/lib/fleet/backups/shop.json"] = Entry("file", json.dumps(record).encode())
    state = WatchState()
    assert [e[0] for e in backup_events(host, state)] == ["backup.failed"]
    assert backup_events(host, state) == []


@pytest.mark.parametrize(("text", "expected"), [
    ('[server.notify]\nevents = ["deploy.exploded"]\n',
     "f.toml: server.notify.events[0]: unknown event 'deploy.exploded'"),
    ('[server.notify]\nwebhook = "ftp://x"\n', "f.toml: server.notify.webhook: must be an"),
    ('[server.notify]\nhooks = "x"\n', "f.toml: server.notify.hooks: unknown key"),
    ('[server.notify.headers]\n"X Bad" = "x"\n', "server.notify.headers.X Bad: is not an HTTP"),
])
def test_bad_notify_settings_are_one_line(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_notify_settings_parse() -> None:
    server, *_ = parse('[server.notify]\nwebhook = "https://h.example.com/x"\n'
                       'command = "logger"\nevents = ["deploy.failed"]\nsecret = "s"\n'
                       '[server.notify.headers]\nX-Team = "ops"\n')
    notify = server.notify
    assert notify.enabled and notify.wants("deploy.failed") and not notify.wants("rollback")
    assert notify.headers == (("X-Team", "ops"),)


def test_push_passes_the_operator_to_every_apply() -> None:
    ssh = FakeSsh()
    inventory, data = load_inventory("f.toml", FILE)
    push(inventory, data, ssh, Payload(b"PYZ", b"#!/bin/sh\n", "carol@desk"))
    applies = [c for _, c in ssh.calls if "fleet.pyz apply " in c]
    assert applies and all("FLEET_OPERATOR=carol@desk sh bootstrap" in c for c in applies)
    drains = [c for _, c in ssh.calls if "fleet.pyz drain " in c]
    assert drains and all("FLEET_OPERATOR=carol@desk" in c for c in drains)


def test_the_dispatcher_audits_a_changing_command_even_when_refused(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fleet.cli import audited
    from fleet.server import audit
    from tests.unit.support import fleet_main

    monkeypatch.setattr(audited.os, "geteuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    code, _, _ = fleet_main(monkeypatch, capsys, "apply", "--no-such-option")
    assert code == 2
    fleet_main(monkeypatch, capsys, "plan", "--no-such-option")  # looks only: no line
    lines = Path(audit.log_path()).read_text().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert (line["who"], line["result"], line["exit"]) == ("alice", "failed", 2)
    assert line["command"] == ["fleet", "apply", "--no-such-option"]


def test_a_removed_app_serves_no_commit_though_its_files_stay() -> None:
    from fleet.host.layout import AppPaths
    from fleet.server.audit import mark

    paths = AppPaths("shop")
    host = FakeHost()
    host.files[paths.state_file] = Entry("file", json.dumps(
        {"releases": [{"id": "r1", "commit": "abc", "built": 1.0, "deployed": 2.0}]}).encode())
    host.files[paths.current] = Entry("link", target=f"{paths.releases}/r1")
    host.files[paths.config_file] = Entry("file", b"")
    assert mark(host, "shop") == AppMark("abc", "r1")
    del host.files[paths.config_file]  # fleet remove-app (without --purge)
    assert mark(host, "shop") == AppMark()


def test_watch_run_skips_on_demand_apps_and_keeps_its_state() -> None:
    from fleet.config.settings import Config, EmperorConfig, ServerConfig
    from fleet.server.watch import watch

    _, _, apps = parse('[apps.shop]\nrepo = "https://git.example.com/s.git"\n'
                       'domains = ["shop.example.com"]\n'
                       '[apps.lazy]\nrepo = "https://git.example.com/l.git"\n'
                       'domains = ["lazy.example.com"]\nmode = "on-demand"\n')
    listed = list(apps.values()) if isinstance(apps, dict) else list(apps)
    config = Config(ServerConfig(), EmperorConfig(), tuple(listed))
    host = notify_host()
    host.files["/var/lib/fleet"] = Entry("dir")
    host.handlers.append(lambda _h, argv: RunResult(1, "", "")
                         if argv[:2] == ["systemctl", "is-failed"] else None)
    checked: list[str] = []

    def check(app):
        checked.append(app.name)
        return HealthResult(True, 200, "HTTP 200", 0.0)

    assert watch(host, config, check) == []
    assert checked == ["shop"]
    assert json.loads(host.files["/var/lib/fleet/watch.json"].content)["health"] == {
        "shop": "green"}

"""converge against the in-memory host: the plan logic, idempotence and failure isolation."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from fleet.config.store import desired_state
from fleet.converge import deploy as deploy_mod
from fleet.errors import FleetError
from fleet.host.actions import Run, Unknown, WriteFile
from fleet.host.machine import LocalHost, is_temp_name
from fleet.host.session import Status
from fleet.server.history import History
from fleet.server.release import VENV_MARKER
from tests.unit.support import CONFIG, SHA_A1, SHA_A2, SHA_B1, changed_steps, config, run, server

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

def test_fresh_server_is_provisioned_then_nothing_changes() -> None:
    host = server()
    cfg = config(host)
    _session, outcome = run(host, cfg)
    assert outcome.aborted is None
    assert {n: r.commit for n, r in outcome.apps.items()} == {"alpha": SHA_A1, "beta": SHA_B1}
    assert all(r.health == "passed" for r in outcome.apps.values())
    assert any("install" in c for c in host.ran("apt-get"))
    assert ["useradd", "--system", "--user-group", "--home-dir", "/srv/fleet/alpha",
            "--no-create-home", "--comment", "fleet app alpha", "--shell", "/usr/sbin/nologin",
            "alpha"] in host.commands
    ini = host.read("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini").decode()
    assert "uid = alpha" in ini and "need-app = true" in ini and "strict = true" in ini
    assert "chdir = /srv/fleet/alpha/releases/aaaaaaaaaaaa" in ini
    assert host.state("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini").mode == 0o600
    env = host.files["/etc/fleet/env/beta.env"]
    assert env.content == b"SECRET=hunter2\n" and env.mode == 0o600
    assert "hunter2" not in host.read("/etc/uwsgi/vassals/beta@cccccccccccc.ini").decode()
    assert host.state("/srv/fleet/alpha/current").target == "/srv/fleet/alpha/releases/aaaaaaaaaaaa"
    assert host.state("/etc/nginx/sites-enabled/default") is None
    assert host.ran("systemctl", "start", "fleet-emperor.service")

    host.commands.clear()
    again, outcome = run(host, cfg)
    assert changed_steps(again) == []
    assert again.counts()["changed"] == 0 and again.counts()["failed"] == 0
    assert not [c for c in host.commands if c[0] == "systemctl" and c[1] in
                ("start", "restart", "reload")]


def test_plan_on_fresh_server_changes_nothing_and_marks_unknowns() -> None:
    host = server()
    before = dict(host.files)
    session, _ = run(host, config(host), check=True)
    assert host.files.keys() == before.keys()
    assert not host.ran("apt-get") and not host.ran("useradd")
    repo_step = next(s for s in session.steps if s.name == "repo" and s.app == "alpha")
    assert any(isinstance(a, Unknown) for a in repo_step.actions)
    assert "packages" in changed_steps(session)


def test_new_commit_builds_release_reuses_venv_and_rewrites_only_that_vassal() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    beta_ini = host.read("/etc/uwsgi/vassals/beta@cccccccccccc.ini")
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}
    host.commands.clear()
    session, outcome = run(host, cfg)
    assert outcome.apps["alpha"].commit == SHA_A2
    assert changed_steps(session) == ["release alpha", "deploy alpha", "nginx site alpha",
                                      "nginx", "retire alpha"]
    # The new release ran beside the old one; once nginx switched, the old one was retired.
    assert host.state("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini") is None
    assert host.state("/etc/uwsgi/vassals/alpha@bbbbbbbbbbbb.ini") is not None
    assert host.state("/srv/fleet/alpha/current").target.endswith("/bbbbbbbbbbbb")
    assert b"alpha@bbbbbbbbbbbb" in host.read("/etc/nginx/sites-enabled/fleet-alpha.conf")
    assert not [c for c in host.commands if "pip" in c]  # same requirements: venv reused
    assert host.read("/etc/uwsgi/vassals/beta@cccccccccccc.ini") == beta_ini


def test_secret_change_rewrites_only_that_apps_env_and_vassal() -> None:
    host = server()
    run(host, config(host))
    session, _ = run(host, config(host, CONFIG.replace("hunter2", "changed")))
    # A new environment is served by the commit's twin release, gated beside the live one
    # (a vassal reloaded in place drops requests): only beta's steps, and nginx.
    assert changed_steps(session) == ["release beta", "deploy beta", "nginx site beta",
                                      "nginx", "retire beta"]
    assert host.read("/srv/fleet/beta/current") is None  # a link, to the twin:
    assert host.files["/srv/fleet/beta/current"].target.endswith("/cccccccccccc-b")
    step = next(s for s in session.steps if s.name == "deploy" and s.app == "beta")
    env_write = next(a for a in step.actions if isinstance(a, WriteFile) and a.secret)
    assert "changed" not in env_write.diff() and "hunter2" not in env_write.diff()


def test_failing_app_fails_alone() -> None:
    host = server()
    text = CONFIG.replace("git://remote/beta.git", "git://remote/missing.git")
    session, outcome = run(host, config(host, text))
    assert outcome.apps["beta"].failed and "repository" in (outcome.apps["beta"].error or "")
    assert outcome.apps["alpha"].health == "passed"
    assert host.state("/etc/uwsgi/vassals/beta@cccccccccccc.ini") is None
    assert session.counts()["failed"] == 1


def test_failed_pip_keeps_previous_release_and_removes_half_built_venv() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    old_ini = host.read("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini")
    host.repo_files[SHA_A2] = {"requirements.txt": b"nonexistent==9\n", "wsgi.py": b""}
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2}
    host.pip_fails = True
    _, outcome = run(host, cfg)
    assert outcome.apps["alpha"].failed and outcome.apps["alpha"].error.startswith("virtualenv")
    assert host.read("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini") == old_ini
    assert len(host.listdir("/srv/fleet/alpha/venvs")) == 1


def test_invalid_nginx_site_is_reverted_and_blamed_on_its_app() -> None:
    host = server()
    run(host, config(host))
    old_site = host.read("/etc/nginx/sites-enabled/fleet-alpha.conf")
    host.nginx_ok = False
    _session, outcome = run(host, config(host, CONFIG.replace('"alpha.test"',
                                                             '"alpha.test", "a2.test"')))
    assert outcome.apps["alpha"].failed
    assert "nginx rejected this app's site" in (outcome.apps["alpha"].error or "")
    assert host.read("/etc/nginx/sites-enabled/fleet-alpha.conf") == old_site
    assert not outcome.apps["beta"].failed


def test_only_converges_the_named_app(healthy: list[str]) -> None:
    host = server()
    run(host, config(host))
    healthy.clear()
    text = CONFIG + '[apps.gamma]\nrepo = "git://remote/alpha.git"\ndomains = ["g.test"]\n'
    session, _ = run(host, config(host, text), only={"gamma"})
    assert {s.app for s in session.steps if s.app} == {"gamma"}
    assert healthy == ["gamma"]


def test_stale_vassal_and_site_are_removed() -> None:
    host = server()
    run(host, config(host))
    one = "[apps.alpha]\nrepo = 'git://remote/alpha.git'\ndomains = ['alpha.test']\n"
    host.remove("/etc/fleet/apps/beta.toml")
    session, _ = run(host, desired_state(host, "f.toml", one).config)
    assert host.state("/etc/uwsgi/vassals/beta@cccccccccccc.ini") is None
    assert host.state("/etc/nginx/sites-enabled/fleet-beta.conf") is None
    assert host.state("/srv/fleet/beta/shared") is not None  # data stays
    assert any(isinstance(a, Run) and a.argv[:2] == ("systemctl", "reload")
               for s in session.steps for a in s.actions)


def test_drifted_file_mode_is_repaired() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    host.chown("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini", 0o644, "root", "root")
    session, _ = run(host, cfg)
    assert changed_steps(session) == ["vassal alpha"]
    assert host.state("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini").mode == 0o600


def test_release_failing_its_gate_is_stopped_and_the_old_one_keeps_serving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    site = host.read("/etc/nginx/sites-enabled/fleet-alpha.conf")
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2}

    def failing_gate(*_args, **_kwargs):
        raise FleetError("release bbbbbbbbbbbb failed its health check (HTTP 500)")

    monkeypatch.setattr(deploy_mod, "gate", failing_gate)
    _session, outcome = run(host, cfg)
    assert outcome.apps["alpha"].failed and "health check" in outcome.apps["alpha"].error
    assert host.state("/etc/uwsgi/vassals/alpha@bbbbbbbbbbbb.ini") is None
    assert host.state("/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini") is not None
    assert host.read("/etc/nginx/sites-enabled/fleet-alpha.conf") == site
    assert host.state("/srv/fleet/alpha/current").target.endswith("/aaaaaaaaaaaa")
    history = History.load(host, "alpha")
    assert history.releases["bbbbbbbbbbbb"].failed
    assert not outcome.apps["beta"].failed


def test_rollback_pin_wins_over_the_moving_ref() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2}
    run(host, cfg)
    assert host.state("/srv/fleet/alpha/current").target.endswith("/bbbbbbbbbbbb")
    history = History.load(host, "alpha")
    previous = history.previous("bbbbbbbbbbbb")
    assert previous is not None and previous.commit == SHA_A1
    history.pin = {"commit": SHA_A1, "ref": None}
    host.write(history.write_action(host)[0].path, history.to_bytes(), 0o600, "root", "root")
    run(host, cfg)
    assert host.state("/srv/fleet/alpha/current").target.endswith("/aaaaaaaaaaaa")


def test_old_releases_are_pruned_to_keep_releases() -> None:
    host = server()
    text = CONFIG.replace('domains = ["alpha.test"]', 'domains = ["alpha.test"]\nkeep_releases = 2')
    cfg = config(host, text)
    shas = [c * 40 for c in "def9"]
    for sha in shas:
        host.repo_files[sha] = {"requirements.txt": b"flask\n", "wsgi.py": sha.encode()}
    run(host, cfg)
    for sha in shas:
        host.commits["git://remote/alpha.git"] = {"HEAD": sha}
        run(host, cfg)
    kept = host.listdir("/srv/fleet/alpha/releases")
    assert kept == sorted([shas[-2][:12], shas[-1][:12]]), kept


def test_leftover_temp_files_are_swept_and_nothing_else() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    leftovers = ["/etc/nginx/sites-enabled/.fleet-tmp-k2_x9qaz",
                 "/etc/fleet/env/.fleet-tmp-00000000", "/etc/uwsgi/vassals/.fleet-tmp-abcdefgh",
                 "/var/lib/fleet/apps/.fleet-tmp-zzzzzzzz", "/run/.fleet-env-x_1ab2cd"]
    host.mkdir("/run", 0o755, "root", "root")
    for path in leftovers:
        host.write(path, b"half a file", 0o600, "root", "root")
    host.symlink("/srv/fleet/alpha/current.fleet-tmp", "/srv/fleet/alpha/releases/x")
    leftovers.append("/srv/fleet/alpha/current.fleet-tmp")
    kept = ["/etc/nginx/sites-enabled/.fleet-complete", "/etc/uwsgi/vassals/.fleet-complete",
            "/etc/nginx/sites-enabled/operator.conf", "/etc/nginx/sites-enabled/.fleet-tmp-ab",
            "/etc/nginx/sites-enabled/.fleet-abcdefgh", "/etc/ssl/.fleet-tmp-abcdefgh",
            "/run/.fleet-env-long-name", "/run/fleet-env-abcdefgh"]
    host.mkdir("/etc/ssl", 0o755, "root", "root")
    for path in kept:
        host.write(path, b"keep", 0o644, "root", "root")
    venv_marker = next(p for p in host.files if p.endswith("/.fleet-complete"))
    kept.append(venv_marker)

    plan, _ = run(host, cfg, check=True)
    step = next(s for s in plan.steps if s.name == "leftover temp files")
    assert step.status is Status.PENDING
    assert sorted(a.path for a in step.actions) == sorted(leftovers)
    assert all(host.state(p) for p in leftovers)  # a plan removes nothing

    session, _ = run(host, cfg)
    assert changed_steps(session) == ["leftover temp files"]
    assert session.steps[0].name == "leftover temp files"  # before anything is written
    assert [p for p in leftovers if host.state(p)] == []
    assert [p for p in kept if host.state(p) is None] == []
    again, _ = run(host, cfg)
    assert changed_steps(again) == [] and again.counts()["changed"] == 0


def test_temp_names_the_host_writes_are_the_ones_swept(monkeypatch, tmp_path) -> None:
    """Killed between creating the temp file (or link) and renaming it: the name it leaves."""
    from fleet.host import machine as host_mod

    names: list[str] = []

    def killed(src: str, _dest: str) -> None:
        names.append(os.path.basename(src))
        raise KeyboardInterrupt

    monkeypatch.setattr(host_mod.os, "replace", killed)
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    for call in (lambda: LocalHost().write(str(tmp_path / "site.conf"), b"x", 0o644, me, group),
                 lambda: LocalHost().symlink(str(tmp_path / "current"), "/nowhere")):
        with pytest.raises(KeyboardInterrupt):
            call()
    assert len(names) == 2 and all(is_temp_name(n) for n in names), names
    assert names[1] == "current.fleet-tmp"
    assert not is_temp_name(VENV_MARKER)


def test_a_site_written_by_a_run_killed_before_its_reload_is_reloaded_by_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by test_reliability's kill at 0.9 s: the killed run had written the new site, so
    the next run saw it unchanged and never reloaded nginx, which kept proxying to the old
    release. A mark set before any nginx file changes, cleared after the reload, closes it."""
    from fleet.converge import apply as apply_mod
    from fleet.host import pending

    host = server()
    run(host, config(host))
    assert not pending.owes(host, "nginx")
    moved = config(host, CONFIG.replace('"alpha.test"', '"alpha.example"'))

    def killed(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # SIGKILL between the site's write and the reload

    reload = apply_mod.apply_reload
    monkeypatch.setattr(apply_mod, "apply_reload", killed)
    with pytest.raises(KeyboardInterrupt):
        run(host, moved)
    monkeypatch.setattr(apply_mod, "apply_reload", reload)
    assert b"alpha.example" in host.read("/etc/nginx/sites-enabled/fleet-alpha.conf")
    assert pending.owes(host, "nginx")

    host.commands.clear()
    session, _ = run(host, moved)
    assert "nginx site alpha" not in changed_steps(session)  # the file was already written
    assert "nginx" in changed_steps(session)
    assert host.ran("systemctl", "reload", "nginx")
    assert not pending.owes(host, "nginx")
    host.commands.clear()
    assert changed_steps(run(host, moved)[0]) == []

"""FactsHost: the facts a run asks for per app are gathered once, and forgotten on change."""

from __future__ import annotations

import sys
import threading

import pytest

from fleet.converge.apply import converge
from fleet.errors import CommandError
from fleet.host.facts import FactsHost, runs_binary
from fleet.host.machine import RunResult
from fleet.host.session import Session
from fleet.server import release
from fleet.server.repo import origin_in_config, remote_refs
from fleet.server.users import check_identities
from tests.unit.fakehost import FakeHost
from tests.unit.support import (
    SHA_A1,
    SHA_A2,
    SHA_B1,
    Quiet,
    changed_steps,
    config,
    run,
    server,
)

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

MANY = "".join(f'[apps.a{i:02d}]\nrepo = "git://remote/alpha.git"\ndomains = ["a{i:02d}.test"]\n'
               for i in range(1, 11))


def fact_commands(commands: list[list[str]]) -> dict[str, int]:
    """How often each per-run fact was asked of the machine."""
    keys = {"getent": lambda c: c[0] == "getent",
            "nginx -v": lambda c: c[:2] == ["nginx", "-v"],
            "python version": lambda c: c[0] == "/usr/bin/python3" and "-I" in c}
    return {name: sum(1 for c in commands if match(c)) for name, match in keys.items()}


def test_noop_apply_of_ten_apps_asks_each_fact_once_and_changes_nothing() -> None:
    host = server()
    cfg = config(host, MANY)
    _, outcome = run(host, cfg)
    assert outcome.aborted is None and all(r.health == "passed" for r in outcome.apps.values())
    host.commands.clear()
    again, outcome = run(host, cfg)
    assert changed_steps(again) == [] and again.counts()["failed"] == 0
    # One listing of the accounts, not a getent per app and step.
    assert fact_commands(host.commands) == {"getent": 1, "nginx -v": 1, "python version": 1}
    assert host.ran("getent") == [["getent", "passwd"]]
    assert len(host.ran("dpkg-query")) == 1  # every package in one question
    # The Emperor's and nginx's is-enabled and is-active: one systemctl show for both.
    assert host.ran("systemctl") == [["systemctl", "show",
                                      "--property=Id,ActiveState,UnitFileState", "--",
                                      "fleet-emperor.service", "nginx.service"]]


def test_identity_checks_of_ten_apps_read_two_listings() -> None:
    host = server()
    cfg = config(host, MANY)
    run(host, cfg)
    host.commands.clear()
    check_identities(FactsHost(host), cfg)  # passwd and group of each app, group www-data
    assert sorted(host.ran("getent")) == [["getent", "group"], ["getent", "passwd"]]


def test_same_result_as_the_bare_host() -> None:
    """The facts layer changes how often the machine is asked, never what a run does: a
    fresh apply and then a no-op one, with and without it, do and report the same."""
    history = "/var/lib/fleet/apps/"  # holds build and deploy times

    def steps(session: Session) -> list[tuple]:
        return [(s.name, s.app, s.status, [a for a in s.actions
                                           if not getattr(a, "path", "").startswith(history)])
                for s in session.steps]

    cached, bare = server(), server()
    for _ in range(2):
        cached_session, _ = run(cached, config(cached, MANY))
        bare_session = Session(bare, Quiet())
        converge(config(bare, MANY), bare_session)
        assert steps(cached_session) == steps(bare_session)
    assert {p: e for p, e in cached.files.items() if not p.startswith(history)} == \
        {p: e for p, e in bare.files.items() if not p.startswith(history)}
    assert cached.files.keys() == bare.files.keys()


def test_a_new_account_is_seen_after_useradd() -> None:
    fake = FakeHost()
    host = FactsHost(fake)
    assert not host.run(["getent", "passwd", "alpha"], check=False).ok
    host.run(["useradd", "--comment", "fleet app alpha", "alpha"])
    found = host.run(["getent", "passwd", "alpha"], check=False)
    assert found.ok and found.stdout.startswith("alpha:x:")


def test_any_write_forgets_the_facts() -> None:
    fake = FakeHost()
    host = FactsHost(fake)
    host.run(["nginx", "-v"], check=False)
    host.run(["nginx", "-v"], check=False)
    assert len(fake.ran("nginx", "-v")) == 1
    host.write("/etc/x", b"", 0o644, "root", "root")
    host.run(["nginx", "-v"], check=False)
    assert len(fake.ran("nginx", "-v")) == 2


def test_reads_keep_the_facts_and_unknown_commands_forget_them() -> None:
    fake = FakeHost()
    host = FactsHost(fake)
    host.run(["getent", "group", "www-data"])
    host.run(["git", "-c", "safe.directory=*", "-C", "/r", "rev-parse", "HEAD"], check=False)
    host.run(["systemctl", "show", "x.service"])
    host.run(["getent", "group", "www-data"])
    assert len(fake.ran("getent")) == 1
    host.run(["apt-get", "install", "-y", "nginx"])
    host.run(["getent", "group", "www-data"])
    assert len(fake.ran("getent")) == 2


@pytest.mark.parametrize(("shown", "active", "enabled"), [
    ("ActiveState=active\nUnitFileState=enabled", 0, 0),
    ("ActiveState=reloading\nUnitFileState=static", 0, 0),
    ("ActiveState=failed\nUnitFileState=enabled-runtime", 3, 0),
    ("ActiveState=activating\nUnitFileState=generated", 3, 0),
    ("ActiveState=inactive\nUnitFileState=disabled", 3, 1),
    ("ActiveState=inactive\nUnitFileState=masked", 3, 1),
    ("ActiveState=inactive\nUnitFileState=linked", 3, 1),
    ("ActiveState=inactive", 3, 1),  # no unit file: `show` leaves UnitFileState out
])
def test_is_active_and_is_enabled_answer_from_one_show_as_systemctl_would(
        shown: str, active: int, enabled: int) -> None:
    """The exit codes systemctl(1) gives is-active and is-enabled for each state."""
    fake = FakeHost()
    fake.handlers.append(lambda h, argv: RunResult(
        0, "\n".join(f"Id={u}\n{shown}\n" for u in argv[4:]), "")
        if argv[:2] == ["systemctl", "show"] else None)
    host = FactsHost(fake)
    for unit in ("nginx", "fleet-emperor.service", "x.timer"):
        assert host.run(["systemctl", "is-active", "--quiet", unit],
                        check=False).returncode == active
        assert host.run(["systemctl", "is-enabled", "--quiet", unit],
                        check=False).returncode == enabled
    # nginx and the Emperor from the first show; x.timer, not among them, from its own.
    assert [c[4:] for c in fake.ran("systemctl")] == [
        ["fleet-emperor.service", "nginx.service"],
        ["fleet-emperor.service", "nginx.service", "x.timer"]]


def test_unit_states_are_asked_again_after_a_change_or_when_show_fails() -> None:
    fake = FakeHost()
    fake.active.add("nginx")
    host = FactsHost(fake)
    assert host.run(["systemctl", "is-active", "--quiet", "nginx"], check=False).ok
    host.run(["systemctl", "stop", "nginx"])
    assert not host.run(["systemctl", "is-active", "--quiet", "nginx"], check=False).ok
    assert len(fake.ran("systemctl", "show")) == 2
    fake.handlers.append(lambda h, argv: RunResult(1, "", "Failed to connect to bus")
                         if argv[:2] == ["systemctl", "show"] else None)
    host.forget()
    with pytest.raises(CommandError):  # what the command itself says, as without the facts
        host.run(["systemctl", "is-active", "--quiet", "nginx"])
    assert fake.ran("systemctl", "is-active")


def test_an_account_the_listing_lacks_is_asked_by_name() -> None:
    """An account source that does not enumerate (LDAP) may know a name the listing lacks."""
    fake = FakeHost()
    fake.handlers.append(lambda h, argv: RunResult(0, "root:x:0:0:root:/root:/bin/bash\n", "")
                         if argv == ["getent", "passwd"] else None)
    host = FactsHost(fake)
    found = host.run(["getent", "passwd", "www-data"])
    assert found.ok and found.stdout.startswith("www-data:")
    assert fake.ran("getent", "passwd", "www-data")


def test_a_failing_fact_raises_when_checked() -> None:
    host = FactsHost(FakeHost())
    assert not host.run(["getent", "passwd", "nobody-here"], check=False).ok
    with pytest.raises(CommandError):
        host.run(["getent", "passwd", "nobody-here"])


# ------------------------------------------------------------------ ref checks


def moving_mirror(host: FakeHost, url: str, old: str) -> dict[str, bool]:
    """The mirror of `url` resolves its refs to `old`, and has no newer commit, until a fetch
    brings the remote's."""
    fetched = {"done": False}

    def handler(fake: FakeHost, argv: list[str]) -> RunResult | None:
        if argv[:3] != ["git", "-c", "safe.directory=*"] or "-C" not in argv:
            return None
        repo = argv[argv.index("-C") + 1]
        if fake.read(f"{repo}/url") != url.encode():
            return None
        if "fetch" in argv:
            fetched["done"] = True
        elif "rev-parse" in argv and not fetched["done"]:
            return RunResult(0, old + "\n", "")
        elif ("cat-file" in argv and argv[-1].endswith("^{commit}") and not fetched["done"]
              and argv[-1] != f"{old}^{{commit}}"):
            return RunResult(128, "", "fatal: bad object")  # not fetched yet
        return None

    host.handlers.append(handler)
    return fetched


def test_unmoved_refs_are_asked_once_per_remote_and_nothing_is_fetched() -> None:
    host = server()
    cfg = config(host, MANY)  # ten apps, one remote
    run(host, cfg)
    host.commands.clear()
    again, _ = run(host, cfg)
    assert changed_steps(again) == []
    assert len([c for c in host.ran("git") if "ls-remote" in c]) == 1
    assert not [c for c in host.ran("git") if "fetch" in c]


def test_a_moved_ref_is_fetched_and_deployed() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}
    fetched = moving_mirror(host, "git://remote/alpha.git", SHA_A1)
    host.commands.clear()
    _, outcome = run(host, cfg)
    assert fetched["done"]
    assert outcome.apps["alpha"].commit == SHA_A2
    assert outcome.apps["beta"].commit == SHA_B1
    fetches = [c for c in host.ran("git") if "fetch" in c]
    assert [c[4] for c in fetches] == ["/srv/fleet/alpha/repo.git"]  # beta's ref did not move


def test_a_remote_that_does_not_answer_ls_remote_is_fetched_as_before() -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    host.handlers.append(lambda fake, argv: RunResult(128, "", "fatal: unreachable")
                         if "ls-remote" in argv else None)
    host.commands.clear()
    again, outcome = run(host, cfg)
    assert changed_steps(again) == [] and outcome.apps["alpha"].commit == SHA_A1
    assert len([c for c in host.ran("git") if "fetch" in c]) == 2


def test_remotes_are_asked_in_parallel_each_once() -> None:
    host = FakeHost()
    urls = [f"git://remote/r{i}.git" for i in range(12)]
    host.commits = {url: {"HEAD": SHA_A1} for url in urls}
    answers = remote_refs(FactsHost(host), urls + urls[:3])
    assert answers.keys() == set(urls)
    assert all(a == f"{SHA_A1}\tHEAD\n" for a in answers.values())
    assert len(host.ran("git")) == 12


@pytest.mark.parametrize(("text", "expected"), [
    (b'[core]\n\tbare = true\n[remote "origin"]\n\turl = git://h/a.git\n\tmirror = true\n',
     "git://h/a.git"),
    (b'[remote "upstream"]\n\turl = git://h/b.git\n[remote "origin"]\n\turl = https://h/a\n',
     "https://h/a"),
    (b'[remote "origin"]\n\turl = "git://h/quoted.git"\n', None),  # git decides
    (b'[remote "upstream"]\n\turl = git://h/b.git\n', None),
    (None, None),
])
def test_origin_in_config(text: bytes | None, expected: str | None) -> None:
    assert origin_in_config(text) == expected


def test_git_reads_are_asked_once_per_app_warm_up_included() -> None:
    host = server()
    cfg = config(host, MANY)
    run(host, cfg)
    host.commands.clear()
    run(host, cfg)
    reads = [tuple(c) for c in host.ran("git") if "cat-file" in c or "show" in c]
    assert len(reads) == len(set(reads)) == 20  # the commit and a requirements file per app


def test_a_fetch_forgets_the_remembered_ref() -> None:
    fake = server()
    run(fake, config(fake))
    host = FactsHost(fake)
    rev_parse = ["git", "-c", "safe.directory=*", "-C", "/srv/fleet/alpha/repo.git",
                 "rev-parse", "--verify", "--quiet", "--end-of-options", "HEAD^{commit}"]
    assert host.run(rev_parse).stdout.strip() == SHA_A1
    fake.commits["git://remote/alpha.git"]["HEAD"] = SHA_A2
    assert host.run(rev_parse).stdout.strip() == SHA_A1  # remembered
    host.run(["git", "-c", "safe.directory=*", "-C", "/srv/fleet/alpha/repo.git", "fetch"])
    assert host.run(rev_parse).stdout.strip() == SHA_A2


def test_the_system_pythons_version_is_fleets_own_when_it_runs_that_binary(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert runs_binary(sys.executable)  # the interpreter running the tests, by any name
    assert not runs_binary("/bin/sh") and not runs_binary("/no/such/python")
    for same, expected, asked in ((True, sys.version, 0), (False, "3.11.2 (main)", 1)):
        monkeypatch.setattr(release, "runs_binary", lambda path, same=same: same)
        fake = FakeHost()
        host = FactsHost(fake)
        release.know_python_version(host)
        assert release.python_version(host).startswith(expected)
        assert len(fake.ran("/usr/bin/python3")) == asked
        host.forget()  # a change: asked of the binary itself from then on
        release.python_version(host)
        assert len(fake.ran("/usr/bin/python3")) == asked + 1


def test_with_git_installed_the_remotes_are_asked_in_a_thread_from_the_start() -> None:
    """The ls-remote runs beside the first steps; the run does and reports the same."""
    one = '[apps.alpha]\nrepo = "git://remote/alpha.git"\ndomains = ["alpha.test"]\n'
    asked_in: dict[str, list[str]] = {"early": [], "late": []}
    steps = {}
    for name in ("early", "late"):
        host = server()
        if name == "early":
            for path in ("/usr", "/usr/bin"):
                host.mkdir(path, 0o755, "root", "root")
            host.write("/usr/bin/git", b"", 0o755, "root", "root")
        host.handlers.append(lambda fake, argv, name=name: asked_in[name].append(
            threading.current_thread().name) if "ls-remote" in argv else None)
        run(host, config(host, one))
        session, outcome = run(host, config(host, one))
        steps[name] = [(s.name, s.app, s.status, s.actions) for s in session.steps]
        assert outcome.apps["alpha"].commit == SHA_A1 and changed_steps(session) == []
        assert not [c for c in host.ran("git") if "fetch" in c]  # the answer was used
    assert steps["early"] == steps["late"]
    # Asked once each, by the second run (the first has no mirror yet: it clones).
    assert asked_in == {"early": ["fleet-ls-remote"], "late": ["MainThread"]}

"""The remotes asked before the run loads its code (fleet.converge.refs.prefetch): real git
against real bare repositories for the prefetch, the fake host for the run that uses it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fleet.cli import basics
from fleet.converge import refs
from fleet.converge.refs import RefChecks, prefetch
from tests.unit.fakehost import FakeHost
from tests.unit.support import config, server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the prefetch is root's only")


@pytest.fixture(autouse=True)
def nothing_prefetched():
    refs.drop_prefetched()
    yield
    refs.drop_prefetched()


def bare_repo(tmp_path: Path, name: str) -> tuple[str, str]:
    """A bare repository with one commit on main: its URL and that commit."""
    work, bare = tmp_path / f"{name}-work", tmp_path / f"{name}.git"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for argv in (["git", "init", "-q", "-b", "main", str(work)],
                 ["git", "-C", str(work), "commit", "-q", "--allow-empty", "-m", name],
                 ["git", "clone", "-q", "--bare", str(work), str(bare)]):
        subprocess.run(argv, env=env, check=True, capture_output=True)
    sha = subprocess.run(["git", "-C", str(bare), "rev-parse", "main"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    return f"file://{bare}", sha


def operator_file(tmp_path: Path, urls: dict[str, str]) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text("".join(f'[apps.{n}]\nrepo = "{u}"\ndomains = ["{n}.test"]\n\n'
                            for n, u in urls.items()))
    return path


def test_the_run_uses_the_prefetched_answers_and_asks_only_the_others(tmp_path: Path) -> None:
    alpha_url, alpha_sha = bare_repo(tmp_path, "alpha")
    prefetch(operator_file(tmp_path, {"alpha": alpha_url}), check=True)
    (early,) = refs.PREFETCHED
    assert early.urls == [alpha_url] and early.thread is not None  # asked already
    host = server()
    text = (f'[apps.alpha]\nrepo = "{alpha_url}"\ndomains = ["alpha.test"]\n\n'
            '[apps.beta]\nrepo = "git://remote/beta.git"\ndomains = ["beta.test"]\n')
    host.mkdir("/usr/bin", 0o755, "root", "root")
    host.write("/usr/bin/git", b"", 0o755, "root", "root")
    checks = RefChecks.for_run(host, config(host, text), only=None, check=True)
    answers = checks.answers()
    assert answers[alpha_url].startswith(f"{alpha_sha}\tHEAD\n"), answers  # real git's
    assert answers["git://remote/beta.git"] is not None
    asked = [c[-1] for c in host.commands if "ls-remote" in c]
    assert asked == ["git://remote/beta.git"]  # the prefetched one is not asked again
    assert refs.PREFETCHED == []  # taken by this run: no later run uses an old answer


def test_without_a_file_the_stored_apps_are_asked_and_only_those_with_a_mirror(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = bare_repo(tmp_path, "alpha")
    etc = tmp_path / "etc"
    (etc / "apps").mkdir(parents=True)
    (etc / "apps" / "alpha.toml").write_text(f'repo = "{url}"\ndomains = ["a.test"]\n')
    (etc / "apps" / "beta.toml").write_text('repo = "git://nowhere/beta.git"\n')
    (etc / "fleet.toml").write_text("[server]\ngit_timeout = 30\n")
    monkeypatch.setattr(refs.layout, "SERVER_FILE", str(etc / "fleet.toml"))
    monkeypatch.setattr(refs.layout, "APPS_DIR", str(etc / "apps"))
    monkeypatch.setattr(refs.AppPaths, "repo", property(
        lambda self: str(tmp_path / self.name / "repo.git")))
    (tmp_path / "alpha" / "repo.git").mkdir(parents=True)  # beta has no mirror: a clone
    prefetch(None, check=False)
    (early,) = refs.PREFETCHED
    assert early.urls == [url] and early.timeout == 30
    assert early.answers()[url] is not None


@pytest.mark.parametrize("content", ["[apps.alpha\n", "x = " + "[" * 2000 + "]" * 2000,
                                     "a = 1\n" * 200_000, '[apps]\nalpha = "not a table"\n',
                                     '[server]\ngit_timeout = "soon"\n[apps.a]\nrepo = "x"\n'])
def test_a_file_the_run_will_refuse_starts_nothing_and_raises_nothing(
        tmp_path: Path, content: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(content)
    prefetch(path, check=True)
    prefetch(tmp_path / "missing.toml", check=True)
    assert refs.PREFETCHED == []


def test_not_root_nothing_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = bare_repo(tmp_path, "alpha")
    monkeypatch.setattr(refs.os, "geteuid", lambda: 1000)
    prefetch(operator_file(tmp_path, {"alpha": url}), check=True)
    assert refs.PREFETCHED == []


def test_a_run_that_waited_for_the_lock_drops_the_prefetch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other run may have pushed the remotes on (or waited minutes): ask afresh."""
    url, _ = bare_repo(tmp_path, "alpha")
    lock = tmp_path / "lock"
    monkeypatch.setattr(basics.layout, "LOCK_FILE", str(lock))
    monkeypatch.setattr(basics, "desired_state", lambda *a, **k: "desired")
    prefetch(operator_file(tmp_path, {"alpha": url}), check=True)
    assert refs.PREFETCHED
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        threading.Thread(target=lambda: (time.sleep(0.5), fcntl.flock(held, fcntl.LOCK_UN)),
                         daemon=True).start()
        with basics.locked_state(FakeHost()) as desired:
            assert desired == "desired"
    assert refs.PREFETCHED == []

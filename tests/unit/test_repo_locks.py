"""A fleet run killed while git fetched leaves git's lock files in the app's mirror; the next
run's fetch must not fail on them forever. Real git, on a real mirror in a temporary directory
(the e2e kill tests hit this only when the kill lands inside the fetch)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fleet.errors import CommandError
from fleet.host.machine import LocalHost
from fleet.server import repo as repo_res

pytestmark = pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True)
                                .returncode != 0, reason="git is not installed")


def git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(work: Path, text: str) -> str:
    (work / "wsgi.py").write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", text, cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare remote, a work tree that pushes to it, and fleet's mirror of it."""
    bare, work, mirror = tmp_path / "remote.git", tmp_path / "work", tmp_path / "repo.git"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("init", "-q", "-b", "main", str(work), cwd=tmp_path)
    git("remote", "add", "origin", str(bare), cwd=work)
    commit(work, "v1")
    git("push", "-q", "origin", "HEAD:old", cwd=work)
    git("clone", "-q", "--mirror", str(bare), str(mirror), cwd=tmp_path)
    return bare, work, mirror


@pytest.mark.parametrize("lock", ["refs/heads/main.lock", "packed-refs.lock"])
def test_a_lock_left_by_a_killed_fetch_is_removed_and_the_fetch_retried(remote, lock) -> None:
    bare, work, mirror = remote
    (mirror / lock).write_text("")  # what a git SIGKILLed while updating the ref leaves
    new = commit(work, "v2")
    git("push", "-q", "origin", ":old", cwd=work)  # pruned: packed-refs is rewritten
    host = LocalHost()
    plain = host.run(repo_res.git(str(mirror), "fetch", "--prune", "--quiet", "origin"),
                     check=False)
    assert not plain.ok and repo_res.LOCK_EXISTS_RE.search(plain.stderr), plain.stderr
    removed = repo_res.fetch(host, str(bare), str(mirror))
    assert removed == [str(mirror / lock)]
    assert not (mirror / lock).exists()
    assert repo_res.resolve(host, str(mirror), "main") == new
    assert "old" not in git("branch", "--list", cwd=mirror)
    assert repo_res.fetch(host, str(bare), str(mirror)) == []  # and the next one finds none


def test_another_failure_is_reported_as_it_is_and_nothing_is_removed(remote) -> None:
    bare, _, mirror = remote
    keep = mirror / "hooks" / "kept.lock"  # a lock, but the fetch fails for another reason
    keep.write_text("")
    bare.rename(bare.with_suffix(".gone"))
    with pytest.raises(CommandError) as caught:
        repo_res.fetch(LocalHost(), str(bare), str(mirror))
    assert "does not appear to be a git repository" in caught.value.stderr
    assert keep.exists()

"""git's answers about a commit's content kept between runs (fleet.host.git_answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.host import git_answers
from fleet.host.facts import FactsHost
from fleet.host.git_answers import GitAnswers, immutable
from fleet.host.render_cache import RenderCache
from tests.unit.support import SHA_A1, SHA_A2, changed_steps, config, run, server
from tests.unit.test_facts import MANY, moving_mirror

pytestmark = pytest.mark.usefixtures("healthy")

GIT = ["git", "-c", "safe.directory=*", "-C", "/srv/fleet/a/repo.git"]


@pytest.mark.parametrize(("args", "kept"), [
    (["ls-tree", "--full-tree", SHA_A1, "--", "static"], True),
    (["show", f"{SHA_A1}:requirements.txt"], True),
    (["cat-file", "-e", f"{SHA_A1}:uv.lock"], True),
    (["cat-file", "-e", f"{SHA_A1}^{{commit}}"], True),
    (["rev-parse", "--verify", "--quiet", "--end-of-options", f"{SHA_A1}^{{commit}}"], False),
    (["show", "main:requirements.txt"], False),  # a ref: it moves
    (["show", f"{SHA_A1[:12]}:requirements.txt"], False),  # an abbreviation could grow
    (["ls-tree", "--full-tree", "HEAD", "--", "static"], False),
    (["show", "--textconv", f"{SHA_A1}:x"], False),  # an option it was not written for
    (["show", SHA_A1, SHA_A2], False),
    (["fetch", "--prune", "--quiet", "origin"], False),
])
def test_only_reads_named_by_a_full_commit_id_are_kept(args: list[str], kept: bool) -> None:
    assert immutable([*GIT, *args]) is kept
    assert not immutable(["nginx", "-v"])


@pytest.fixture
def kept(tmp_path: Path):
    answers = GitAnswers(RenderCache(str(tmp_path / "_render" / "git.marshal"), "b1"))
    git_answers.use(answers)
    yield answers
    git_answers.use(None)


def commit_reads(commands: list[list[str]]) -> list[list[str]]:
    return [c for c in commands if c[:1] == ["git"] and immutable(c)]


def test_a_later_run_asks_git_nothing_about_a_commit_it_knows(kept: GitAnswers,
                                                               tmp_path: Path) -> None:
    host = server()
    cfg = config(host, MANY)
    run(host, cfg)  # clones: the commits are resolved from the refs
    run(host, cfg)  # a no-op: each commit's reads asked once, and kept
    kept.save()
    host.commands.clear()
    git_answers.use(GitAnswers(RenderCache(kept.cache.path, "b1").load()))  # the next run
    again, outcome = run(host, cfg)
    assert changed_steps(again) == [] and outcome.aborted is None
    assert commit_reads(host.commands) == []
    assert not [c for c in host.ran("git") if "fetch" in c or "rev-parse" in c]
    assert len([c for c in host.ran("git") if "ls-remote" in c]) == 1  # the ref: asked


def test_a_moved_ref_is_still_fetched_and_its_absence_is_not_kept(kept: GitAnswers) -> None:
    host = server()
    cfg = config(host)
    run(host, cfg)
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}
    fetched = moving_mirror(host, "git://remote/alpha.git", SHA_A1)
    _, outcome = run(host, cfg)
    assert fetched["done"] and outcome.apps["alpha"].commit == SHA_A2
    # "the mirror lacks A2" was true before the fetch only: not kept.
    key = git_answers.key([*GIT[:4], "/srv/fleet/alpha/repo.git", "cat-file", "-e",
                           f"{SHA_A2}^{{commit}}"])
    answer = kept.get(key.split("\0"))  # asked again once fetched: present, and kept
    assert answer is not None and answer.returncode == 0
    assert all(e[2] == "git" for e in kept.cache.entries.values())


def test_a_path_missing_from_a_commit_the_mirror_has_is_kept_too(kept: GitAnswers) -> None:
    """"path does not exist in SHA" is also what git says when SHA is not there: kept only
    once the mirror is known to hold the commit."""
    host = server()
    cfg = config(host)
    run(host, cfg)
    run(host, cfg)
    missing = [*GIT[:4], "/srv/fleet/alpha/repo.git", "cat-file", "-e", f"{SHA_A1}:uv.lock"]
    facts = FactsHost(host)
    assert not facts.run(missing, check=False).ok
    answer = kept.get(missing)
    assert answer is not None and answer.returncode != 0  # kept: A1 is in the mirror
    gone = [*GIT[:4], "/srv/fleet/alpha/repo.git", "cat-file", "-e", f"{'d' * 40}:uv.lock"]
    assert not FactsHost(host).run(gone, check=False).ok
    assert kept.get(gone) is None  # that commit is not there: not a fact about it
    host.commands.clear()
    assert not FactsHost(host).run(missing, check=False).ok
    assert host.commands == []  # the next run's answer came from the kept one


def test_a_source_checkout_keeps_nothing() -> None:
    git_answers.PROCESS.forget()
    try:
        assert git_answers.current() is None  # no build id beside the code
    finally:
        git_answers.PROCESS.forget()

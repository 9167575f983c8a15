"""git's answers about a commit's content, kept between runs (FactsHost asks here first).

A no-op apply asks each app's mirror about the commit it deploys: is it there (`cat-file -e
SHA^{commit}`), are the paths root acts on plain directories (`ls-tree SHA -- PATH`), what
are its requirements (`show SHA:requirements.txt`). At 100 apps those 300 git starts were
about 0.6 s of a 1.4 s no-op. A commit is named by the hash of its content, so what git says
about one never changes once the mirror has it: the answer is kept, keyed by the exact
command, and asked once per commit (and build) instead of once per run. Only reads naming a
full commit id (`immutable`) are kept, never a ref, which moves; and a failure ("path does not
exist in SHA", which git also says when SHA itself is missing) only when the mirror has the
commit (FactsHost asks `cat-file -e SHA^{commit}`, itself kept), since a commit not fetched yet
may have that path.

The file is the render cache's kind (render_cache.read/write: root-only, 0600 in a 0700
directory, marshal, this build's only, replaced atomically at the end of a run that added
entries, not after bad input; entries unused for 14 days go). A source checkout has none.
"""

from __future__ import annotations

import marshal
import os
import re
import threading
from collections.abc import Sequence

from fleet.host import layout, render_cache
from fleet.host.machine import RunResult

# The object a kept read names: a full commit id, alone, with a path in it, or peeled.
OBJECT_RE = re.compile(r"[0-9a-f]{40}(:[^\n]*|\^\{commit\}|\^\{tree\})?")
KEPT_SUBCOMMANDS = ("ls-tree", "show", "cat-file")


def immutable(argv: Sequence[str]) -> bool:
    """`git [-c X] [-C REPO] ls-tree|show|cat-file [OPTIONS] SHA[:PATH] [-- PATH]`: a read
    whose answer is fixed by the commit id."""
    if not argv or argv[0] != "git":
        return False
    index = 1
    while index < len(argv) and argv[index] in ("-c", "-C"):
        index += 2
    if index >= len(argv) or argv[index] not in KEPT_SUBCOMMANDS:
        return False
    rest = list(argv[index + 1:])
    head = rest[:rest.index("--")] if "--" in rest else rest
    options = [a for a in head if a.startswith("-")]
    objects = [a for a in head if not a.startswith("-")]
    return (all(o in ("--full-tree", "-e") for o in options) and len(objects) == 1
            and OBJECT_RE.fullmatch(objects[0]) is not None)


def commit_of(argv: Sequence[str]) -> str:
    """The commit id an `immutable` read names."""
    return next(a[:40] for a in argv if OBJECT_RE.fullmatch(a))


class GitAnswers:
    """One run's view of the kept answers (exit status, stdout, stderr of each read)."""

    def __init__(self, cache: render_cache.RenderCache) -> None:
        self.cache = cache
        self.lock = threading.Lock()  # warm_git asks from several threads

    def get(self, argv: Sequence[str]) -> RunResult | None:
        with self.lock:
            known = self.cache.get(key(argv), "git")
        if known is None:
            return None
        try:
            code, stdout, stderr = marshal.loads(known)
        except (ValueError, EOFError, TypeError):
            return None
        if type(code) is not int or type(stdout) is not str or type(stderr) is not str:
            return None
        return RunResult(code, stdout, stderr)

    def put(self, argv: Sequence[str], result: RunResult) -> None:
        answer = marshal.dumps((result.returncode, result.stdout, result.stderr))
        with self.lock:
            self.cache.put(key(argv), answer, "git")

    def save(self) -> None:
        with self.lock:
            self.cache.save()


def key(argv: Sequence[str]) -> str:
    return "\0".join(argv)


def start() -> GitAnswers | None:
    build = render_cache.build_id()
    if build is None or os.geteuid() != 0:
        return None
    return GitAnswers(render_cache.RenderCache(layout.GIT_ANSWERS, build).load())


PROCESS: render_cache.PerProcess[GitAnswers] = render_cache.PerProcess(start)
current = PROCESS.current
use = PROCESS.use


def save() -> None:
    """Write them back if this run added any (the end of a run: fleet.cli.dispatch)."""
    answers = PROCESS.slot[0] if PROCESS.slot else None
    if answers is not None:
        answers.save()

"""What the apps' git remotes advertise (`git ls-remote`), asked once per run and early.

The one wait on the network of a no-op apply: a remote on the internet takes 100 ms or more
to answer, as much as the rest of a no-op. So the questions start before the run has loaded
its code: `fleet apply`/`plan` (fleet.cli.fast) calls `prefetch` as soon as it has its
command line, with the remotes named in the operator's file (or the stored apps' files),
read as plain TOML; the run's own `RefChecks.for_run`, once the config is loaded and
validated, takes the answers of the remotes it needs from there and asks any other itself.
A prefetch is dropped when the run had to wait for another run's lock: that run may have
moved things on. Not root, or -v (which lists every command as it runs): no prefetch.

`apply --hold-changes` plans and then applies with the same answers: the apply acts on the
refs the plan saw, so a commit pushed between the two cannot slip in with "nothing would
change" (and the remotes are asked once, not twice).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fleet.config.limits import TOML_MAX_BYTES
from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.machine import Host, LocalHost
from fleet.server import repo as repo_res

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from fleet.config.settings import Config


class RefChecks:
    """`git ls-remote` of each of `urls`, asked in a thread started here when git is
    installed already; without git (a first run installs it in the packages step) they are
    asked when `answers` is first called. The questions only read: nothing a run does in
    between changes their answers. An app whose remote was not asked (or gave no answer) is
    fetched, as when the answer differs: a mismatch costs a fetch, never a wrong commit.
    With `early`, the remotes it asked are not asked again: its answers are used."""

    def __init__(self, host: Host, urls: Iterable[str], timeout: float, *,
                 early: RefChecks | None = None) -> None:
        self.host, self.timeout = host, timeout
        self.urls = list(dict.fromkeys(urls))
        self.early = early if early is not None and set(early.urls) & set(self.urls) else None
        self.asked = [u for u in self.urls if self.early is None or u not in self.early.urls]
        self.answer: dict[str, str | None] | None = None
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None
        if self.asked and host.state(repo_res.GIT_BIN) is not None:
            # A daemon thread: a run that stops early (a failed step, Ctrl-C) does not wait.
            self.thread = threading.Thread(target=self.ask, name="fleet-ls-remote", daemon=True)
            self.thread.start()

    @classmethod
    def for_run(cls, host: Host, config: Config, *, only: set[str] | None,
                check: bool) -> RefChecks:
        """The remotes of the apps a run converges (all, or those in `only`): every one for
        a plan (`check`), else those with a mirror (a first clone needs no question)."""
        urls = [a.repo for a in config.apps if (only is None or a.name in only)
                and (check or host.state(AppPaths(a.name).repo) is not None)]
        return cls(host, urls, config.server.git_timeout, early=take_prefetched())

    def ask(self) -> None:
        try:
            self.answer = repo_res.remote_refs(self.host, self.asked, self.timeout)
        except BaseException as exc:  # raised where the answers are read, as if asked there
            self.failure = exc

    def answers(self) -> dict[str, str | None]:
        """Each remote's `git ls-remote` output (None: no answer), waiting for them."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        elif self.answer is None and self.failure is None:
            self.ask()
        if self.failure is not None:
            raise self.failure
        assert self.answer is not None
        answers = dict(self.answer)
        if self.early is not None:
            known = self.early.answers()
            answers.update({u: known.get(u) for u in self.urls if u not in answers})
        return answers


PREFETCHED: list[RefChecks] = []  # at most one: the prefetch of this process's run


def prefetch(file: Path | None, *, check: bool) -> None:
    """Start asking the remotes of the apps named in `file` (else of the stored apps) before
    the run loads its code. Only a head start: what cannot be read here is left to the run,
    which validates everything and asks whatever this did not."""
    if os.geteuid() != 0:
        return  # the run refuses (fleet must run as root): nothing to ask for it
    try:
        tables = raw_tables(file)
    except (OSError, ValueError, RecursionError, AttributeError):  # TOMLDecodeError too
        return
    apps = tables.get("apps", {})
    timeout = tables.get("server", {}).get("git_timeout", repo_res.GIT_TIMEOUT)
    if not isinstance(apps, dict) or not isinstance(timeout, int | float):
        return
    urls = [raw["repo"] for name, raw in apps.items()
            if isinstance(raw, dict) and isinstance(raw.get("repo"), str)
            and (check or os.path.isdir(AppPaths(str(name)).repo))]
    if urls:
        PREFETCHED[:] = [RefChecks(LocalHost(), urls, float(timeout))]


def raw_tables(file: Path | None) -> dict:
    """The operator's file as TOML, or the stored state's files (server table and apps)."""
    if file is not None:
        return toml(file)
    stored = Path(layout.SERVER_FILE)
    tables = toml(stored) if stored.is_file() else {}
    apps = Path(layout.APPS_DIR)
    tables["apps"] = {p.stem: toml(p) for p in sorted(apps.glob("*.toml"))} \
        if apps.is_dir() else {}
    return tables


def toml(path: Path) -> dict:
    """A file within fleet's size limit as TOML (the run says what is wrong with another)."""
    with path.open(encoding="utf-8") as handle:
        text = handle.read(TOML_MAX_BYTES + 1)
    if len(text) > TOML_MAX_BYTES:
        raise ValueError(f"{path}: larger than fleet reads")
    return tomllib.loads(text)


def take_prefetched() -> RefChecks | None:
    return PREFETCHED.pop() if PREFETCHED else None


def drop_prefetched() -> None:
    """Another run held the lock: what it did may have moved the remotes' refs on."""
    PREFETCHED.clear()

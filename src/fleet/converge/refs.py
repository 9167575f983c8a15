"""What the apps' git remotes advertise (`git ls-remote`), asked once per run and early.

The one wait on the network of a no-op apply. A run starts the questions as soon as it has
its config, before it imports the converge steps and runs the config checks, so that the
answers come in while it does that work; a remote on the internet takes 100 ms or more to
answer, which is most of a no-op otherwise. Kept light (no converge step imported) for that.

`apply --hold-changes` plans and then applies with the same answers: the apply acts on the
refs the plan saw, so a commit pushed between the two cannot slip in with "nothing would
change" (and the remotes are asked once, not twice).
"""

from __future__ import annotations

import threading

from fleet.config.settings import Config
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server import repo as repo_res


class RefChecks:
    """The remotes of the apps a run converges (all, or those in `only`): every one for a
    plan (`check`), else those with a mirror (a first clone needs no question). Asked in a
    thread started here when git is installed already; without git (a first run installs it
    in the packages step) they are asked when `answers` is first called. The questions only
    read: nothing a run does in between changes their answers. An app whose remote was not
    asked (or gave no answer) is fetched, as when the answer differs: a mismatch costs a
    fetch, never a wrong commit."""

    def __init__(self, host: Host, config: Config, *, only: set[str] | None,
                 check: bool) -> None:
        self.host = host
        self.timeout = config.server.git_timeout
        self.urls = [a.repo for a in config.apps if (only is None or a.name in only)
                     and (check or host.state(AppPaths(a.name).repo) is not None)]
        self.answer: dict[str, str | None] | None = None
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None
        if self.urls and host.state(repo_res.GIT_BIN) is not None:
            # A daemon thread: a run that stops early (a failed step, Ctrl-C) does not wait.
            self.thread = threading.Thread(target=self.ask, name="fleet-ls-remote", daemon=True)
            self.thread.start()

    def ask(self) -> None:
        try:
            self.answer = repo_res.remote_refs(self.host, self.urls, self.timeout)
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
        return self.answer

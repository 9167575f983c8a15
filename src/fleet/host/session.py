"""Steps and their outcomes: every step reports ok, changed or failed (or, in a plan, what it
would do), and the same code path serves `apply` and `plan`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Protocol

from fleet.errors import CommandError, FleetError, StepFailed
from fleet.host import pending
from fleet.host.actions import Action, Unknown
from fleet.host.executor import perform
from fleet.host.machine import Host
from fleet.masking import mask_urls


class Status(str, Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    PENDING = "would change"  # plan only


@dataclass
class Step:
    name: str
    app: str | None = None
    actions: list[Action] = field(default_factory=list)
    status: Status = Status.OK
    error: str | None = None
    log: str | None = None  # tail of the relevant output when failed
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "app": self.app,
                                   "status": self.status.value,
                                   "actions": [a.describe() for a in self.actions]}
        if self.error:
            data["error"] = self.error
        if self.log:
            data["log"] = self.log
        if self.notes:
            data["notes"] = self.notes
        return data


class Reporter(Protocol):
    def step_started(self, step: Step) -> None: ...

    def step_finished(self, step: Step) -> None: ...


class Session:
    """One run of fleet against one host: executes (or, when checking, only records) actions."""

    # Every session this process started: the audit log's "changed" reads their counts.
    started: ClassVar[list[Session]] = []

    def __init__(self, host: Host, reporter: Reporter, *, check: bool = False) -> None:
        Session.started.append(self)
        self.host = host
        self.reporter = reporter
        self.check = check
        self.steps: list[Step] = []
        self.side_actions: list[Action] = []

    @contextmanager
    def step(self, name: str, app: str | None = None) -> Iterator[Step]:
        record = Step(name, app)
        self.steps.append(record)
        self.reporter.step_started(record)
        try:
            yield record
        # Errors and logs are masked once, here: every report, table and JSON field shows
        # these records, and a git error may quote a URL with credentials.
        except CommandError as exc:
            record.status = Status.FAILED
            record.error = mask_urls(str(exc))
            record.log = mask_urls(exc.output_tail())
            self.reporter.step_finished(record)
            raise StepFailed(record) from exc
        except FleetError as exc:
            record.status = Status.FAILED
            record.error = mask_urls(str(exc))
            self.reporter.step_finished(record)
            raise StepFailed(record) from exc
        except OSError as exc:
            record.status = Status.FAILED
            record.error = mask_urls(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
            self.reporter.step_finished(record)
            raise StepFailed(record) from exc
        if record.actions:
            record.status = Status.PENDING if self.check else Status.CHANGED
        self.reporter.step_finished(record)

    def apply(self, step: Step, actions: Sequence[Action]) -> bool:
        """Record the actions on the step and carry them out unless this is a plan. What the
        systemctl actions after a file change will do is owed (on /run) before the files
        change and paid as each runs: a run killed in between leaves it to the next."""
        if not self.check:
            pending.owe(self.host, pending.owed_by(actions))
        for action in actions:
            step.actions.append(action)
            if not self.check and not isinstance(action, Unknown):
                perform(self.host, action)
                pending.pay(self.host, pending.done_by([action]))
        return bool(actions)

    def act(self, actions: Sequence[Action]) -> None:
        """Carry out actions that are no step's result: the cleanup after a failure (its step
        already failed), a temporary file a probe needs, state kept for the next run. A plan
        does none of them; `side_actions` keeps what was done, in order."""
        if self.check:
            return
        for action in actions:
            self.side_actions.append(action)
            perform(self.host, action)

    def failed_apps(self) -> set[str]:
        return {s.app for s in self.steps if s.status is Status.FAILED and s.app}

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "changed": 0, "failed": 0}
        for s in self.steps:
            key = "changed" if s.status in (Status.CHANGED, Status.PENDING) else s.status.value
            counts[key] += 1
        return counts

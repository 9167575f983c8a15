"""Render a run for people (rich, live progress on a TTY) or for programs (--json)."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.status import Status as Spinner
from rich.table import Table

from fleet.actions import WriteFile
from fleet.converge import Outcome
from fleet.session import Session, Status, Step

STYLE = {Status.OK: "green", Status.CHANGED: "yellow", Status.FAILED: "bold red",
         Status.PENDING: "cyan"}


def step_label(step: Step) -> str:
    return f"{step.name} {step.app}" if step.app else step.name


class TextReporter:
    """One line per finished step; on a terminal, a live line with elapsed time while it runs."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False,
                 quiet: bool = False, show_diffs: bool = False) -> None:
        self.console = console or Console(stderr=False, highlight=False)
        self.verbose = verbose
        self.quiet = quiet
        self.show_diffs = show_diffs
        self.spinner: Spinner | None = None
        self.started = 0.0

    def step_started(self, step: Step) -> None:
        self.started = time.monotonic()
        if self.console.is_terminal and not self.quiet:
            self.spinner = self.console.status(f"{step_label(step)} ...")
            self.spinner.start()

    def step_finished(self, step: Step) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None
        if self.quiet and step.status is not Status.FAILED:
            return
        if step.status is Status.OK and not self.verbose and not step.notes:
            if not self.console.is_terminal:
                self.console.print(f"ok       {step_label(step)}", highlight=False)
            else:
                self.console.print(f"[green]ok[/]       {step_label(step)}")
            return
        elapsed = time.monotonic() - self.started
        notes = f" ({', '.join(step.notes)})" if step.notes else ""
        timing = f" [{elapsed:.1f} s]" if elapsed >= 1 else ""
        self.console.print(f"[{STYLE[step.status]}]{step.status.value:<8}[/] "
                           f"{step_label(step)}{notes}{timing}", highlight=False)
        if step.status in (Status.CHANGED, Status.PENDING) and (self.verbose or self.show_diffs):
            for action in step.actions:
                self.console.print(f"           - {action.describe()}", highlight=False,
                                   markup=False)
                if self.show_diffs and isinstance(action, WriteFile):
                    self.console.print(action.diff(), highlight=False, markup=False, end="")
        if step.error:
            self.console.print(f"           {step.error}", style="red", highlight=False,
                               markup=False)
        if step.log:
            for line in step.log.splitlines():
                self.console.print(f"           | {line}", highlight=False, markup=False)


class SilentReporter:
    def step_started(self, step: Step) -> None:
        pass

    def step_finished(self, step: Step) -> None:
        pass


def app_changed(session: Session, name: str) -> bool:
    return any(s.app == name and s.changed for s in session.steps)


def summary_json(session: Session, outcome: Outcome, extra: dict[str, object] | None = None
                 ) -> dict[str, object]:
    data: dict[str, object] = dict(session.counts())
    data["apps"] = {name: r.to_json(app_changed(session, name))
                    for name, r in outcome.apps.items()}
    data["steps"] = [s.to_json() for s in session.steps]
    if outcome.aborted:
        data["aborted"] = outcome.aborted
    data.update(extra or {})
    return data


def print_json(data: object, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    stream.flush()


def print_summary(console: Console, session: Session, outcome: Outcome, *,
                  plan: bool = False) -> None:
    counts = session.counts()
    if plan:
        if counts["changed"] == 0 and counts["failed"] == 0:
            console.print("Nothing would change: the server matches the desired state.")
        else:
            console.print(f"{counts['changed']} steps would change, {counts['ok']} are ok"
                          + (f", {counts['failed']} failed" if counts["failed"] else ""))
        return
    console.print(f"{counts['ok']} ok, {counts['changed']} changed, {counts['failed']} failed",
                  highlight=False)
    if counts["changed"] == 0 and counts["failed"] == 0:
        console.print("Nothing changed: the server already matched the desired state.")
    if outcome.aborted:
        console.print(f"[bold red]stopped:[/] {outcome.aborted}", highlight=False)
    if outcome.apps:
        table = Table("app", "commit", "health", "changed", "error")
        for name, result in outcome.apps.items():
            colour = {"passed": "green", "failed": "red"}.get(result.health, "yellow")
            table.add_row(name, (result.commit or "-")[:12], f"[{colour}]{result.health}[/]",
                          "yes" if app_changed(session, name) else "no", result.error or "")
        console.print(table)

"""Render a run for people (rich, live progress on a TTY) or for programs (--json).

Everything shown to a person passes through the masking here: env values in fleet's stored
TOML, credentials in URLs. The plan is meant to be pasted into tickets and chat.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tomli_w import dumps

from fleet.cli.output import out, real_console, style
from fleet.config.parse import parse_toml
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.actions import MASK, Action, Unknown, WriteFile
from fleet.host.session import Session, Status, Step
from fleet.masking import mask_urls

if TYPE_CHECKING:  # rich itself is imported where text is shown: --json never loads it
    from rich.console import Console, RenderableType
    from rich.live import Live

    from fleet.converge.apply import Outcome

UNDECIDED = "unknown"  # label of a plan step whose actions depend on earlier steps
UNDECIDED_NOTE = "decided when the steps before it have run"

# ----------------------------------------------------------------------------- masking

# Shown instead of stored TOML that does not parse: its text could hold anything.
UNREADABLE = "# not shown: not valid TOML\n"


def mask_data(value: Any) -> Any:
    """A copy of parsed TOML with every value of every `env` table masked (an `env` that is
    not a table, whole) and credentials in URLs masked in every string and key."""
    if isinstance(value, dict):
        return {mask_urls(key): mask_env(item) if key == "env" else mask_data(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [mask_data(item) for item in value]
    return mask_urls(value) if isinstance(value, str) else value


def mask_env(env: Any) -> Any:
    return {mask_urls(key): MASK for key in env} if isinstance(env, dict) else MASK


def toml_data(text: str) -> dict[str, Any] | None:
    """Parsed TOML (within fleet's limits), or None when the text is not TOML."""
    try:
        return parse_toml("", text)
    except ConfigError:
        return None


def masked_toml(data: dict[str, Any] | None) -> str:
    """Parsed TOML dumped again with its env values and URL credentials masked: masking the
    data, not the text, leaves no way of writing a value that slips past."""
    return UNREADABLE if data is None else dumps(mask_data(data))


def mask_toml_env(text: str) -> str:
    """TOML text as a person may see it: parsed, masked, dumped (fleet's own layout)."""
    return masked_toml(toml_data(text))


def is_fleet_config(path: str) -> bool:
    """fleet's stored TOML: app files hold env values; all may hold credentials in URLs."""
    return path.startswith(f"{layout.ETC}/") and path.endswith(".toml")


def masked_diff(action: WriteFile) -> str:
    """The diff a person may see: stored TOML with env values masked, secret files hidden."""
    if is_fleet_config(action.path):
        old_data = toml_data((action.old or b"").decode(errors="replace"))
        new_data = toml_data(action.content.decode(errors="replace"))
        before = action.path if action.old is not None else "/dev/null"
        import difflib  # only when the stored config differs: a no-op shows no diff

        diff = "".join(difflib.unified_diff(masked_toml(old_data).splitlines(keepends=True),
                                            masked_toml(new_data).splitlines(keepends=True),
                                            before, action.path))
        if not diff:
            what = ("the layout changes" if old_data is not None and old_data == new_data
                    else "masked values change")
            return f"--- {action.path}\n+++ {action.path}\n(only {what})\n"
        return diff if diff.endswith("\n") else diff + "\n"
    if action.secret:
        return action.diff()
    diff = action.diff()
    return diff if not diff or diff.endswith("\n") else diff + "\n\\ No newline at end of file\n"


def describe(action: Action) -> str:
    """The plan line of an action, with credentials in URLs masked."""
    return mask_urls(action.describe())


def undecided(step: Step) -> bool:
    """A plan step whose every action waits on the outcome of earlier steps."""
    return bool(step.actions) and all(isinstance(a, Unknown) for a in step.actions)


def step_label(step: Step) -> str:
    return f"{step.name} {step.app}" if step.app else step.name


# ----------------------------------------------------------------------------- reporters


class Running:
    """The live line of a running step: spinner, label and elapsed seconds, redrawn by rich."""

    def __init__(self, label: str) -> None:
        from rich.spinner import Spinner

        self.label = label
        self.started = time.monotonic()
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> RenderableType:
        from rich.text import Text

        elapsed = time.monotonic() - self.started
        self.spinner.update(text=Text.assemble(f"{self.label} ",
                                               (f"{elapsed:.1f} s", style("aside"))))
        return self.spinner


class TextReporter:
    """One line per finished step; on a terminal, a live line with elapsed time while it runs."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False,
                 quiet: bool = False, show_diffs: bool = False) -> None:
        self.console = real_console(console or out)  # a Live display is handed it
        self.verbose = verbose
        self.quiet = quiet
        self.show_diffs = show_diffs
        self.live: Live | None = None
        self.started = 0.0

    def step_started(self, step: Step) -> None:
        self.started = time.monotonic()
        if self.console.is_terminal and not self.quiet:
            from rich.live import Live

            self.live = Live(Running(step_label(step)), console=self.console,
                             refresh_per_second=10, transient=True)
            self.live.start()

    def step_finished(self, step: Step) -> None:
        from rich.text import Text

        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.quiet and step.status is not Status.FAILED:
            return
        if step.status is Status.OK and not self.verbose and not step.notes:
            self.console.print(f"[{style('ok')}]ok[/]       {step_label(step)}", highlight=False)
            return
        elapsed = time.monotonic() - self.started
        notes = f" ({', '.join(step.notes)})" if step.notes else ""
        timing = f" [{elapsed:.1f} s]" if elapsed >= 1 else ""
        label, colour = step.status.value, style(step.status.value)
        if step.status is Status.PENDING and undecided(step):
            label, colour = UNDECIDED, style("undecided")
            notes = f" ({UNDECIDED_NOTE})" + notes
        line = Text.assemble((f"{label:<8}", colour), f" {step_label(step)}{notes}{timing}")
        self.console.print(line, highlight=False, soft_wrap=True)
        if step.status in (Status.CHANGED, Status.PENDING) and (self.verbose or self.show_diffs):
            for action in step.actions:
                # soft_wrap: diffs and commands stay one line each, whatever the width.
                self.console.print(f"           - {describe(action)}", highlight=False,
                                   markup=False, soft_wrap=True)
                if self.show_diffs and isinstance(action, WriteFile):
                    self.console.print(masked_diff(action), highlight=False, markup=False,
                                       end="", soft_wrap=True)
        if step.error:
            self.console.print(f"           {mask_urls(step.error)}", style=style("error"),
                               highlight=False, markup=False, soft_wrap=True)
        if step.log:
            for line_text in step.log.splitlines():
                self.console.print(f"           | {line_text}", highlight=False, markup=False,
                                   soft_wrap=True)


class SilentReporter:
    def step_started(self, step: Step) -> None:
        pass

    def step_finished(self, step: Step) -> None:
        pass


# ----------------------------------------------------------------------------- summaries


def app_changed(session: Session, name: str) -> bool:
    return any(s.app == name and s.changed for s in session.steps)


def step_json(step: Step) -> dict[str, object]:
    data = step.to_json()
    data["actions"] = [describe(a) for a in step.actions]
    if undecided(step):
        data["undecided"] = True
    return data


def summary_json(session: Session, outcome: Outcome, extra: dict[str, object] | None = None
                 ) -> dict[str, object]:
    data: dict[str, object] = dict(session.counts())
    data["apps"] = {name: r.to_json(app_changed(session, name))
                    for name, r in outcome.apps.items()}
    data["steps"] = [step_json(s) for s in session.steps]
    if outcome.aborted:
        data["aborted"] = mask_urls(outcome.aborted)
    data.update(extra or {})
    return data


def print_summary(console: Console, session: Session, outcome: Outcome, *,
                  plan: bool = False) -> None:
    from rich.table import Table
    from rich.text import Text

    counts = session.counts()
    if plan:
        if counts["changed"] == 0 and counts["failed"] == 0:
            console.print("Nothing would change: the server matches the desired state.")
        else:
            later = sum(1 for s in session.steps if undecided(s))
            console.print(f"{counts['changed']} steps would change, {counts['ok']} are ok"
                          + (f", {later} decided when the steps before them have run"
                             if later else "")
                          + (f", {counts['failed']} failed" if counts["failed"] else ""))
        return
    console.print(f"{counts['ok']} ok, {counts['changed']} changed, {counts['failed']} failed",
                  highlight=False)
    if counts["changed"] == 0 and counts["failed"] == 0:
        console.print("Nothing changed: the server already matched the desired state.")
    if outcome.aborted:
        console.print(Text.assemble(("stopped: ", style("failed")), mask_urls(outcome.aborted)))
    if outcome.apps:
        table = Table("app", "commit", "health", "changed", "error")
        for name, result in outcome.apps.items():
            table.add_row(name, (result.commit or "-")[:12],
                          Text(result.health, style=style(result.health)),
                          "yes" if app_changed(session, name) else "no",
                          Text(mask_urls(result.error or "")))
        console.print(table)

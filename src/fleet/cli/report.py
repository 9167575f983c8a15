"""Render a run for people (rich, live progress on a TTY) or for programs (--json).

Everything shown to a person passes through the masking here: env values in fleet's stored
TOML, credentials in URLs. The plan is meant to be pasted into tickets and chat.
"""

from __future__ import annotations

import difflib
import re
import time

from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from fleet.cli.output import out, style
from fleet.converge.apply import Outcome
from fleet.host import layout
from fleet.host.actions import MASK, Action, Unknown, WriteFile
from fleet.host.session import Session, Status, Step
from fleet.masking import mask_urls

UNDECIDED = "unknown"  # label of a plan step whose actions depend on earlier steps
UNDECIDED_NOTE = "decided when the steps before it have run"

# ----------------------------------------------------------------------------- masking

TABLE_HEADER = re.compile(r"^\s*\[\s*(?P<name>[^\[\]]+?)\s*\]\s*(#.*)?$")
KEY_VALUE = re.compile(r"^(?P<indent>\s*)(?P<key>(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                       r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)"
                       r"(?P<eq>\s*=\s*)(?P<value>.*)$")
INLINE_ENV = re.compile(r"^(?P<head>\s*(?:[A-Za-z0-9_-]+\s*\.\s*)*env\s*=\s*)\{(?P<body>.*)\}"
                        r"(?P<tail>\s*(#.*)?)$")
INLINE_PAIR = re.compile(r"(?P<key>[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')\s*=\s*"
                         r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^,}]+?)\s*(?=,|$)")


def dotted(key: str) -> list[str]:
    """The parts of a TOML dotted key (quotes removed)."""
    parts = re.findall(r"\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+)", key)
    return [next(p for p in part if p) if any(part) else "" for part in parts]


def mask_inline_env(body: str) -> str | None:
    """Mask the values of an inline table `{ K = "v", ... }`; None when it does not parse."""
    pairs = [p.strip() for p in split_top_level(body)]
    masked = []
    for pair in pairs:
        if not pair:
            continue
        match = INLINE_PAIR.fullmatch(pair)
        if match is None:
            return None
        masked.append(f'{match["key"]} = "{MASK}"')
    return "{ " + ", ".join(masked) + " }" if masked else "{ }"


def split_top_level(body: str) -> list[str]:
    """Split on commas outside quoted strings."""
    parts, current, quote, escaped = [], "", "", False
    for char in body:
        if quote:
            current += char
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote, current = char, current + char
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def mask_toml_env(text: str) -> str:
    """Replace the value of every key of an `env` table with ******** (and URL credentials).

    Handles `[env]` / `[apps.NAME.env]` tables, `env = { ... }` inline tables and dotted
    `env.KEY = ...` keys. A line it cannot read inside an env table is masked whole: showing
    too little beats leaking a secret.
    """
    out: list[str] = []
    table: list[str] = []
    in_multiline = False
    for line in text.splitlines(keepends=True):
        body, newline = line.rstrip("\r\n"), line[len(line.rstrip("\r\n")):]
        if in_multiline:
            out.append(MASK + newline)
            in_multiline = body.count('"""') % 2 == 0 and body.count("'''") % 2 == 0
            continue
        header = TABLE_HEADER.match(body)
        if header and not body.lstrip().startswith("[["):
            table = dotted(header["name"])
            out.append(mask_urls(line))
            continue
        inline = INLINE_ENV.match(body)
        if inline and not (table and table[-1] == "env"):
            masked = mask_inline_env(inline["body"])
            out.append(f"{inline['head']}{masked if masked is not None else MASK}"
                       f"{inline['tail']}{newline}")
            continue
        pair = KEY_VALUE.match(body)
        if pair:
            path = table + dotted(pair["key"])
            if path[-1] == "env":  # an env value that is not a table fleet can read
                out.append(f"{pair['indent']}{pair['key']}{pair['eq']}{MASK}{newline}")
                continue
            if len(path) >= 2 and path[-2] == "env":
                value = pair["value"].lstrip()
                if value.startswith(('"""', "'''")) and value.count(value[:3]) == 1:
                    in_multiline = True
                out.append(f"{pair['indent']}{pair['key']}{pair['eq']}\"{MASK}\"{newline}")
                continue
        out.append(mask_urls(line))
    return "".join(out)


def is_fleet_config(path: str) -> bool:
    """fleet's stored TOML: app files hold env values; all may hold credentials in URLs."""
    return path.startswith(f"{layout.ETC}/") and path.endswith(".toml")


def masked_diff(action: WriteFile) -> str:
    """The diff a person may see: stored TOML with env values masked, secret files hidden."""
    if is_fleet_config(action.path):
        old = mask_toml_env((action.old or b"").decode(errors="replace"))
        new = mask_toml_env(action.content.decode(errors="replace"))
        before = action.path if action.old is not None else "/dev/null"
        diff = "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                            new.splitlines(keepends=True), before,
                                            action.path))
        if not diff:
            return f"--- {action.path}\n+++ {action.path}\n(only masked values change)\n"
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
        self.label = label
        self.started = time.monotonic()
        self.spinner = Spinner("dots", style="cyan")

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        self.spinner.update(text=Text.assemble(f"{self.label} ",
                                               (f"{elapsed:.1f} s", style("aside"))))
        return self.spinner


class TextReporter:
    """One line per finished step; on a terminal, a live line with elapsed time while it runs."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False,
                 quiet: bool = False, show_diffs: bool = False) -> None:
        self.console = console or out
        self.verbose = verbose
        self.quiet = quiet
        self.show_diffs = show_diffs
        self.live: Live | None = None
        self.started = 0.0

    def step_started(self, step: Step) -> None:
        self.started = time.monotonic()
        if self.console.is_terminal and not self.quiet:
            self.live = Live(Running(step_label(step)), console=self.console,
                             refresh_per_second=10, transient=True)
            self.live.start()

    def step_finished(self, step: Step) -> None:
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

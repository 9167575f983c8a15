"""What a person sees of a run: masked diffs, undecided steps, live progress on a terminal."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from fleet.cli.report import (
    UNREADABLE,
    TextReporter,
    mask_toml_env,
    masked_diff,
    print_summary,
    toml_data,
)
from fleet.host.actions import MASK, Run, Unknown, WriteFile
from fleet.host.session import Session, Status, Step
from fleet.masking import mask_urls
from tests.unit.fakehost import FakeHost

STORED = """repo = "git://remote/beta.git"
domains = ["beta.test"]
processes = 2

[env]
SECRET = "hunter2"
"QUOTED KEY" = 'literal'
NUMBER = 42

[health]
path = "/health"
"""


@pytest.mark.parametrize(("text", "hidden", "shown"), [
    (STORED, ["hunter2", "literal", "42"], ["processes = 2", 'path = "/health"',
                                            f'SECRET = "{MASK}"', f'NUMBER = "{MASK}"']),
    ('[apps.beta.env]\nTOKEN = "abc"\n[apps.beta]\nprocesses = 3\n', ["abc"],
     ["processes = 3", f'TOKEN = "{MASK}"']),
    ('env = { A = "x,y}", B = 7 }\nprocesses = 2\n', ["x,y", "7 "],
     [f'A = "{MASK}"', f'B = "{MASK}"', "processes = 2"]),
    ('env.TOKEN = "abc"\nrepo = "https://user:tok3n@git.example.com/r.git"\n',
     ["abc", "tok3n"], [f'TOKEN = "{MASK}"', f"https://{MASK}@git.example.com/r.git"]),
    ('[env]\nKEY = """\nmulti\n"""\n[health]\npath = "/"\n', ["multi"], ['path = "/"']),
    ('[apps.a]\nenv = { broken\n', ["broken"], []),
])
def test_env_values_and_url_credentials_are_masked(text: str, hidden: list[str],
                                                   shown: list[str]) -> None:
    masked = mask_toml_env(text)
    for secret in hidden:
        assert secret not in masked
    for visible in shown:
        assert visible in masked
    # Parsed, masked, dumped: the same keys come back; text that is not TOML is hidden whole.
    original = toml_data(text)
    if original is None:
        assert masked == UNREADABLE
    else:
        assert toml_data(masked).keys() == original.keys()


def test_stored_app_toml_diff_shows_changes_but_not_env_values() -> None:
    old = STORED.encode()
    new = STORED.replace("processes = 2", "processes = 3").replace("hunter2", "hunter3")
    action = WriteFile(path="/etc/fleet/apps/beta.toml", content=new.encode(), mode=0o600, old=old,
                       secret=True)
    diff = masked_diff(action)
    assert "-processes = 2\n+processes = 3\n" in diff
    assert "hunter" not in diff
    assert not re.search(r"^[-+]SECRET", diff, re.M)  # its masked line did not change
    only_secret = WriteFile(path="/etc/fleet/apps/beta.toml", content=STORED.replace("hunter2",
                                                                                     "x").encode(),
                            mode=0o600, old=old, secret=True)
    assert "only masked values change" in masked_diff(only_secret)


def test_stored_toml_whose_layout_alone_changes_says_so() -> None:
    """A file written by an older fleet (arrays on one line) differs in bytes, not in data."""
    old = b'repo = "r"\ndomains = ["a.test"]\n\n[env]\nA = "s3cret"\n'
    new = b'repo = "r"\ndomains = [\n    "a.test",\n]\n\n[env]\nA = "s3cret"\n'
    action = WriteFile(path="/etc/fleet/apps/a.toml", content=new, mode=0o600, old=old,
                       secret=True)
    assert masked_diff(action) == ("--- /etc/fleet/apps/a.toml\n+++ /etc/fleet/apps/a.toml\n"
                                   "(only the layout changes)\n")


def test_secret_files_stay_hidden_and_plain_files_show_their_diff() -> None:
    env = WriteFile(path="/etc/fleet/env/beta.env", content=b"SECRET=hunter3\n", mode=0o600,
                    old=b"SECRET=hunter2\n", secret=True)
    assert "hunter" not in masked_diff(env)
    ini = WriteFile(path="/etc/uwsgi/vassals/beta@r1.ini", content=b"processes = 3\n", mode=0o600,
                    old=b"processes = 2\n")
    assert "-processes = 2\n+processes = 3\n" in masked_diff(ini)


def render(steps: list[Step], *, terminal: bool = False, show_diffs: bool = True) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, highlight=False,
                      color_system=None)
    reporter = TextReporter(console, show_diffs=show_diffs)
    for step in steps:
        reporter.step_started(step)
        reporter.step_finished(step)
    return out.getvalue()


def test_undecided_steps_say_so_never_ok_or_skipped() -> None:
    step = Step("repo", "alpha", [Unknown(what="resolve HEAD of git://remote/alpha.git")],
                Status.PENDING)
    text = render([step])
    assert "unknown  repo alpha (decided when the steps before it have run)" in text
    assert not re.search(r"^(ok|skipped)", text, re.M)


def test_plan_lines_mask_credentials_and_never_wrap() -> None:
    clone = Run(argv=("git", "clone", "https://bob:s3cret@git.example.com/a.git"), why="clone")
    long = "; " + "x" * 200 + "\n"
    ini = WriteFile(path="/etc/uwsgi/vassals/a@r1.ini", content=long.encode() + b"processes = 3\n",
                    mode=0o600,
                    old=long.encode() + b"processes = 2\n", why="reloaded " + "y" * 150)
    text = render([Step("repo", "a", [clone], Status.PENDING),
                   Step("vassal", "a", [ini], Status.PENDING)])
    assert "s3cret" not in text and f"https://{MASK}@git.example.com" in text
    assert f" {long}" in text and "y" * 150 + ")\n" in text  # width 120, yet not wrapped
    assert mask_urls("git://host/x.git") == "git://host/x.git"


def test_converged_plan_says_nothing_would_change() -> None:
    session = Session(FakeHost(), TextReporter(Console(file=io.StringIO())), check=True)
    session.steps.append(Step("packages"))
    out = io.StringIO()
    print_summary(Console(file=out, width=100), session, _outcome(), plan=True)
    assert out.getvalue().startswith("Nothing would change")


def _outcome():
    from fleet.converge.apply import Outcome

    return Outcome()


def test_terminal_shows_a_live_line_with_elapsed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time as real_time

    clock = [1000.0]
    monkeypatch.setattr("fleet.cli.report.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    reporter = TextReporter(console)
    step = Step("virtualenv", "alpha")
    reporter.step_started(step)
    clock[0] += 2.5
    real_time.sleep(0.3)  # let the live display refresh at least once
    step.actions.append(Run(argv=("pip", "install"), why="install requirements"))
    step.status = Status.CHANGED
    reporter.step_finished(step)
    text = out.getvalue()
    assert "virtualenv alpha 2.5 s" in text  # the live line, with its elapsed time
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]", text)  # the spinner
    assert "changed  virtualenv alpha [2.5 s]" in text


def test_not_a_terminal_gets_plain_lines_only() -> None:
    text = render([Step("packages"), Step("emperor", None, [Run(argv=("true",))], Status.CHANGED)],
                  show_diffs=False)
    assert text == "ok       packages\nchanged  emperor\n"


def test_live_progress_on_a_terminal_works_through_the_lazy_console() -> None:
    """`out` is made at its first use; rich's Live display is handed the console itself (it
    uses it as a context manager)."""
    from fleet.cli.output import LazyConsole

    console = LazyConsole(force_terminal=True, file=io.StringIO(), width=100)
    reporter = TextReporter(console)  # type: ignore[arg-type]
    step = Step("packages")
    reporter.step_started(step)
    assert reporter.live is not None
    reporter.step_finished(step)
    assert "packages" in console.file.getvalue()

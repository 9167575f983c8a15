"""Instant start: `fleet --version` loads no command line parser, a command loads only its own
module, and the table of command modules stays complete."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet.cli.common import app as cli_app
from fleet.cli.dispatch import COMMAND_MODULES, modules_for, register
from fleet.version import version_line
from tests.unit.support import fleet_main

ALL_MODULES = list(dict.fromkeys(COMMAND_MODULES.values()))

# Run in a fresh interpreter: which modules a command line imported, and what it printed.
PROBE = """
import contextlib, io, json, sys
from fleet.cli.app import main
sys.argv = ["fleet", *sys.argv[1:]]
stdout = io.StringIO()
with contextlib.redirect_stdout(stdout):
    try:
        main()
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": stdout.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(proc.stdout)


def command_modules() -> dict[str, str]:
    """What the typer app really registers: command name -> its module in fleet.cli."""
    register(ALL_MODULES)
    found = {}
    for command in cli_app.registered_commands:
        name = command.name or command.callback.__name__.replace("_", "-")
        found[name] = command.callback.__module__.removeprefix("fleet.cli.")
    return found


def test_the_table_names_every_command_and_its_module() -> None:
    assert command_modules() == COMMAND_MODULES


@pytest.mark.parametrize(("args", "modules"), [
    (["status"], ["inspect"]),
    (["-v", "--debug", "apply", "fleet.toml"], ["converge"]),
    (["status", "--json"], ["inspect"]),
    (["remove-app", "blog", "--purge"], ["remove"]),
    (["run", "blog", "--", "flask", "status"], ["run"]),
    ([], ALL_MODULES),
    (["--help"], ALL_MODULES),
    (["stauts"], ALL_MODULES),  # unknown: click's "no such command" sees every command
])
def test_modules_for_a_command_line(args: list[str], modules: list[str]) -> None:
    assert modules_for(args) == modules


def test_version_loads_no_parser_and_no_command() -> None:
    result = probe("--version")
    assert result["code"] == 0
    assert result["out"] == version_line() + "\n"
    loaded = set(result["modules"])
    assert not {"typer", "click", "rich", "jinja2", "fleet.cli.dispatch"} & loaded


def test_version_after_a_global_option_still_works(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fleet_main(monkeypatch, capsys, "-q", "--version")
    assert (code, out) == (0, version_line() + "\n")


def test_status_help_loads_only_the_looking_commands() -> None:
    result = probe("status", "--help")
    assert result["code"] == 0
    assert "fleet status --json" in result["out"]
    loaded = set(result["modules"])
    assert "fleet.cli.inspect" in loaded
    unwanted = {"fleet.cli.converge", "fleet.cli.push", "fleet.cli.converging",
                "fleet.converge.apply", "fleet.cluster.push", "virtualenv", "jinja2"}
    assert not unwanted & loaded


def test_help_lists_every_command() -> None:
    result = probe("--help")
    assert result["code"] == 0
    for name in COMMAND_MODULES:
        assert name in result["out"], name


# ----------------------------------------------------------------------- apply without typer

FAST_LINES = [
    ["apply", "fleet.toml"],
    ["apply"],
    ["apply", "--json", "fleet.toml"],
    ["-v", "apply", "fleet.toml", "--prune", "--json"],
    ["-q", "--debug", "plan", "fleet.toml", "--json"],
    ["plan"],
    ["--verbose", "--quiet", "apply", "--prune", "--check"],
    ["-v", "-v", "plan", "--prune", "dir/x.toml"],
    ["apply", "fleet.toml", "--json", "--hold-changes"],  # what fleet push runs
]
TYPER_LINES = [
    [], ["apply", "--help"], ["-h", "apply"], ["apply", "a.toml", "b.toml"],
    ["apply", "--no-prune"], ["plan", "--check"], ["apply", "--", "-f.toml"],
    ["apply", "--json", "--json"], ["apply", "-v"], ["status"], ["apply", "--jsn"],
    ["apply", ""], ["--version", "apply"], ["apply", "-"], ["apply", "--hold-changes", "--check"],
    ["plan", "--hold-changes"], ["apply", "--hold-changes", "--hold-changes"],
]


@pytest.mark.parametrize("args", FAST_LINES)
def test_plain_apply_and_plan_run_without_typer_as_typer_runs_them(
        args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each accepted form calls do_apply with what typer would call it with."""
    from fleet.cli import converge as converge_cmd
    from fleet.cli import converging, dispatch
    from fleet.cli.basics import OPTIONS

    calls = []

    def do_apply(file, *, prune: bool, check: bool, json_out: bool, hold: bool = False) -> int:
        calls.append((file, prune, check, json_out, hold, OPTIONS.verbose, OPTIONS.quiet,
                      OPTIONS.debug))
        return 3

    monkeypatch.setattr(converging, "do_apply", do_apply)
    monkeypatch.setattr(converge_cmd, "do_apply", do_apply)
    for path in ("fast", "typer"):
        OPTIONS.verbose = OPTIONS.quiet = OPTIONS.debug = False
        if path == "typer":
            monkeypatch.setattr(dispatch.fast, "command", lambda args: None)
        assert dispatch.run_command(args) == 3
    OPTIONS.verbose = OPTIONS.quiet = OPTIONS.debug = False
    assert len(calls) == 2 and calls[0] == calls[1]


@pytest.mark.parametrize("args", TYPER_LINES)
def test_every_other_form_goes_to_typer(args: list[str]) -> None:
    from fleet.cli import fast

    assert fast.parse(args) is None


def test_plan_loads_no_typer() -> None:
    result = probe("plan", "/nonexistent/fleet.toml", "--json")
    assert result["code"] != 0  # no such file (or not root): refused before anything
    assert not [m for m in result["modules"] if m.split(".")[0] in ("typer", "click")]


def test_the_apply_path_imports_no_rich_until_it_shows_text() -> None:
    """apply --json prints JSON only: neither typer nor rich is imported for it."""
    code = ("import sys, fleet.cli.dispatch, fleet.cli.converging, fleet.cli.fast; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'typer'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_apply_path_leaves_out_what_only_other_paths_need() -> None:
    """A no-op apply pays for every module it imports (issue 19): what only HTTPS, `fleet
    status`, a diff, an error's hint or a rotated log needs is imported where it is used."""
    code = ("import sys, fleet.cli.dispatch, fleet.cli.converging, fleet.cli.fast, "
            "fleet.server.audit, fleet.converge.apply; "
            "print(sorted(set(sys.argv[1:]) & set(sys.modules)))")
    later = ["http.client", "ssl", "email", "fleet.server.status", "fleet.server.observe",
             "difflib", "secrets", "gzip"]
    proc = subprocess.run([sys.executable, "-c", code, *later], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"

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

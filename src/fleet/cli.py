"""The command line: each command parses, calls one function, and renders its result."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fleet import layout
from fleet.config import parse_toml
from fleet.converge import Outcome, converge
from fleet.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, ConfigError, FleetError
from fleet.host import LocalHost
from fleet.lock import run_lock
from fleet.report import SilentReporter, TextReporter, print_json, print_summary, summary_json
from fleet.session import Session
from fleet.status import server_status
from fleet.store import Desired, desired_state, plan_store, with_app
from fleet.version import version_line

app = typer.Typer(
    name="fleet",
    help="Turn a bare Debian server into a host for many Flask apps behind nginx and the "
         "uWSGI Emperor. Run as root on the server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Options:
    verbose = False
    quiet = False
    debug = False


OPTIONS = Options()
err = Console(stderr=True, highlight=False)


def version_callback(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Show every command fleet runs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Show only failures and the summary.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[Optional[bool], typer.Option(  # noqa: UP007 - typer needs Optional
        "--version", callback=version_callback, is_eager=True,
        help="Print the version and build id.")] = None,
) -> None:
    OPTIONS.verbose, OPTIONS.quiet, OPTIONS.debug = verbose, quiet, debug


def require_root() -> None:
    if os.geteuid() != 0:
        raise FleetError("fleet changes the server and must run as root (try sudo)")


def local_host() -> LocalHost:
    def show(argv: object) -> None:
        import shlex

        err.print(f"[dim]$ {shlex.join(list(argv))}[/]", highlight=False)  # type: ignore[arg-type]

    return LocalHost(show if OPTIONS.verbose else None)


def read_input(file: Path) -> str:
    try:
        return file.read_text()
    except FileNotFoundError:
        raise ConfigError(str(file), "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), "", f"cannot read: {exc}") from None


def reporter(json_out: bool, show_diffs: bool = False) -> TextReporter | SilentReporter:
    if json_out:
        return SilentReporter()
    return TextReporter(verbose=OPTIONS.verbose, quiet=OPTIONS.quiet, show_diffs=show_diffs)


def run_converge(desired: Desired, *, json_out: bool, check: bool, only: set[str] | None = None,
                 extra: dict[str, object] | None = None) -> int:
    host = local_host()
    session = Session(host, reporter(json_out, show_diffs=check), check=check)
    outcome = Outcome()
    try:
        with session.step("fleet config") as step:
            session.apply(step, plan_store(host, desired))
        outcome = converge(desired.config, session, only=only)
    except Exception as exc:  # a step failed in a way the session could not attribute
        if not session.steps or session.steps[-1].error is None:
            raise
        outcome.aborted = str(exc)
    notes = {"kept": desired.kept, "pruned": desired.pruned}
    if json_out:
        print_json(summary_json(session, outcome, {**notes, **(extra or {})}))
    else:
        console = Console(highlight=False)
        if desired.kept:
            console.print(f"kept apps not named in the file: {', '.join(desired.kept)} "
                          "(--prune removes them)")
        print_summary(console, session, outcome, plan=check)
    failed = session.counts()["failed"] > 0 or outcome.aborted is not None
    return EXIT_FAILED if failed else EXIT_OK


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]


@app.command()
def apply(
    file: Annotated[Optional[Path], typer.Argument(  # noqa: UP007
        help="TOML file with [server], [emperor] and [apps.NAME] tables to merge into "
             "/etc/fleet before converging.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option(help="Remove stored apps the file does not name "
                                             "(their data is kept).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Only show what would change "
                                                        "(same as `fleet plan`).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Converge the server to the desired state: packages, users, code, venvs, vassals, nginx.

    Example: fleet apply fleet.toml
    """
    raise typer.Exit(do_apply(file, prune=prune, check=check, json_out=json_out))


@app.command()
def plan(
    file: Annotated[Optional[Path], typer.Argument(  # noqa: UP007
        help="TOML file to merge, as for apply.", show_default=False)] = None,
    prune: Annotated[bool, typer.Option(help="As for apply.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show everything apply would do, with file diffs, changing nothing.

    Example: fleet plan fleet.toml
    """
    raise typer.Exit(do_apply(file, prune=prune, check=True, json_out=json_out))


def do_apply(file: Path | None, *, prune: bool, check: bool, json_out: bool) -> int:
    require_root()
    text = read_input(file) if file is not None else None
    host = local_host()
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = desired_state(host, str(file) if file else None, text, prune=prune)
        return run_converge(desired, json_out=json_out, check=check)


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError("--env", pair, "expected KEY=VALUE")
        env[key] = value
    return env


@app.command("add-app")
def add_app(
    name: Annotated[str, typer.Argument(help="App name: lowercase letters, digits, dashes.")],
    repo: Annotated[str, typer.Option(help="Git URL or local path of the app's repo.")],
    domain: Annotated[list[str], typer.Option(help="Domain the app answers (repeatable).")],
    ref: Annotated[Optional[str], typer.Option(help="Branch, tag or commit.")] = None,  # noqa: UP007
    path: Annotated[str, typer.Option(help="App directory inside the repo.")] = ".",
    module: Annotated[str, typer.Option(help="uWSGI module spec.")] = "wsgi:app",
    env: Annotated[Optional[list[str]], typer.Option(  # noqa: UP007
        help="Environment variable KEY=VALUE (repeatable).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add (or replace) one app in /etc/fleet/apps and converge just that app.

    Example: fleet add-app blog --repo https://git.example.com/blog.git --domain blog.example.com
    """
    require_root()
    raw: dict[str, object] = {"repo": repo, "domains": list(domain), "path": path,
                              "module": module}
    if ref:
        raw["ref"] = ref
    if env:
        raw["env"] = parse_env_pairs(env)
    host = local_host()
    with run_lock(layout.LOCK_FILE, wait=600, on_wait=lambda m: err.print(m)):
        desired = with_app(desired_state(host, None, None), name, raw, f"add-app {name}")
        code = run_converge(desired, json_out=json_out, check=False, only={name})
    raise typer.Exit(code)


@app.command()
def status(json_out: JsonOpt = False) -> None:
    """Show each app's live commit, workers (from uWSGI's stats) and health, plus the Emperor
    and nginx.

    Example: fleet status --json
    """
    host = local_host()
    desired = desired_state(host, None, None)
    data = server_status(host, desired.config)
    if json_out:
        print_json(data)
        return
    from rich.table import Table

    table = Table("app", "commit", "state", "workers", "requests", "health", "domains",
                  "problem")
    for name, row in data["apps"].items():  # type: ignore[union-attr]
        workers = row["workers"]
        table.add_row(name, row["commit"] or "-", row["state"],
                      f"{workers['busy']}/{workers['total']} busy", str(workers["requests"]),
                      row["health"], " ".join(row["domains"]), row["problem"] or "")
    console = Console(highlight=False)
    console.print(table)
    emperor = data["emperor"]
    console.print(f"Emperor: {'active' if emperor['active'] else 'inactive'}, "  # type: ignore[index]
                  f"{len(emperor.get('vassals', []))} vassals")  # type: ignore[union-attr]
    console.print(f"nginx: {'active' if data['nginx']['active'] else 'inactive'}")  # type: ignore[index]


def main() -> None:
    """Entry point: user errors are one line on stderr with exit 2 (input) or 1 (failure)."""
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err.print("fleet: aborted")
        code = EXIT_FAILED
    except FleetError as exc:
        if OPTIONS.debug or "--debug" in sys.argv:
            traceback.print_exc()
        err.print(f"fleet: {exc}", markup=False)
        code = exc.exit_code
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error: a bug, show it all
            raise
        # Usage errors (unknown option, missing argument): one line, like every input error.
        err.print(f"fleet: {exc.format_message()} (see fleet --help)", markup=False)
        code = EXIT_INVALID
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()

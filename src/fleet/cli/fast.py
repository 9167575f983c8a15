"""`fleet apply` and `fleet plan` without typer: the command lines a server's operator, its
scripts and `fleet push` (`apply --hold-changes` on every server) run most, and a no-op apply
should cost little more than its own work. They are parsed here, so that they do not import
typer and build its command tree first.

Only the plain forms are taken: global flags before the command, then at most one FILE and
the command's own flags, in any order. Anything else (--help, `--`, an unknown or repeated
word, a FILE that starts with a dash, `--no-prune`, --check with --hold-changes) returns
None and goes to typer, which says what is wrong or shows the help as always. A unit test
runs each accepted form through typer too and expects the same call of do_apply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The global options (fleet.cli.common.main_options) and each command's flags.
GLOBAL_FLAGS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet",
                "--debug": "debug"}
COMMAND_FLAGS = {"apply": {"--json": "json_out", "--prune": "prune", "--check": "check",
                           "--hold-changes": "hold"},
                 "plan": {"--json": "json_out", "--prune": "prune"}}


@dataclass(frozen=True)
class ApplyLine:
    """A parsed `fleet [-v|-q|--debug] apply|plan [FILE] [--json] [--prune] [--check]
    [--hold-changes]`."""

    options: frozenset[str]  # verbose, quiet, debug
    file: Path | None
    prune: bool
    check: bool
    json_out: bool
    hold: bool


def parse(args: Sequence[str]) -> ApplyLine | None:
    """The command line, when it is a plain apply or plan; None: typer parses it."""
    words = list(args)
    options: set[str] = set()
    while words and words[0] in GLOBAL_FLAGS:
        options.add(GLOBAL_FLAGS[words.pop(0)])
    if not words or words[0] not in COMMAND_FLAGS:
        return None
    command, rest = words[0], words[1:]
    flags: set[str] = set()
    files: list[str] = []
    for word in rest:
        if word in COMMAND_FLAGS[command] and COMMAND_FLAGS[command][word] not in flags:
            flags.add(COMMAND_FLAGS[command][word])
        elif not word.startswith("-") and not files and word:
            files.append(word)
        else:
            return None
    if {"check", "hold"} <= flags:
        return None  # typer says that these two do not go together
    return ApplyLine(options=frozenset(options), file=Path(files[0]) if files else None,
                     prune="prune" in flags, check=command == "plan" or "check" in flags,
                     json_out="json_out" in flags, hold="hold" in flags)


def command(args: Sequence[str]) -> Callable[[], int] | None:
    """What runs this command line without typer (its exit code), or None."""
    line = parse(args)
    if line is None:
        return None

    def run() -> int:
        from fleet.cli.basics import OPTIONS
        from fleet.cli.converging import do_apply

        OPTIONS.verbose = "verbose" in line.options
        OPTIONS.quiet = "quiet" in line.options
        OPTIONS.debug = "debug" in line.options
        return do_apply(line.file, prune=line.prune, check=line.check, json_out=line.json_out,
                        hold=line.hold)

    return run


def prefetch_refs(args: Sequence[str]) -> None:
    """For a plain apply or plan, start asking the apps' remotes now (fleet.converge.refs):
    the network answers while Python loads the rest of fleet. Not with -v, which lists
    every command as it runs."""
    line = parse(args)
    if line is not None and not line.options & {"verbose", "debug"}:
        from fleet.converge.refs import prefetch

        prefetch(line.file, check=line.check or line.hold)  # a held apply plans first

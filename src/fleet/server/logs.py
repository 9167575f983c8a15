"""Per-app logs.

uWSGI: every vassal logs into the Emperor's journal (journald rotates it), each line tagged
`[NAME] ` (or `[NAME@RELEASE] `) by the vassal's log-encoder; the Emperor's own lines about a
vassal name its file. nginx: one access and one error log per app under /var/log/nginx, which
Debian's /etc/logrotate.d/nginx rotates with the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from fleet.host import layout
from fleet.host.machine import CLEAN_PATH, Host

NGINX_LOG_DIR = "/var/log/nginx"
ERROR_LINE = re.compile(r"(Error|Exception|error|GAME OVER|Traceback|unable to load)")


def prefix(name: str) -> str:
    return f"[{name}] "


def line_matcher(name: str) -> Callable[[str], str | None]:
    """What of a journal line belongs to the app: the vassal's own lines without their tag,
    or the Emperor's lines naming the app's vassal file; None for anything else."""
    tagged = re.compile(rf"^\[{re.escape(name)}(?:@(?P<release>[\w.-]+))?\] ")
    emperor = re.compile(rf"(?<![\w@.-]){re.escape(name)}(?:@[\w.-]+)?\.ini\b")

    def match(line: str) -> str | None:
        found = tagged.match(line)
        if found:
            rest = line[found.end():]
            return f"{found['release']}: {rest}" if found["release"] else rest
        if not line.startswith("[") or line.startswith(("[emperor]", "[uWSGI]")):
            return line if emperor.search(line) else None
        return None

    return match


def filter_app_lines(text: str | Iterable[str], name: str) -> list[str]:
    match = line_matcher(name)
    lines = text.splitlines() if isinstance(text, str) else text
    return [kept for line in lines if (kept := match(line)) is not None]


def journal_argv(name: str, lines: int, follow: bool = False) -> list[str]:
    # Other apps' lines share the journal: read far enough back to find `lines` of this one.
    argv = ["journalctl", "--unit", layout.EMPEROR_UNIT_NAME, "--output", "cat",
            "--no-pager", "--lines", str(max(lines * 20, 2000))]
    return [*argv, "--follow"] if follow else argv


def app_log_tail(host: Host, name: str, lines: int = 20) -> str:
    """The app's last log lines, for failure reports (empty when journald has none)."""
    result = host.run(journal_argv(name, lines), check=False, timeout=30)
    return "\n".join(filter_app_lines(result.stdout, name)[-lines:])


def last_error(text: str) -> str | None:
    """The line of a log tail most likely to say why an app is down (its last error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR_LINE.search(line)]
    picked = next((e for e in reversed(errors) if "GAME OVER" not in e), None)
    return (picked or (errors or lines or [None])[-1])


JOURNAL_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
CURSOR = "-- cursor: "


def split_cursor(output: str) -> tuple[str, str | None]:
    """journalctl --show-cursor output -> (entries, cursor of the last one or None)."""
    body, _, last = output.rstrip("\n").rpartition("\n")
    if last.startswith(CURSOR):
        return body, last[len(CURSOR):].strip()
    if output.startswith(CURSOR):
        return "", output[len(CURSOR):].strip()
    return output, None


def follow_journal(host: Host, name: str, lines: int) -> Iterator[str]:
    """The app's last `lines` lines, then each new one as it arrives (until interrupted).

    The backlog is read first and remembered by its journal cursor; following starts right
    after that cursor, so no line is lost or shown twice in between.
    """
    result = host.run([*journal_argv(name, lines), "--show-cursor"], check=False,
                      env=JOURNAL_ENV)
    backlog, cursor = split_cursor(result.stdout)
    yield from filter_app_lines(backlog, name)[-lines:] if lines > 0 else []
    since = [f"--after-cursor={cursor}"] if cursor else ["--lines", "0"]
    argv = ["journalctl", "--unit", layout.EMPEROR_UNIT_NAME, "--output", "cat",
            "--no-pager", "--follow", *since]
    match = line_matcher(name)
    for line in host.follow(argv, env=JOURNAL_ENV):
        kept = match(line.rstrip("\n"))
        if kept is not None:
            yield kept


def nginx_logs(name: str) -> tuple[str, str]:
    """The app's nginx access and error logs (the site template names them)."""
    return (f"{NGINX_LOG_DIR}/fleet-{name}.access.log", f"{NGINX_LOG_DIR}/fleet-{name}.error.log")


def tail_file(host: Host, path: str, lines: int) -> list[str]:
    """The last lines of a (possibly large) log file, reading only its end."""
    return host.read_tail(path, lines).decode(errors="replace").splitlines()[-lines:] \
        if lines > 0 else []


def existing(host: Host, paths: Iterable[str]) -> list[str]:
    return [p for p in paths if (state := host.state(p)) is not None and state.kind == "file"]

"""What the reliability tests do to a server: snapshot what fleet manages, run fleet in the
background and SIGKILL it, read which steps a run changed."""

from __future__ import annotations

import shlex
import time

from tests.e2e.helpers import JsonRun
from tests.harness.server import BareServer

MANAGED = ("/etc/fleet", "/etc/nginx", "/etc/uwsgi", "/srv/fleet", "/etc/systemd/system",
           "/etc/tmpfiles.d")
BG_PID = "/root/bg.pid"
BG_LOG = "/root/bg.log"

PROBE_APP = '''"""Probe app for reliability tests: says who it is and what its environment holds."""
import os

from flask import Flask

VERSION = "{version}"
app = Flask(__name__)


@app.get("/")
def index():
    label = os.environ.get("APP_LABEL", "?")
    return f"{{label}} {{VERSION}}", 200, {{"Content-Type": "text/plain"}}


@app.get("/env/<key>")
def env(key):
    return os.environ.get(key, "<unset>"), 200, {{"Content-Type": "text/plain"}}
'''


def probe_source(version: str) -> str:
    return PROBE_APP.format(version=version)


def snapshot(server: BareServer, paths: tuple[str, ...] = MANAGED) -> str:
    """Path, owner, group, mode, size, mtime and type of everything fleet manages (or under
    `paths`), plus the sha256 of every regular file: equal snapshots mean nothing was touched."""
    dirs = " ".join(paths)
    script = (f"find {dirs} -printf '%p %U %G %m %s %T@ %y %l\\n' 2>/dev/null | sort; "
              f"find {dirs} -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum")
    return server.run(["sh", "-c", script], check=True).stdout


def modes(server: BareServer, paths: tuple[str, ...]) -> dict[str, str]:
    """Owner, group, mode and type of every path under `paths` (/etc, /usr: their content may
    legitimately change, e.g. /etc/passwd gains an app's user, but no mode may)."""
    script = f"find {' '.join(paths)} -xdev -printf '%p\\t%u %g %m %y\\n' 2>/dev/null"
    listing = server.run(["sh", "-c", script]).stdout
    return dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)


def modes_changed(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Paths whose owner, group, mode or type differ (or that vanished) between listings."""
    return {p: (m, after.get(p, "gone")) for p, m in before.items() if after.get(p) != m}


def start_background(server: BareServer, *args: str) -> int:
    """Start `fleet ARGS` in its own session (so its whole process tree can be killed at once);
    returns its PID, which is also its process group."""
    server.run(["rm", "-f", BG_PID, BG_LOG], check=True)
    inner = f"echo $$ > {BG_PID}; exec /usr/local/bin/fleet {shlex.join(args)} > {BG_LOG} 2>&1"
    server.run(f"setsid -f sh -c {shlex.quote(inner)} </dev/null >/dev/null 2>&1", check=True)
    for _ in range(100):
        text = server.run(["cat", BG_PID]).stdout.strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the background fleet run did not start")


def alive(server: BareServer, pid: int) -> bool:
    return server.run(["test", "-d", f"/proc/{pid}"]).ok


def kill_group(server: BareServer, pid: int) -> bool:
    """SIGKILL fleet and every command it started (apt-get, dpkg, git, pip...); False when the
    run had already finished."""
    # minbase has no /bin/kill and dash's kill takes no process group; bootstrap put python3.
    if not server.run(["python3", "-c", f"import os, signal; os.killpg({pid}, signal.SIGKILL)"]).ok:
        return False
    for _ in range(100):
        # Field 5 of /proc/PID/stat is the process group (no awk or procps in minbase).
        if not server.run(f"cat /proc/[0-9]*/stat 2>/dev/null | grep -qE '\\) . [0-9]+ {pid} '").ok:
            return True
        time.sleep(0.1)
    raise AssertionError(f"process group {pid} survived SIGKILL")


def wait_for_comm(server: BareServer, comm: str, timeout: float) -> bool:
    """Wait until a process named `comm` runs inside the server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.run(f"grep -qsx {shlex.quote(comm)} /proc/[0-9]*/comm").ok:
            return True
        time.sleep(0.1)
    return False


def wait_for_cmdline(server: BareServer, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.run(["sh", "-c", 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr "\\0" " " '
                                   '| grep -qF -- "$1"', "sh", needle]).ok:
            return True
        time.sleep(0.1)
    return False


def changed_steps(run: JsonRun) -> set[tuple[str, str | None]]:
    return {(s["name"], s["app"]) for s in run.data["steps"] if s["status"] == "changed"}


def failed_steps(run: JsonRun) -> dict[str | None, dict]:
    return {s["app"]: s for s in run.data["steps"] if s["status"] == "failed"}

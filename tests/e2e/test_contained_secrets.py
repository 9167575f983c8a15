"""Issue 14, area contain-secrets, on one booted server: a health endpoint that never ends, a
token in a repo URL while git hangs, an env_file line uWSGI would cut, add-app's env from
stdin, X-Fleet-Site for loopback probes only, and a stats socket the app swapped for its own
listener. A healthy app (pages) keeps serving.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import describe, fleet, fleet_json, get, install_fleet
from tests.e2e.reliability_helpers import BG_LOG, alive, snapshot, start_background
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
TOKEN = "tok" + secrets.token_hex(12)
STDIN_SECRET = "stdin" + secrets.token_hex(12)
LONG_SECRET = "L" * 1100


class HangingGitServer:
    """Accepts connections on 127.0.0.1 and never answers (the container shares the host's
    network, so the server's git reaches it)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


def toml(git_remote, hang_port: int) -> str:
    return f"""
[server]
git_timeout = 10

[apps.pages]
repo = "{git_remote.url('pages')}"
domains = ["pages.test"]

[apps.hostile-stream]
repo = "{git_remote.url('hostile-stream')}"
domains = ["stream.test"]
[apps.hostile-stream.health]
path = "/health"
timeout = 8

[apps.hostile-token]
repo = "http://deploy:{TOKEN}@127.0.0.1:{hang_port}/app.git"
domains = ["token.test"]

[apps.hijack]
repo = "{git_remote.url('hostile-stats')}"
domains = ["hijack.test"]
"""


@pytest.fixture(scope="module")
def hang():
    server = HangingGitServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz, hang):
    for name in ("pages", "hostile-stream", "hostile-stats"):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, APPS / name)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    # The operator's own input holds the token: theirs to keep private (0600), as fleet's
    # stored copy is; the test then finds the token in no file others can read.
    server.write_file("/root/fleet.toml", toml(git_remote, hang.port), 0o600)
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "--version"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return server


def cmdlines(box: BareServer) -> str:
    script = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null"
    return box.run(["sh", "-c", script]).stdout


@pytest.fixture(scope="module")
def applied(box: BareServer, hang: HangingGitServer):
    """One apply of all three apps, in the background: while git hangs on the token URL,
    read every process's command line."""
    pid = start_background(box, "apply", "/root/fleet.toml", "--json")
    assert hang.accepted.wait(900), box.run(["cat", BG_LOG]).stdout[-3000:]
    seen = cmdlines(box)
    start = time.monotonic()
    while alive(box, pid) and time.monotonic() - start < 900:
        time.sleep(1)
    assert not alive(box, pid)
    log = box.run(["cat", BG_LOG]).stdout
    return seen, log, json.loads(log[log.index("{"):])


def test_token_never_on_a_command_line_in_output_or_readable_file(box, applied) -> None:
    seen, log, data = applied
    assert "git" in seen and "127.0.0.1" in seen  # git was running while we looked
    assert TOKEN not in seen
    assert TOKEN not in log
    error = data["apps"]["hostile-token"]["error"]
    assert data["apps"]["hostile-token"]["health"] != "passed"
    assert "repo" in error and ("timed out" in error or "exited" in error), error
    status = fleet(box, "status", "--json", timeout=120)
    assert TOKEN not in status.stdout + status.stderr
    found = box.run(["sh", "-c", f"grep -rlF {TOKEN} /etc /srv /var /root /tmp /run /home "
                                 "2>/dev/null | xargs -r stat -c '%a %U %n'"]).stdout
    for line in found.splitlines():
        mode, owner, _path = line.split(" ", 2)
        assert owner == "root" and int(mode, 8) & 0o004 == 0, line
    mirror = box.run(["sh", "-c", "cat /srv/fleet/hostile-token/repo/config 2>/dev/null"])
    assert TOKEN not in mirror.stdout
    assert "git-remote" not in cmdlines(box)  # no helper outlived the timed-out git


def test_endless_health_answer_fails_its_gate_by_name(box, applied) -> None:
    _seen, _log, data = applied
    app = data["apps"]["hostile-stream"]
    assert app["health"] == "failed", app
    assert "answer too slow" in app["error"], app
    assert data["apps"]["pages"]["health"] == "passed", data["apps"]
    start = time.monotonic()
    run = fleet(box, "status", timeout=120)  # the lock was released, status is bounded
    assert time.monotonic() - start < 60 and "Traceback" not in run.stderr, run.stderr


def test_x_fleet_site_only_for_loopback(box, applied) -> None:
    assert get(box, "pages.test")[0] == 200
    inside = box.run(["python3", "-c", (
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', 80, timeout=5); "
        "c.request('GET', '/', headers={'Host': 'pages.test', 'X-Fleet-Probe': '1'}); "
        "print(c.getresponse().getheader('X-Fleet-Site'))")])
    assert inside.stdout.strip().startswith("pages@"), inside
    remote = non_loopback_address()
    if remote is None:
        pytest.skip("the host has no non-loopback address (covered by the template unit test)")
    conn = http.client.HTTPConnection(remote, 80, timeout=5)
    conn.request("GET", "/", headers={"Host": "pages.test", "X-Fleet-Probe": "1"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("X-Fleet-Site") is None


def non_loopback_address() -> str | None:
    """One of the host's own IPv4 addresses that is not loopback (nginx listens on all; the
    container shares the host's network), read from /proc/net/fib_trie."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            address = previous.split()[-1]
            if not address.startswith("127."):
                return address
    return None


def test_long_env_file_line_is_refused_without_its_value(box, applied) -> None:
    box.write_file("/etc/fleet-secrets/long.env", f"OK=1\nBIG={LONG_SECRET}\n", 0o600)
    box.run(["chmod", "700", "/etc/fleet-secrets"], check=True)
    text = box.run(["cat", "/root/fleet.toml"]).stdout.replace(
        'domains = ["pages.test"]\n',
        'domains = ["pages.test"]\nenv_file = "/etc/fleet-secrets/long.env"\n')
    box.write_file("/root/long.toml", text)
    before = snapshot(box)
    run = fleet(box, "apply", "/root/long.toml")
    assert run.returncode == 2, run
    assert run.stderr.strip().count("\n") == 0, run.stderr
    assert "/etc/fleet-secrets/long.env: line 2 (BIG)" in run.stderr, run.stderr
    assert LONG_SECRET[:50] not in run.stdout + run.stderr
    assert snapshot(box) == before
    assert get(box, "pages.test")[0] == 200


def test_add_app_reads_env_values_from_stdin(box, applied, git_remote) -> None:
    refused = fleet(box, "add-app", "extra", "--repo", git_remote.url("pages"), "--domain",
                    "extra.test", "--env", f"SECRET={STDIN_SECRET}")
    assert refused.returncode == 2 and STDIN_SECRET not in refused.stdout + refused.stderr
    run = fleet_json(box, "add-app", "extra", "--repo", git_remote.url("pages"), "--domain",
                     "extra.test", "--env", "SECRET", input=STDIN_SECRET + "\n")
    assert run.returncode == 0, describe(run)
    assert STDIN_SECRET not in run.result.stdout + run.result.stderr
    stored = box.run(["stat", "-c", "%a %U", "/etc/fleet/apps/extra.toml"]).stdout.split()
    assert stored == ["600", "root"]
    assert STDIN_SECRET in box.run(["cat", "/etc/fleet/apps/extra.toml"]).stdout
    assert get(box, "pages.test")[0] == 200


def test_a_stats_socket_the_app_replaced_is_reported_unreadable(box, applied) -> None:
    """The stats socket's directory is the app's: hostile-stats swaps in its own listener that
    answers JSON nested 100,000 deep (a RecursionError in json.loads, unbounded)."""
    _seen, _log, data = applied
    assert data["apps"]["hijack"]["health"] == "passed", data["apps"]["hijack"]
    status, body = get(box, "hijack.test", "/hijack")
    assert status == 200 and body.startswith("hijacked"), body[:300]
    start = time.monotonic()
    result = fleet_json(box, "status", timeout=120)
    assert time.monotonic() - start < 60
    assert "Traceback" not in result.result.stderr, result.result.stderr[-2000:]
    hijack = result.data["apps"]["hijack"]
    assert hijack["state"] == "unreadable", hijack
    assert "nested" in (hijack["problem"] or ""), hijack
    assert result.data["apps"]["pages"]["state"] == "running", result.data["apps"]["pages"]
    text = fleet(box, "status", timeout=120)
    # The table is printed whole (a narrow terminal truncates its app names).
    assert "Traceback" not in text.stderr and "nginx: active" in text.stdout, text.stderr[-2000:]
    assert get(box, "pages.test")[0] == 200

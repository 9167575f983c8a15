"""The audit log and notifications on one bridged server, in order.

Audit lines for apply, deploy (as `SUDO_USER=alice`, and over real ssh with a key whose
comment is bob@laptop), rollback and remove-app, read back with `fleet history --json`. A
webhook receiver on the host (bound to the bridge's gateway) gets deploy success, deploy
failure (a commit that fails to import), rollback and the health turning red and green
(fleet-watch.service); with the receiver down a deploy takes no longer, returns before the
first retry, and the event arrives once the receiver is back.

Not a provisioning test: its servers start from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_smoke, test_trixie and the push modules.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.helpers import bootstrap_apply, fleet, install_fleet
from tests.harness.bridged import BridgedServer, make_ssh_identity
from tests.harness.gitremote import GitRemote
from tests.harness.network import BridgeNetwork

APPS = Path(__file__).resolve().parents[1] / "apps"
WHOAMI = (APPS / "whoami" / "wsgi.py").read_text()
BROKEN = (APPS / "broken-import" / "wsgi.py").read_text()
DOMAIN = "pulse.test"
PAYLOAD_KEYS = {"event", "app", "server", "time", "unix", "summary", "details", "fleet"}


class Receiver:
    """A webhook receiver on the host: records each POSTed JSON body; can go down and up."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.port = 0
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((self.address, self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def wait_for(self, event: str, timeout: float = 60.0, commit: str | None = None,
                 **fields: object) -> dict:
        """The first event of this kind (with these fields, and this details.commit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for got in self.events:
                    if (got["event"] == event
                            and all(got.get(k) == v for k, v in fields.items())
                            and (commit is None or got["details"].get("commit") == commit)):
                        return got
            time.sleep(0.3)
        raise AssertionError(f"no {event} {fields} within {timeout} s; got {self.events}")


@dataclass
class Box:
    server: BridgedServer
    git: GitRemote
    receiver: Receiver
    ssh_config: Path
    commits: dict[str, str]
    durations: dict[str, float]

    def ssh_fleet(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", "-F", str(self.ssh_config), f"root@{self.server.address}",
                               "/usr/local/bin/fleet", *args],
                              capture_output=True, text=True, timeout=900, check=False)

    def history(self, *args: str) -> list[dict]:
        result = fleet(self.server, "history", *args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["entries"]

    def watch(self) -> None:
        result = self.server.run(["systemctl", "start", "fleet-watch.service"], timeout=120)
        assert result.returncode == 0, result.stderr + self.server.journal("fleet-watch.service")


@pytest.fixture(scope="module")
def box(e2e_host: None, suite: str, fleet_pyz: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    work = tmp_path_factory.mktemp("audit")
    with BridgeNetwork() as network, GitRemote(listen=("127.0.0.1", network.gateway)) as git:
        receiver = Receiver(network.gateway)
        receiver.up()
        server = BridgedServer(network, 0, "audit-box", suite, provisioned=True)
        try:
            git.create_repo("pulse", APPS / "whoami")
            ssh_config, _, public_key = make_ssh_identity(work)
            server.boot()
            # The key's comment is what the audit log names an ssh session's operator by.
            server.install_sshd(public_key.rsplit(" ", 1)[0] + " bob@laptop\n")
            install_fleet(server, fleet_pyz)
            started = time.monotonic()
            bootstrap_apply(server, f"""
[server.notify]
webhook = "http://{network.gateway}:{receiver.port}/hook"

[apps.pulse]
repo = "{git.url('pulse', network.gateway)}"
domains = ["{DOMAIN}"]
health = {{ path = "/health", timeout = 20 }}
""")
            yield Box(server, git, receiver, ssh_config, {"v1": git.head("pulse")},
                      {"apply": time.monotonic() - started})
        finally:
            receiver.down()
            server.destroy()


def test_apply_leaves_a_root_only_line_and_notifies_the_first_deploy(box: Box) -> None:
    [line] = box.history()
    assert line["command"][:2] == ["fleet", "apply"]
    assert (line["who"], line["via"]) == ("root", "login")  # nsenter: no sudo, no ssh
    assert line["result"] == "changed" and line["exit"] == 0
    assert line["commits"] == {"pulse": {"before": None, "after": box.commits["v1"]}}
    modes = box.server.run("stat -c '%a %U' /var/log/fleet /var/log/fleet/audit.log "
                           "/var/spool/fleet/notify", check=True).stdout.split("\n")
    assert modes[:3] == ["700 root", "600 root", "700 root"]
    assert "rotate" in box.server.read_file("/etc/logrotate.d/fleet").decode()
    got = box.receiver.wait_for("deploy.succeeded", app="pulse", commit=box.commits["v1"])
    assert set(got) >= PAYLOAD_KEYS and got["server"] == "audit-box"
    assert got["details"]["commit"] == box.commits["v1"]


def test_deploy_as_a_sudo_user(box: Box) -> None:
    box.commits["v2"] = box.git.commit("pulse", {"wsgi.py": WHOAMI.replace('"v1"', '"v2"')})
    started = time.monotonic()
    result = box.server.run(["env", "SUDO_USER=alice", "/usr/local/bin/fleet", "deploy",
                             "pulse"], timeout=900)
    box.durations["deploy, receiver up"] = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    line = box.history("pulse")[-1]
    assert (line["who"], line["via"], line["command"]) == (
        "alice", "sudo", ["fleet", "deploy", "pulse"])
    assert line["commits"]["pulse"] == {"before": box.commits["v1"], "after": box.commits["v2"]}
    got = box.receiver.wait_for("deploy.succeeded", app="pulse", commit=box.commits["v2"])
    assert got["details"]["previous_commit"] == box.commits["v1"]


def test_failed_deploy_over_ssh_names_the_key(box: Box) -> None:
    box.commits["broken"] = box.git.commit("pulse", {"wsgi.py": BROKEN})
    result = box.ssh_fleet("deploy", "pulse")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    line = box.history("pulse")[-1]
    assert (line["who"], line["via"], line["result"]) == ("bob@laptop", "ssh-key", "failed")
    assert line["commits"]["pulse"]["after"] == box.commits["v2"]  # still live
    got = box.receiver.wait_for("deploy.failed", app="pulse")
    assert "does_not_exist_xyz" in json.dumps(got["details"]) or got["details"]["error"]


def test_rollback_is_audited_and_notified(box: Box) -> None:
    result = fleet(box.server, "rollback", "pulse")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    line = box.history("pulse")[-1]
    assert line["command"][:2] == ["fleet", "rollback"]
    assert line["commits"]["pulse"] == {"before": box.commits["v2"], "after": box.commits["v1"]}
    got = box.receiver.wait_for("rollback", app="pulse")
    assert got["details"]["commit"] == box.commits["v1"]


def test_health_red_then_green_from_the_watch(box: Box) -> None:
    state = box.server.run(["systemctl", "is-active", "fleet-watch.timer"]).stdout.strip()
    assert state == "active"
    box.watch()  # the baseline: green, told to nobody
    box.server.run(["systemctl", "stop", "fleet-emperor.service"], check=True)
    try:
        box.watch()
        red = box.receiver.wait_for("health.red", app="pulse")
        assert red["details"]["detail"]
    finally:
        box.server.run(["systemctl", "start", "fleet-emperor.service"], check=True)
    deadline = time.monotonic() + 60
    while box.server.http_at("/health", host=DOMAIN).status != 200:
        assert time.monotonic() < deadline, "the app did not come back"
        time.sleep(0.5)
    box.watch()
    box.receiver.wait_for("health.green", app="pulse")


def test_a_receiver_that_is_down_delays_nothing(box: Box) -> None:
    box.receiver.down()
    box.commits["v3"] = box.git.commit("pulse", {"wsgi.py": WHOAMI.replace('"v1"', '"v3"')})
    started = time.monotonic()
    result = fleet(box.server, "deploy", "pulse")
    took = time.monotonic() - started
    box.durations["deploy, receiver down"] = took
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert took < box.durations["deploy, receiver up"] + 5, box.durations
    # The first attempt failed and a retry waits: the deploy returned before it.
    deadline = time.monotonic() + 20
    while True:
        spooled = box.server.run("cat /var/spool/fleet/notify/*.json 2>/dev/null").stdout
        if re.search(r'"attempts": [1-9]', spooled):
            break
        assert time.monotonic() < deadline, spooled
        time.sleep(0.5)
    box.receiver.up()  # same port
    box.receiver.wait_for("deploy.succeeded", timeout=60, app="pulse", commit=box.commits["v3"])
    journal = box.server.journal("fleet-notify.service")
    assert "retry in 10 s" in journal and "delivered deploy.succeeded" in journal


def test_remove_app_and_the_whole_history(box: Box) -> None:
    result = fleet(box.server, "remove-app", "pulse")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    lines = box.history("pulse")
    assert [(line["command"][1], line["who"]) for line in lines] == [
        ("apply", "root"), ("deploy", "alice"), ("deploy", "bob@laptop"), ("rollback", "root"),
        ("deploy", "root"), ("remove-app", "root")]
    assert lines[-1]["commits"]["pulse"] == {"before": box.commits["v3"], "after": None}
    table = fleet(box.server, "history", "--limit", "2")
    assert table.returncode == 0 and "remove-app" in table.stdout
    assert box.history("--limit", "1")[0]["command"][1] == "remove-app"
    print(f"\ndurations: {box.durations}")

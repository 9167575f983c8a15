"""`fleet status` reads what every app shares once and waits for the apps' own answers (stats
sockets, health requests) several at a time, with the rows in the config's order. The real
server is proven in tests/e2e/test_operator.py; the time in bench/startup.py."""

from __future__ import annotations

import json
import threading

import pytest

from fleet.host import layout
from fleet.host.client import Reply
from fleet.host.machine import ProcessInfo, RunResult
from fleet.server import status as status_mod
from fleet.server.status import server_status
from fleet.server.users import accounts
from tests.unit.fakehost import FakeHost
from tests.unit.support import config, run, server

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

APPS = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
[apps.alpha.workers.queue]
command = "celery worker"
processes = 2
[apps.alpha.jobs.prune]
command = "flask prune"
schedule = "*-*-* 03:00"
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
[apps.gamma]
repo = "git://remote/alpha.git"
domains = ["gamma.test"]
"""
RELEASE = {"alpha": "a" * 12, "beta": "c" * 12, "gamma": "a" * 12}


def serving(host: FakeHost) -> None:
    """Each app's vassal answering on its stats socket with two workers, and the Emperor."""
    vassals = []
    for index, (name, release) in enumerate(RELEASE.items()):
        pids = [100 + 10 * index, 101 + 10 * index]
        host.sockets[f"/run/fleet/{name}/{release}.stats"] = json.dumps({"workers": [
            {"pid": pid, "status": "idle", "requests": 5, "respawn_count": 1}
            for pid in pids]}).encode()
        host.procs += [ProcessInfo(pid, 0, b"uwsgi\0", rss=(index + 1) * 2**20) for pid in pids]
        vassals.append({"id": f"{name}@{release}.ini", "pid": 90 + index, "respawns": 0})
    host.sockets[layout.EMPEROR_STATS] = json.dumps({"vassals": vassals,
                                                     "blacklist": []}).encode()


def test_status_reads_shared_facts_once_and_keeps_the_config_order(monkeypatch) -> None:
    host = server()
    cfg = config(host, APPS)
    run(host, cfg)
    serving(host)
    host.active = {layout.EMPEROR_UNIT_NAME, "fleet-alpha.worker.queue@1.service",
                   "fleet-alpha.worker.queue@2.service", "fleet-alpha.job.prune.timer"}
    scans = []
    real_processes = host.processes
    monkeypatch.setattr(host, "processes", lambda: scans.append(1) or real_processes())
    # Every app's health request must be in flight at once, or the barrier breaks; the
    # first app's answer comes last, and its row still comes first.
    barrier = threading.Barrier(3, timeout=10)
    answered = []

    def probe(domain: str, path: str, **_kwargs) -> Reply:
        barrier.wait()
        if domain == "alpha.test":
            while len(answered) < 2:
                threading.Event().wait(0.01)
        answered.append(domain)
        return Reply(200 if domain != "beta.test" else 503)

    monkeypatch.setattr(status_mod, "http_get", probe)
    host.commands.clear()
    data = server_status(host, cfg).to_json()

    assert answered[-1] == "alpha.test"
    assert list(data["apps"]) == ["alpha", "beta", "gamma"]
    assert [a["health"] for a in data["apps"].values()] == ["passed", "failed", "passed"]
    assert data["apps"]["beta"]["problem"] == "HTTP 503"
    assert [a["workers"]["rss"] for a in data["apps"].values()] == [2 * 2**20, 4 * 2**20,
                                                                     6 * 2**20]
    assert [a["state"] for a in data["apps"].values()] == ["running"] * 3
    # One listing of the accounts, one `systemctl show` for the Emperor, nginx and every
    # app's workers and jobs, one /proc scan: not one of each per app.
    assert host.ran("getent") == [["getent", "passwd"]]
    shows = host.ran("systemctl")
    assert len(shows) == 1 and shows[0][1] == "show"
    assert {layout.EMPEROR_UNIT_NAME, "nginx.service", "fleet-alpha.worker.queue@1.service",
            "fleet-alpha.job.prune.service", "fleet-alpha.job.prune.timer"} <= set(shows[0])
    assert len(scans) == 1
    assert (data["emperor"]["active"], data["nginx"]["active"]) == (True, False)
    queue = data["apps"]["alpha"]["background"]["workers"]["queue"]
    assert (queue["state"], queue["running"]) == ("running", 2)
    assert data["apps"]["alpha"]["background"]["jobs"]["prune"]["state"] == "waiting"
    assert data["apps"]["beta"]["limits"]["memory"]["used"] == 0  # root's processes only


def test_a_reloading_nginx_is_active_as_systemctl_is_active_says() -> None:
    host = server()
    cfg = config(host, APPS.split("[apps.beta]")[0].split("[apps.alpha.workers")[0])

    def reloading(_host: FakeHost, argv: list[str]) -> RunResult | None:
        if argv[:2] != ["systemctl", "show"]:
            return None
        return RunResult(0, "Id=nginx.service\nActiveState=reloading\n\n"
                            f"Id={layout.EMPEROR_UNIT_NAME}\nActiveState=failed\n", "")

    host.handlers.append(reloading)
    status = server_status(host, cfg)
    assert (status.nginx_active, status.emperor.active) == (True, False)


def test_accounts_come_from_one_listing_and_unlisted_names_are_asked_for() -> None:
    host = FakeHost(users={"root", "www-data", "alpha"})

    def ldap(_host: FakeHost, argv: list[str]) -> RunResult | None:
        # An account source that answers by name but does not enumerate.
        if argv == ["getent", "passwd", "remote"]:
            return RunResult(0, "remote:x:5000:5000:fleet app remote:/srv/fleet/remote:"
                                "/usr/sbin/nologin\n", "")
        return None

    host.handlers.append(ldap)
    found = accounts(host, ["alpha", "remote", "ghost", "alpha"])
    assert list(found) == ["alpha", "remote", "ghost"]
    assert found["alpha"] is not None and found["alpha"].home == "/srv/fleet/alpha"
    assert found["remote"] is not None and found["remote"].uid == 5000
    assert found["ghost"] is None
    assert host.ran("getent") == [["getent", "passwd"], ["getent", "passwd", "remote"],
                                  ["getent", "passwd", "ghost"]]


def test_status_without_apps_asks_systemd_about_the_emperor_and_nginx_only() -> None:
    host = server()
    host.active = {"nginx.service"}
    status = server_status(host, config(host, ""))
    assert (status.apps, status.nginx_active, status.emperor.active) == ([], True, False)
    assert [c[:2] for c in host.commands] == [["systemctl", "show"]]

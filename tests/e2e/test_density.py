"""Many apps on one small server, on a real one: an on-demand app sleeps without a process,
wakes on a request and sleeps again; a ranged-processes app grows under load and shrinks.
One server for the module, in order.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.helpers import bootstrap_apply, fleet_json, get, install_fleet, uwsgi_processes
from tests.e2e.load import Load
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
IDLE = 4  # seconds an on-demand app may go without a request before it sleeps


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    if "pulse" not in git_remote.repos_created:
        git_remote.create_repo("pulse", APPS / "pulse")
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    bootstrap_apply(server, f"""
[apps.sleepy]
repo = "{git_remote.url('pulse')}"
domains = ["sleepy.test"]
mode = "on-demand"
idle = {IDLE}

[apps.elastic]
repo = "{git_remote.url('pulse')}"
domains = ["elastic.test"]
processes = "1-4"
""")
    return server


def processes_of(box: BareServer, user: str) -> list[dict[str, str]]:
    return [p for p in uwsgi_processes(box) if p["user"] == user]


def wait_for(what: str, condition: Callable[[], bool], timeout: float,
             interval: float = 0.5) -> float:
    """Seconds until condition() held; fails the test after timeout."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - start


def app_state(box: BareServer, name: str) -> dict:
    run = fleet_json(box, "status")
    assert run.returncode == 0, run.result.stderr
    return run.data["apps"][name]


def test_on_demand_socket_reaches_nginx_only(box) -> None:
    out = box.run(["stat", "-c", "%U:%G %a", "/run/fleet/_on-demand"], check=True).stdout
    assert out.split() == ["root:www-data", "750"]
    ini = box.read_file("/etc/uwsgi/vassals/" + next(
        f for f in box.run(["ls", "/etc/uwsgi/vassals"], check=True).stdout.split()
        if f.startswith("sleepy@") and f.endswith(".ini"))).decode()
    assert "\nsocket =" not in ini and "die-on-idle = true" in ini
    # Another app's user cannot even reach the socket; nginx's user can.
    path = next(f for f in box.run(["ls", "/run/fleet/_on-demand"], check=True).stdout.split()
                if f.startswith("sleepy@"))
    probe = ("import socket; s = socket.socket(socket.AF_UNIX); "
             f"s.connect('/run/fleet/_on-demand/{path}')")
    denied = box.run(["runuser", "-u", "elastic", "--", "python3", "-c", probe])
    assert denied.returncode != 0 and "Permission" in denied.stderr, denied.stderr
    allowed = box.run(["runuser", "-u", "www-data", "--", "python3", "-c", probe])
    assert allowed.returncode == 0, allowed.stderr


def test_on_demand_app_sleeps_wakes_on_a_request_and_sleeps_again(box) -> None:
    slept = wait_for("sleepy's vassal exits after idling",
                     lambda: not processes_of(box, "sleepy"), IDLE + 60)
    state = app_state(box, "sleepy")
    assert (state["state"], state["health"]) == ("sleeping", "sleeping"), state
    assert processes_of(box, "elastic"), "the always-on app keeps running"
    # A no-op apply checks the awake app through nginx but leaves the sleeping one asleep.
    again = fleet_json(box, "apply", "/root/fleet.toml")
    assert again.returncode == 0 and again.data["changed"] == 0, again.result.stdout[-2000:]
    assert again.data["apps"]["sleepy"]["health"] == "sleeping", again.data["apps"]
    assert again.data["apps"]["elastic"]["health"] == "passed", again.data["apps"]
    assert not processes_of(box, "sleepy"), "the apply woke the sleeping app"

    start = time.monotonic()
    status, body = get(box, "sleepy.test")
    first = time.monotonic() - start
    assert status == 200 and body.startswith("pulse pid="), body
    print(f"\nsleepy: asleep {slept:.1f} s after the test began; "
          f"first request after sleep {first * 1000:.0f} ms")
    assert processes_of(box, "sleepy"), "the request woke a vassal"
    assert app_state(box, "sleepy")["state"] == "running"

    wait_for("sleepy goes back to sleep", lambda: not processes_of(box, "sleepy"), IDLE + 60)
    status, body = get(box, "sleepy.test")
    assert status == 200, body


def test_ranged_processes_grow_under_load_and_shrink_after(box) -> None:
    def workers() -> int:
        return max(len(processes_of(box, "elastic")) - 1, 0)  # minus the master

    wait_for("elastic runs 1 worker when quiet", lambda: workers() == 1, 60)
    seen = [workers()]
    with Load("elastic.test", "/slow?s=0.3", threads=8, limit=60) as result:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and max(seen) < 4:
            time.sleep(1)
            seen.append(workers())
    print(f"\nelastic workers under load: {seen}")
    assert result.failed == 0, result.failures[:5]
    assert max(seen) > 1, f"workers never grew: {seen}"
    assert max(seen) <= 4, f"more workers than the maximum: {seen}"
    shrink = wait_for("elastic shrinks back to 1 worker", lambda: workers() == 1, 90)
    print(f"elastic back to 1 worker {shrink:.0f} s after the load stopped")
    state = app_state(box, "elastic")
    assert state["workers"]["total"] == 1, json.dumps(state)

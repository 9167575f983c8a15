"""On-demand vassals and ranged processes: what fleet writes, and how status reads a sleeper."""

from __future__ import annotations

import pytest

from fleet.converge import apply as apply_mod
from fleet.host.actions import Remove, WriteFile
from fleet.server import status as status_mod
from fleet.server.status import app_status, vassal_status
from tests.unit.support import (
    SHA_A2,
    changed_steps,
    config,
    run,
    server,
)

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

VASSALS = "/etc/uwsgi/vassals"
ON_DEMAND = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
mode = "on-demand"
idle = 30
processes = "1-8"
"""
ALWAYS = ON_DEMAND.replace('mode = "on-demand"\nidle = 30\n', "")


def test_on_demand_app_has_the_emperor_bind_a_socket_only_nginx_reaches() -> None:
    host = server()
    session, outcome = run(host, config(host, ON_DEMAND))
    assert outcome.aborted is None and outcome.apps["alpha"].health == "passed"
    ini = host.read(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini").decode()
    assert "\nsocket =" not in ini and "chmod-socket" not in ini
    assert "idle = 30\n" in ini and "die-on-idle = true\n" in ini
    sock = "/run/fleet/_on-demand/alpha@aaaaaaaaaaaa.sock"
    assert host.read(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") == sock.encode()
    assert f"uwsgi_pass unix:{sock};" in host.read(
        "/etc/nginx/sites-enabled/fleet-alpha.conf").decode()
    assert "emperor-on-demand-extension = .socket\n" in host.read(
        "/etc/uwsgi/emperor.ini").decode()
    assert "d /run/fleet/_on-demand 0750 root www-data -\n" in host.read(
        "/etc/tmpfiles.d/fleet.conf").decode()
    # The Emperor decides on-demand when it first sees the ini: the .socket file comes first.
    deploy = next(s for s in session.steps if s.name == "deploy")
    written = [a.path for a in deploy.actions if isinstance(a, WriteFile)]
    assert written.index(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") < written.index(
        f"{VASSALS}/alpha@aaaaaaaaaaaa.ini")
    again, _ = run(host, config(host, ON_DEMAND))
    assert changed_steps(again) == []


def test_process_range_uses_cheaper() -> None:
    host = server()
    run(host, config(host, ON_DEMAND))
    ini = host.read(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini").decode()
    assert "processes = 8\n" in ini and "cheaper = 1\n" in ini
    assert "cheaper-initial = 1\n" in ini and "cheaper-algo = spare\n" in ini
    host = server()
    run(host, config(host, ALWAYS.replace('"1-8"', "3")))
    assert "cheaper" not in host.read(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini").decode()


def test_switching_mode_recreates_the_vassal_and_its_socket_file() -> None:
    host = server()
    run(host, config(host, ALWAYS))
    assert host.state(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") is None
    session, _ = run(host, config(host, ON_DEMAND))
    step = next(s for s in session.steps if s.name == "vassal")
    assert Remove(path=f"{VASSALS}/alpha@aaaaaaaaaaaa.ini",
                  why="restarted as mode = on-demand") in step.actions
    assert host.state(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") is not None
    run(host, config(host, ALWAYS))
    assert host.state(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") is None
    assert "\nsocket = /run/fleet/alpha/aaaaaaaaaaaa.sock" in host.read(
        f"{VASSALS}/alpha@aaaaaaaaaaaa.ini").decode()


def test_socket_file_of_a_retired_release_is_swept() -> None:
    host = server()
    run(host, config(host, ON_DEMAND))
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}
    run(host, config(host, ON_DEMAND))
    assert host.state(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini") is None
    run(host, config(host, ON_DEMAND))
    assert host.state(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket") is None
    assert host.state(f"{VASSALS}/alpha@bbbbbbbbbbbb.ini.socket") is not None


@pytest.mark.parametrize(("entry", "socket_file", "expected"), [
    ({"id": "alpha@aaaaaaaaaaaa.ini", "pid": 0}, True, "sleeping"),
    (None, True, "sleeping"),
    ({"id": "alpha@aaaaaaaaaaaa.ini", "pid": 0}, False, "starting"),
    ({"id": "alpha@aaaaaaaaaaaa.ini", "pid": 42}, True, "starting"),  # waking up
])
def test_status_of_an_on_demand_vassal_without_workers(entry, socket_file, expected) -> None:
    host = server()
    run(host, config(host, ON_DEMAND))
    if not socket_file:
        host.remove(f"{VASSALS}/alpha@aaaaaaaaaaaa.ini.socket")
    emperor = {"vassals": [entry] if entry else [], "blacklist": []}
    assert vassal_status(host, "alpha@aaaaaaaaaaaa.ini", emperor).state == expected


def test_status_leaves_a_sleeping_app_asleep(monkeypatch: pytest.MonkeyPatch) -> None:
    host = server()
    cfg = config(host, ON_DEMAND)
    run(host, cfg)

    def no_probe(*_args, **_kwargs):
        raise AssertionError("a probe through nginx would wake the app")

    monkeypatch.setattr(status_mod, "http_get", no_probe)
    emperor = {"vassals": [{"id": "alpha@aaaaaaaaaaaa.ini", "pid": 0}], "blacklist": []}
    result = app_status(host, cfg, "alpha", emperor)
    assert (result.state, result.health, result.problem) == ("sleeping", "sleeping", None)


@pytest.mark.parametrize("emperor, probed", [
    ({"vassals": [{"id": "alpha@aaaaaaaaaaaa.ini", "pid": 0}], "blacklist": []}, False),
    ({"vassals": [], "blacklist": []}, False),  # asleep and not yet listed
    ({"vassals": [{"id": "alpha@aaaaaaaaaaaa.ini", "pid": 42}], "blacklist": []}, True),
    (None, True),  # the Emperor's stats unreadable: asleep or failing cannot be told
    ({"vassals": [], "blacklist": [{"id": "alpha@aaaaaaaaaaaa.ini", "attempt": 3}]},
     True),  # throttled after failed starts
])
def test_apply_leaves_an_unchanged_sleeping_app_asleep(
        healthy: list[str], monkeypatch: pytest.MonkeyPatch, emperor, probed: bool) -> None:
    host = server()
    run(host, config(host, ON_DEMAND))
    assert healthy == ["alpha"]  # the first deploy is checked through nginx
    monkeypatch.setattr(apply_mod, "read_emperor", lambda *_a, **_k: emperor)
    session, outcome = run(host, config(host, ON_DEMAND))
    assert changed_steps(session) == []
    assert healthy == (["alpha", "alpha"] if probed else ["alpha"])
    assert outcome.apps["alpha"].health == ("passed" if probed else "sleeping")
    step = next(s for s in session.steps if s.name == "health" and s.app == "alpha")
    assert (step.notes == ["asleep (on demand) and unchanged: not woken"]) is not probed


def deployed_asleep(monkeypatch: pytest.MonkeyPatch):
    """A host with alpha deployed on demand, and the Emperor saying it sleeps."""
    host = server()
    run(host, config(host, ON_DEMAND))
    asleep = {"vassals": [{"id": "alpha@aaaaaaaaaaaa.ini", "pid": 0}], "blacklist": []}
    monkeypatch.setattr(apply_mod, "read_emperor", lambda *_a, **_k: asleep)
    return host


def test_apply_probes_a_sleeping_app_when_the_run_changed_it_or_the_emperor(
        healthy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    host = deployed_asleep(monkeypatch)
    # The app's own files changed (a new environment variable): probe it.
    _, outcome = run(host, config(host, ON_DEMAND + '[apps.alpha.env]\nMODE = "x"\n'))
    assert outcome.apps["alpha"].health == "passed" and healthy == ["alpha", "alpha"]
    # A server-wide change that may change how it serves (the Emperor's config): probe it.
    host.write("/etc/uwsgi/emperor.ini", b"drifted\n", 0o644, "root", "root")
    _, outcome = run(host, config(host, ON_DEMAND + '[apps.alpha.env]\nMODE = "x"\n'))
    assert outcome.apps["alpha"].health == "passed" and healthy == ["alpha"] * 3


def test_adding_another_app_leaves_a_sleeping_app_asleep(
        healthy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    host = deployed_asleep(monkeypatch)
    more = ON_DEMAND + '[apps.beta]\nrepo = "git://remote/beta.git"\ndomains = ["beta.test"]\n'
    session, outcome = run(host, config(host, more))
    assert outcome.apps["beta"].health == "passed" and outcome.apps["alpha"].health == "sleeping"
    assert healthy == ["alpha", "beta"], changed_steps(session)


def test_apply_probes_a_sleeping_app_whose_socket_directory_was_recreated(
        healthy: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    host = deployed_asleep(monkeypatch)
    host.remove("/run/fleet/_on-demand")
    session, outcome = run(host, config(host, ON_DEMAND))
    assert "runtime directories" in changed_steps(session)
    assert outcome.apps["alpha"].health == "passed" and healthy == ["alpha", "alpha"]

"""Which app servers a front keeps out of rotation: drain, undrain, render, and the stored
state (fleet.server.rotation, fleet.converge.front.rotate) on an in-memory front."""

from __future__ import annotations

import contextlib
import json

import pytest

from fleet.config.settings import FrontApp, HealthConfig
from fleet.config.store import desired_state
from fleet.converge import front as front_mod
from fleet.converge.front import front_file, rotate
from fleet.host.session import Session
from fleet.server.rotation import DRAINED_FILE, current, drain, marked_down, undrain
from fleet.server.status import front_status
from tests.unit.fakehost import FakeHost
from tests.unit.support import Quiet

A, B = "10.0.0.11:80", "10.0.0.12:80"
BLOG = FrontApp("blog", ("blog.example.com",), (A, B), HealthConfig(path="/health"))
SHOP = FrontApp("shop", ("shop.example.com",), (B,))
FRONT = (BLOG, SHOP)
SERVER_TOML = f"""
[front.apps.blog]
domains = ["blog.example.com"]
upstreams = ["{A}", "{B}"]
health = {{ path = "/health" }}

[front.apps.shop]
domains = ["shop.example.com"]
upstreams = ["{B}"]
"""


def test_drain_marks_a_server_down_but_never_the_last_one_of_an_app() -> None:
    drained: dict[str, set[str]] = {}
    changes = drain(FRONT, drained, B, [])
    assert [(c.app, c.state) for c in changes] == [("blog", "drained"), ("shop", "kept")]
    assert drained == {"blog": {B}, "shop": set()}
    again = drain(FRONT, drained, A, ["blog"])
    assert again[0].state == "kept" and again[0].detail == "it is the only server left in " \
                                                           "rotation"


def test_drain_names_apps_it_does_not_balance() -> None:
    changes = drain(FRONT, {}, A, ["blog", "shop", "new"])
    assert [(c.app, c.state) for c in changes] == [
        ("blog", "drained"), ("shop", "skipped"), ("new", "skipped")]
    assert changes[2].detail == "not balanced by this front"


def test_undrain_puts_back_only_what_passes_the_check() -> None:
    drained = {"blog": {A}}
    failing = undrain(FRONT, drained, A, [], lambda app, up: "HTTP 500")
    assert failing[0].state == "kept" and failing[0].detail == "health check failed: HTTP 500"
    assert drained == {"blog": {A}}
    checked: list[tuple[str, str]] = []
    passing = undrain(FRONT, drained, A, [], lambda app, up: checked.append((app.name, up)))
    assert [(c.app, c.state) for c in passing] == [("blog", "restored")]
    assert drained == {"blog": set()} and checked == [("blog", A)]


def test_marks_of_servers_no_longer_listed_are_dropped_and_all_down_means_none() -> None:
    assert current({"blog": {A, "10.9.9.9:80"}, "gone": {A}}, FRONT) == {"blog": {A}}
    assert marked_down(BLOG, {"blog": {A}}) == {A}
    assert marked_down(BLOG, {"blog": {A, B}}) == set()  # never a front with no server at all


def front_host() -> FakeHost:
    host = FakeHost(active={"nginx"}, enabled={"nginx"})
    for path in ("/etc/fleet", "/var/lib/fleet"):
        host.mkdir(path, 0o755, "root", "root")
    host.write("/etc/fleet/fleet.toml", SERVER_TOML.encode(), 0o600, "root", "root")
    return host


def test_rotate_renders_down_stores_state_and_reloads_nginx(monkeypatch) -> None:
    monkeypatch.setattr(front_mod, "worker_pids", lambda _host: {123})
    waited: list[set[int]] = []
    monkeypatch.setattr(front_mod, "wait_workers_gone",
                        lambda _host, pids: waited.append(pids) or True)
    host = front_host()
    config = desired_state(host, None, None).config
    changes = rotate(config, Session(host, Quiet()), lambda d: drain(config.front, d, A, []))
    assert [(c.app, c.state) for c in changes] == [("blog", "drained")]
    site = host.read(front_file("blog")).decode()
    assert f"server {A} max_fails=1 fail_timeout=5s down;" in site
    assert f"server {B} max_fails=1 fail_timeout=5s;" in site
    assert json.loads(host.read(DRAINED_FILE)) == {"blog": [A]}
    assert ["systemctl", "reload", "nginx"] in host.commands and waited == [{123}]
    # Putting it back renders the file as an apply would with nothing drained.
    rotate(config, Session(host, Quiet()), lambda d: undrain(config.front, d, A, [], None))
    assert " down;" not in host.read(front_file("blog")).decode()
    assert json.loads(host.read(DRAINED_FILE)) == {}


def test_an_apply_keeps_a_drained_server_down(monkeypatch) -> None:
    host = front_host()
    host.write(DRAINED_FILE, json.dumps({"blog": [B]}).encode(), 0o644, "root", "root")
    config = desired_state(host, None, None).config
    front_mod.converge_front(config, Session(host, Quiet()), {})
    assert f"server {B} max_fails=1 fail_timeout=5s down;" in host.read(
        front_file("blog")).decode()
    assert " down" not in host.read(front_file("shop")).decode()


def test_status_of_a_front_lists_servers_in_and_out_of_rotation() -> None:
    host = front_host()
    host.write(DRAINED_FILE, json.dumps({"blog": [A], "shop": [B]}).encode(), 0o644, "root",
               "root")
    config = desired_state(host, None, None).config
    assert front_status(host, config) == {
        "blog": {"domains": ["blog.example.com"], "in": [B], "out": [A]},
        "shop": {"domains": ["shop.example.com"], "in": [B], "out": []},  # its only server
    }


def test_drain_arguments_are_checked_and_a_non_front_is_left_untouched(monkeypatch,
                                                                        capsys) -> None:
    from fleet.cli import app as cli
    from fleet.cli import rotation as rotation_cmd
    from fleet.errors import ConfigError

    assert rotation_cmd.as_upstream("10.0.0.11") == A
    assert rotation_cmd.as_upstream("[fd00::1]:8080") == "[fd00::1]:8080"
    for bad, problem in (("a b", "is not ADDRESS or ADDRESS:PORT"),
                         ("10.0.0.1:99999", "the port must be between 1 and 65535")):
        with pytest.raises(ConfigError, match=problem):
            rotation_cmd.as_upstream(bad)
    host = FakeHost()  # an app server (or a bare one): no [front] table
    monkeypatch.setattr(rotation_cmd, "local_host", lambda: host)
    monkeypatch.setattr(rotation_cmd, "require_root", lambda: None)
    monkeypatch.setattr("fleet.cli.basics.run_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr("sys.argv", ["fleet", "drain", "10.0.0.11", "--json"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 0 and json.loads(capsys.readouterr().out)["apps"] == {}
    assert host.read(DRAINED_FILE) is None and host.commands == []

"""Prefixes and TCP sockets: validation, the nginx files of apps sharing a domain, vassal
settings, port conflicts, and TCP releases that must free their port first."""

from __future__ import annotations

import pytest

from fleet.config.store import desired_state
from fleet.converge import deploy as deploy_mod
from fleet.errors import ConfigError, FleetError
from fleet.host.actions import Remove, WriteFile
from fleet.host.session import Status
from fleet.server.ports import check_ports, parse_listeners
from tests.unit.fakehost import Entry, FakeHost
from tests.unit.support import (
    SHA_A1,
    SHA_A2,
    changed_steps,
    run,
    server,
)

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits

SITE = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["site.test", "www.site.test"]
static = { "/static" = "static" }
[apps.beta]
repo = "git://remote/beta.git"
domains = ["www.site.test", "site.test"]
prefix = "/blog/"
static = { "/static" = "static" }
[apps.beta.health]
path = "/health"
[apps.gamma]
repo = "git://remote/alpha.git"
domains = ["site.test", "www.site.test"]
prefix = "/shop"
socket = "tcp:127.0.0.1:9301"
"""
LOCATIONS = "/etc/nginx/fleet/locations/site.test"
TCP_HEADER = "  sl  local_address rem_address   st\n"


def parse(text: str, host: FakeHost | None = None):
    return desired_state(host or FakeHost(), "f.toml", text).config


def read(host: FakeHost, path: str) -> str:
    data = host.read(path)
    assert data is not None, f"{path} missing"
    return data.decode()


@pytest.mark.parametrize("prefix, expected", [("/", "/"), ("/blog", "/blog"),
                                              ("/blog/", "/blog"), ("/a/b-c.d", "/a/b-c.d")])
def test_prefix_is_normalized(prefix: str, expected: str) -> None:
    text = f"[apps.a]\nrepo = 'x'\ndomains = ['a.test']\nprefix = '{prefix}'\n"
    assert parse(text).apps[0].prefix == expected


@pytest.mark.parametrize("key, value, message", [
    ("prefix", "blog", "apps.a.prefix: 'blog' must be '/' or a URL path"),
    ("prefix", "/a//b", "apps.a.prefix: '/a//b' must be '/'"),
    ("prefix", "/a/../b", "apps.a.prefix: '/a/../b' must be '/'"),
    ("prefix", "/a b", "apps.a.prefix: '/a b' must be '/'"),
    ("socket", "tcp:localhost:9000", "apps.a.socket: 'tcp:localhost:9000' must be"),
    ("socket", "tcp:300.1.1.1:9000", "apps.a.socket: '300.1.1.1' is not an IPv4 address"),
    ("socket", "tcp:127.0.0.1:70000", "apps.a.socket: port 70000 is not between"),
    ("socket", "tcp:0.0.0.0:80", "apps.a.socket: port 80 is nginx's"),
    ("socket", "udp", "apps.a.socket: 'udp' must be"),
])
def test_bad_prefix_or_socket_names_file_and_key(key: str, value: str, message: str) -> None:
    text = f"[apps.a]\nrepo = 'x'\ndomains = ['a.test']\n{key} = '{value}'\n"
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(f"f.toml: {message}"), caught.value
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("b_keys, message", [
    ("domains = ['s.test']\nprefix = '/x/'", "apps.b.prefix: 's.test' at /x is already used"),
    ("domains = ['s.test']\nstatic = { '/x' = 'st' }", "apps.b.static: 's.test' at /x"),
    ("domains = ['s.test', 'o.test']\nprefix = '/y'",
     "apps.b.domains: shares 's.test' with app 'a', so it must list the same domains"),
    ("domains = ['o.test']\nsocket = 'tcp:0.0.0.0:9001'",
     "apps.b.socket: tcp:0.0.0.0:9001 overlaps app 'a'"),
])
def test_conflicts_between_apps_are_input_errors(b_keys: str, message: str) -> None:
    text = ("[apps.a]\nrepo = 'x'\ndomains = ['s.test']\nprefix = '/x'\n"
            "socket = 'tcp:127.0.0.1:9001'\n"
            f"[apps.b]\nrepo = 'y'\n{b_keys}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse(text)


def test_same_port_on_different_addresses_is_allowed() -> None:
    text = ("[apps.a]\nrepo = 'x'\ndomains = ['a.test']\nsocket = 'tcp:127.0.0.1:9001'\n"
            "[apps.b]\nrepo = 'y'\ndomains = ['b.test']\nsocket = 'tcp:127.0.0.2:9001'\n")
    assert [a.tcp_address for a in parse(text).apps] == ["127.0.0.1:9001", "127.0.0.2:9001"]


def test_apps_sharing_a_domain_share_one_server_block() -> None:
    host = server()
    _session, outcome = run(host, parse(SITE, host))
    assert outcome.aborted is None and not any(r.failed for r in outcome.apps.values())
    holder = read(host, "/etc/nginx/sites-enabled/fleet-alpha.conf")
    assert "server_name site.test www.site.test;" in holder
    assert f"include {LOCATIONS}/*.conf;" in holder and "location / {" in holder
    assert "location /static/ {" in holder
    assert host.state("/etc/nginx/sites-enabled/fleet-beta.conf") is None
    assert host.state("/etc/nginx/sites-enabled/fleet-gamma.conf") is None
    blog = read(host, f"{LOCATIONS}/beta.conf")
    assert "server {" not in blog and "server_name" not in blog
    assert "location /blog/ {" in blog and "location = /blog {" in blog
    assert "return 301 /blog/$is_args$args;" in blog
    assert "location /blog/static/ {" in blog
    assert blog.count('set $fleet_site "beta@cccccccccccc";') == 3  # static, redirect, app
    assert "uwsgi_pass unix:/run/fleet/beta/cccccccccccc.sock;" in blog
    shop = read(host, f"{LOCATIONS}/gamma.conf")
    assert "uwsgi_pass 127.0.0.1:9301;" in shop and "location /shop/ {" in shop
    vassal = read(host, "/etc/uwsgi/vassals/beta@cccccccccccc.ini")
    assert "mount = /blog=wsgi:app\nmanage-script-name = true\n" in vassal
    assert "\nmodule =" not in vassal
    tcp = read(host, "/etc/uwsgi/vassals/gamma@aaaaaaaaaaaa.ini")
    assert "\nsocket = 127.0.0.1:9301\n" in tcp and "chown-socket" not in tcp
    # any local user reaches a TCP socket: uWSGI's magic variables are refused there
    assert "\nroute-if-not = empty:${UWSGI_FILE} break:403 Forbidden\n" in tcp
    assert tcp.count("route-if-not = empty:${UWSGI_") == 11
    assert "route-if-not" not in root_vassal(host)
    root = read(host, "/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini")
    assert "\nmodule = wsgi:app\n" in root and "mount" not in root
    host.commands.clear()
    again, _ = run(host, parse(SITE, host))
    assert changed_steps(again) == []


def test_health_checks_go_under_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.host.client import Reply
    from fleet.server import health

    asked: list[str] = []

    def fake_probe(host_header: str, path: str, **_kwargs):
        asked.append(f"{host_header}{path}")
        return Reply(200, {"x-fleet-site": "beta@x"}, "")

    monkeypatch.setattr(health, "http_get", fake_probe)
    beta = parse(SITE).app("beta")
    assert beta is not None
    assert health.check_app(beta, "beta@x", timeout=1).passed
    assert asked == ["www.site.test/blog/health"]  # its first domain


def test_moving_a_prefix_changes_only_that_app() -> None:
    host = server()
    run(host, parse(SITE, host))
    session, _ = run(host, parse(SITE.replace('prefix = "/blog/"', 'prefix = "/journal"'),
                                 host))
    assert changed_steps(session) == ["vassal beta", "nginx site beta", "nginx"]
    assert "location /journal/ {" in read(host, f"{LOCATIONS}/beta.conf")


def test_app_leaving_a_shared_domain_gets_its_own_server_block() -> None:
    host = server()
    run(host, parse(SITE, host))
    text = SITE.replace('domains = ["www.site.test", "site.test"]\nprefix = "/blog/"',
                        'domains = ["blog.test"]')
    run(host, parse(text, host))
    assert host.state(f"{LOCATIONS}/beta.conf") is None
    assert "server_name blog.test;" in read(host, "/etc/nginx/sites-enabled/fleet-beta.conf")


def test_bad_locations_file_is_reverted_and_blamed_on_its_app() -> None:
    host = server()
    run(host, parse(SITE, host))
    old = host.read(f"{LOCATIONS}/beta.conf")
    host.nginx_ok = False
    _, outcome = run(host, parse(SITE.replace('prefix = "/blog/"', 'prefix = "/b"'), host))
    assert outcome.apps["beta"].failed and "nginx rejected" in (outcome.apps["beta"].error or "")
    assert host.read(f"{LOCATIONS}/beta.conf") == old
    assert not outcome.apps["alpha"].failed and not outcome.apps["gamma"].failed


def test_removed_guest_app_loses_its_locations() -> None:
    host = server()
    run(host, parse(SITE, host))
    host.remove("/etc/fleet/apps/beta.toml")
    text = SITE[: SITE.index("[apps.beta]")] + SITE[SITE.index("[apps.gamma]"):]
    session, _ = run(host, desired_state(host, "f.toml", text).config)
    assert host.state(f"{LOCATIONS}/beta.conf") is None
    assert "remove stale apps" in changed_steps(session)


# ----------------------------------------------------------------------------- ports

PROC_TCP = TCP_HEADER + (
    "   0: 0100007F:2455 00000000:0000 0A 0 0 0 0 0 1\n"   # 127.0.0.1:9301 listening
    "   1: 00000000:1F90 00000000:0000 0A 0 0 0 0 0 1\n"   # 0.0.0.0:8080 listening
    "   2: 0100007F:2456 0100007F:9999 01 0 0 0 0 0 1\n")  # 127.0.0.1:9302 connected only
PROC_TCP6 = TCP_HEADER + (
    "   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A\n"
    "   1: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A\n")


def test_listeners_are_read_from_proc() -> None:
    assert parse_listeners(PROC_TCP) == {"127.0.0.1:9301", "0.0.0.0:8080"}
    assert parse_listeners(PROC_TCP6, ipv6=True) == {"0.0.0.0:8081", "127.0.0.1:8082"}


@pytest.mark.parametrize("address, taken", [
    ("127.0.0.1:9301", True), ("127.0.0.1:9302", False), ("127.0.0.1:8080", True),
    ("10.0.0.1:8081", True), ("0.0.0.0:9301", True), ("127.0.0.2:9301", False),
    ("127.0.0.1:8082", True)])
def test_port_taken_on_the_server_is_refused(address: str, taken: bool) -> None:
    host = FakeHost()
    host.files["/proc/net/tcp"] = Entry("file", PROC_TCP.encode())
    host.files["/proc/net/tcp6"] = Entry("file", PROC_TCP6.encode())
    config = parse(f"[apps.a]\nrepo = 'x'\ndomains = ['a.test']\nsocket = 'tcp:{address}'\n")
    if taken:
        with pytest.raises(ConfigError, match=f"apps/a.toml: socket: tcp:{address} is "
                                              "already in use"):
            check_ports(host, config)
    else:
        check_ports(host, config)


def test_port_held_by_the_apps_own_vassal_is_fine() -> None:
    host = server()
    config = parse(SITE, host)
    run(host, config)
    host.files["/proc/net/tcp"] = Entry("file", PROC_TCP.encode())
    check_ports(host, config)  # gamma's own vassal binds 127.0.0.1:9301
    other = parse(SITE.replace("[apps.gamma]", "[apps.delta]"), host)
    host.remove("/etc/fleet/apps/gamma.toml")
    with pytest.raises(ConfigError, match="already in use"):
        check_ports(host, other)


# ----------------------------------------------------------------------------- TCP releases


def new_commit(host: FakeHost) -> None:
    host.commits["git://remote/alpha.git"] = {"HEAD": SHA_A2, "main": SHA_A2}


def test_tcp_release_stops_the_live_vassal_before_starting() -> None:
    host = server()
    run(host, parse(SITE, host))
    new_commit(host)
    session, outcome = run(host, parse(SITE, host), only={"gamma"})
    assert not outcome.apps["gamma"].failed
    step = next(s for s in session.steps if s.name == "deploy" and s.app == "gamma")
    paths = [(type(a).__name__, a.path) for a in step.actions
             if isinstance(a, (Remove, WriteFile)) and "vassals" in a.path]
    assert paths == [("Remove", "/etc/uwsgi/vassals/gamma@aaaaaaaaaaaa.ini"),
                     ("WriteFile", "/etc/uwsgi/vassals/gamma@bbbbbbbbbbbb.ini")]
    assert host.state("/etc/uwsgi/vassals/gamma@aaaaaaaaaaaa.ini") is None


def test_failed_tcp_release_puts_the_previous_vassal_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = server()
    run(host, parse(SITE, host))
    old = host.read("/etc/uwsgi/vassals/gamma@aaaaaaaaaaaa.ini")
    new_commit(host)

    def failing_gate(*_args, **_kwargs) -> str:
        raise FleetError("release bbbbbbbbbbbb failed its health check")

    monkeypatch.setattr(deploy_mod, "gate", failing_gate)
    session, outcome = run(host, parse(SITE, host), only={"gamma"})
    assert outcome.apps["gamma"].failed
    assert host.read("/etc/uwsgi/vassals/gamma@aaaaaaaaaaaa.ini") == old
    assert host.state("/etc/uwsgi/vassals/gamma@bbbbbbbbbbbb.ini") is None
    assert any(s.status is Status.FAILED for s in session.steps)


def test_unix_release_still_starts_beside_the_live_one() -> None:
    host = server()
    run(host, parse(SITE, host))
    new_commit(host)
    session, _ = run(host, parse(SITE, host), only={"alpha"})
    step = next(s for s in session.steps if s.name == "deploy" and s.app == "alpha")
    assert not [a for a in step.actions if isinstance(a, Remove)]
    assert SHA_A1  # the live release (aaaa...) was retired only after nginx switched


def root_vassal(host) -> str:
    return read(host, "/etc/uwsgi/vassals/alpha@aaaaaaaaaaaa.ini")

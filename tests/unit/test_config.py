"""Config validation: every bad input is one line naming the file, the key and the problem."""

from __future__ import annotations

import re

import pytest

from fleet.config.store import desired_state
from fleet.errors import EXIT_INVALID, ConfigError
from tests.unit.fakehost import FakeHost
from tests.unit.support import error_of, parse

GOOD_APP = 'repo = "git://example/a.git"\ndomains = ["a.example.com"]\n'




@pytest.mark.parametrize(("text", "expected"), [
    ("[server\n", "f.toml: invalid TOML"),
    ("[serverr]\n", "serverr: unknown key (did you mean 'server'?)"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesess = 3\n",
     "apps.a.procesess: unknown key (did you mean 'processes'?)"),
    ("[apps.a]\ndomains = ['a.com']\n", "apps.a.repo: required key is missing"),
    ("[apps.a]\nrepo = 'x'\n", "apps.a.domains: required key is missing"),
    ("[apps.a]\nrepo = 'x'\ndomains = 'a.com'\n", "apps.a.domains: expected an array, got string"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesses = '2'\n",
     "apps.a.processes: expected an integer or a range such as \"1-8\", got '2'"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesses = true\n",
     "apps.a.processes: expected an integer or a string, got boolean"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesses = '8-1'\n",
     "apps.a.processes: range '8-1' must be MIN-MAX with 1 <= MIN < MAX <= 256"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesses = '0-4'\n",
     "apps.a.processes: range '0-4'"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nmode = 'lazy'\n",
     "apps.a.mode: must be one of always, on-demand, got 'lazy'"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nidle = 60\n",
     "apps.a.idle: only applies with mode = \"on-demand\""),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nmode = 'on-demand'\nidle = 0\n",
     "apps.a.idle: must be between 1 and 86400"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nprocesses = 0\n",
     "apps.a.processes: must be between 1 and 256"),
    ("[apps.Alpha]\nrepo = 'x'\ndomains = ['a.com']\n", "invalid app name 'Alpha'"),
    ('[apps."../x"]\nrepo = "x"\ndomains = ["a.com"]\n', "invalid app name '../x'"),
    (f"[apps.{'a' * 33}]\nrepo = 'x'\ndomains = ['a.com']\n", "invalid app name"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['-bad.com']\n",
     "apps.a.domains[0]: '-bad.com' is not a valid lower-case domain name"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a b.com']\n", "apps.a.domains[0]"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\npath = '../other'\n",
     "apps.a.path: '../other' must be a relative path inside the app"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\npath = '/etc'\n", "apps.a.path"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\n[apps.a.static]\n'/s' = '../../etc'\n",
     "apps.a.static./s: '../../etc' must be a relative path"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nmodule = 'wsgi app'\n", "apps.a.module"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\n[apps.a.env]\n'1X' = 'v'\n",
     "apps.a.env.1X: is not a valid environment variable name"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\n[apps.a.env]\nX = \"a\\nb\"\n",
     "apps.a.env.X: must be a single line"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\n[apps.a.health]\npath = 'x'\n",
     "apps.a.health.path: 'x' must start with '/'"),
    ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\nuser = 'root'\n",
     "apps.a.user: apps never run as root"),
    ("[server]\npackages = ['Bad Name']\n", "server.packages[0]"),
    ("[server]\nclient_max_body_size = 'lots'\n", "server.client_max_body_size"),
    ("[server.pip]\ncert = 'relative.pem'\n", "server.pip.cert: must be an absolute path"),
    ("[server]\naccept_from = '10.0.0.10'\n", "server.accept_from: expected an array, got string"),
    ("[server]\naccept_from = [10]\n", "server.accept_from[0]: expected a string, got integer"),
    ("[server]\naccept_from = ['10.0.0.10', '10.0.0.300']\n",
     "server.accept_from[1]: '10.0.0.300' is not an IPv4 or IPv6 address or network"),
    ("[server]\naccept_from = ['lb.example.com']\n",
     "server.accept_from[0]: 'lb.example.com' is not an IPv4 or IPv6 address"),
    ("[server]\naccept_from = ['10.0.0.0/33']\n", "server.accept_from[0]: '10.0.0.0/33' is not"),
    ("[server]\naccept_from = ['10.0.0.5/24']\n",
     "server.accept_from[0]: '10.0.0.5/24' has host bits set: did you mean \"10.0.0.0/24\"?"),
    ("[server]\naccept_from = ['fe80::1%eth0']\n",
     "server.accept_from[0]: 'fe80::1%eth0': nginx takes no IPv6 zone index"),
    ("[server]\naccept_form = []\n",
     "server.accept_form: unknown key (did you mean 'accept_from'?)"),
    ("[emperor]\nthunder_lock = 'yes'\n", "emperor.thunder_lock: expected a boolean"),
])
def test_invalid_input_names_file_key_and_problem(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_same_domain_in_two_apps_is_refused() -> None:
    host = FakeHost()
    text = ("[apps.a]\nrepo = 'x'\ndomains = ['a.com']\n"
            "[apps.b]\nrepo = 'y'\ndomains = ['b.com', 'a.com']\n")
    message = "apps.b.domains: 'a.com' is already used by app 'a'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        desired_state(host, "f.toml", text)


def test_defaults() -> None:
    _, _, apps = parse(f"[apps.a]\n{GOOD_APP}")
    app = apps["a"]
    assert (app.module, app.processes, app.threads, app.path, app.ref) == (
        "wsgi:app", 2, 1, ".", None)
    assert app.owner == "a"
    assert app.health.path == "/" and app.health.timeout == 30
    assert app.health.accepts(200) and app.health.accepts(302) and not app.health.accepts(500)
    assert (app.mode, app.on_demand, app.idle, app.min_processes) == ("always", False, 600, None)


def test_every_omitted_key_means_the_settings_default() -> None:
    """The parser's defaults are the dataclasses' (their one home), for every section."""
    from dataclasses import replace

    from fleet.config.settings import APP_DEFAULTS, EmperorConfig, ServerConfig

    server, emperor, apps = parse(f"[server]\n[emperor]\n[apps.a]\n{GOOD_APP}")
    assert server == ServerConfig() and emperor == EmperorConfig()
    assert apps["a"] == replace(APP_DEFAULTS, name="a", repo="git://example/a.git",
                                domains=("a.example.com",))


@pytest.mark.parametrize(("line", "key"), [
    ("min_processes = 1", "apps.a.min_processes"), ("name = 'b'", "apps.a.name"),
    ("tls = { cert = '/c', key = '/k', mode = 'files' }", "apps.a.tls.mode"),
])
def test_fields_no_key_sets_are_unknown_keys(line: str, key: str) -> None:
    """Derived fields (NOT_A_KEY) are not keys: `processes = "MIN-MAX"` and `tls` set them."""
    assert error_of(f"[apps.a]\n{GOOD_APP}{line}\n").startswith(f"f.toml: {key}: unknown key")


@pytest.mark.parametrize(("module", "target"), [
    ("wsgi:app", "wsgi:app"), ("blog:create_app()", "blog:create_app()"),
    ("wsgi", "wsgi:application"),  # uWSGI's default callable, which mount does not assume
])
def test_mount_target_names_a_callable(module: str, target: str) -> None:
    from dataclasses import replace

    from fleet.config.settings import APP_DEFAULTS

    assert replace(APP_DEFAULTS, module=module).mount_target == target


def test_accept_from_defaults_to_anyone_and_is_normalized() -> None:
    server, _, _ = parse("[server]\n")
    assert server is not None and server.accept_from == ()
    server, _, _ = parse("[server]\naccept_from = ['10.0.0.10', '10.0.0.10/32', '10.0.1.0/24', "
                         "'FD00:0::10', '0.0.0.0/0', '::/0']\n")
    assert server is not None
    assert server.accept_from == ("10.0.0.10", "10.0.1.0/24", "fd00::10", "0.0.0.0/0", "::/0")


@pytest.mark.parametrize(("server", "front", "message"), [
    ("accept_from = ['10.0.0.5/24']", "10.0.0.10",
     "server.accept_from[0]: '10.0.0.5/24' has host bits set: did you mean \"10.0.0.0/24\"?"),
    ("", "lb.invalid", "servers.lb.address: cannot restrict app servers to this front: "
                       "'lb.invalid' does not resolve on this machine (no such name)"),
])
def test_push_refuses_bad_access_settings_with_exit_2_before_any_ssh(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path,
        server: str, front: str, message: str) -> None:
    import socket

    from fleet.cli import app as cli
    from fleet.cli import push as push_cmd

    def no_ssh(*_args, **_kwargs):
        raise AssertionError("ssh must not start")

    def no_dns(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "no such name")

    monkeypatch.setattr(push_cmd, "OpenSSH", no_ssh)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    target = tmp_path / "fleet.toml"
    target.write_text(f"[server]\n{server}\n[servers.app1]\naddress = '10.0.0.11'\n"
                      f"[servers.lb]\naddress = '{front}'\nrole = 'front'\n[apps.a]\n{GOOD_APP}")
    monkeypatch.setattr("sys.argv", ["fleet", "push", str(target), "--pyz", str(target)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    assert exc.value.code == EXIT_INVALID and out == ""
    assert err.startswith(f"fleet: {target}: {message}") and len(err.strip().splitlines()) == 1


def test_accept_from_survives_the_stored_round_trip() -> None:
    from fleet.config.store import plan_store
    from fleet.host.executor import perform

    host = FakeHost()
    host.mkdir("/etc/fleet", 0o700, "root", "root")
    text = ("[server]\nclient_max_body_size = '20m'\naccept_from = ['10.0.0.10', 'fd00::/64']\n"
            f"[apps.a]\n{GOOD_APP}")
    for action in plan_store(host, desired_state(host, "f.toml", text)):
        perform(host, action)
    assert "accept_from" in host.read("/etc/fleet/fleet.toml").decode()
    stored = desired_state(host, None, None).config.server
    assert stored.accept_from == ("10.0.0.10", "fd00::/64")
    assert stored.client_max_body_size == "20m"
    # A later file without [server] keeps it; one with [server] replaces it.
    later = desired_state(host, "f.toml", f"[apps.a]\n{GOOD_APP}").config.server
    assert later.accept_from == ("10.0.0.10", "fd00::/64")
    cleared = desired_state(host, "f.toml", f"[server]\n[apps.a]\n{GOOD_APP}").config.server
    assert cleared.accept_from == ()


def test_on_demand_and_process_range() -> None:
    _, _, apps = parse(f"[apps.a]\n{GOOD_APP}mode = 'on-demand'\nidle = 30\n"
                       "processes = '1-8'\n")
    app = apps["a"]
    assert (app.on_demand, app.idle, app.min_processes, app.processes) == (True, 30, 1, 8)


def test_full_example_parses() -> None:
    server, emperor, apps = parse("""
[server]
packages = ["sqlite3"]
client_max_body_size = "20m"
[server.pip]
index_url = "https://pypi.example/simple"
extra_index_urls = ["https://extra.example/simple"]
cert = "/etc/ssl/corp.pem"
[emperor]
thunder_lock = false
[emperor.vassal_set]
max-requests = 1000
[apps.shop]
repo = "https://git.example/shop.git"
ref = "v1.2"
path = "src"
domains = ["shop.example.com", "www.shop.example.com"]
module = "shop:create_app()"
processes = 4
threads = 2
user = "shopper"
[apps.shop.env]
SECRET_KEY = "s3cret"
[apps.shop.static]
"/static" = "shop/static"
[apps.shop.health]
path = "/healthz"
status = 200
contains = "ok"
timeout = 10
""")
    assert server is not None and server.pip.cert == "/etc/ssl/corp.pem"
    assert emperor is not None and emperor.vassal_set == (("max-requests", "1000"),)
    shop = apps["shop"]
    assert shop.owner == "shopper" and shop.env == (("SECRET_KEY", "s3cret"),)
    assert shop.static == (("/static", "shop/static"),)
    assert shop.health.accepts(200) and not shop.health.accepts(302)


def test_merge_keeps_unnamed_apps_and_prune_drops_them() -> None:
    host = FakeHost()
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    host.write("/etc/fleet/apps/old.toml", GOOD_APP.encode(), 0o600, "root", "root")
    text = "[apps.new]\nrepo = 'x'\ndomains = ['n.example.com']\n"
    kept = desired_state(host, "f.toml", text)
    assert [a.name for a in kept.config.apps] == ["new", "old"] and kept.kept == ["old"]
    pruned = desired_state(host, "f.toml", text, prune=True)
    assert [a.name for a in pruned.config.apps] == ["new"] and pruned.pruned == ["old"]


def test_broken_stored_file_names_that_file() -> None:
    host = FakeHost()
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    host.write("/etc/fleet/apps/old.toml", b"repo = 1\n", 0o600, "root", "root")
    message = "/etc/fleet/apps/old.toml: repo: expected a string"
    with pytest.raises(ConfigError, match=re.escape(message)):
        desired_state(host, None, None)

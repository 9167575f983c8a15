"""Issue 20, door controls: every key validated (one line, file and key named), rendered into
the app's nginx locations, the htpasswd copy nginx reads, and a second converge changes
nothing. End to end through nginx: tests/e2e/test_door.py."""

from __future__ import annotations

import json
import re

import pytest

from fleet.config.htpasswd import load_users, parse_users
from fleet.config.settings import AppConfig, AuthConfig, Config, EmperorConfig, ServerConfig
from fleet.converge import sites
from fleet.converge.apply import render_global
from fleet.converge.prepare import render_site
from fleet.errors import ConfigError
from fleet.host import layout
from fleet.host.executor import perform_all
from fleet.server.tls import certbot_command
from tests.unit import support as tc
from tests.unit.support import error_of, parse

pytestmark = pytest.mark.usefixtures("healthy")  # no real health checks, gates or waits


APP = "[apps.a]\nrepo = 'git://example/a.git'\ndomains = ['a.com']\n"
HASH = "$6$saltsalt$" + "x" * 86


def app_with(*lines: str) -> str:
    return APP + "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "expected"), [
    (app_with('headers = { "X-A" = "a; add_header X-B b" }'), "apps.a.headers.X-A: 'a; add"),
    (app_with('headers = { "X-A" = "$host" }'), "apps.a.headers.X-A: '$host' must be"),
    (app_with('headers = { "X-A" = "say \\"hi\\"" }'), "apps.a.headers.X-A:"),
    (app_with('headers = { "X-A" = "a}" }'), "apps.a.headers.X-A:"),
    (app_with('headers = { "X-A" = "a\\nb" }'), "apps.a.headers.X-A:"),
    (app_with('headers = { "X-A" = " padded" }'), "apps.a.headers.X-A:"),
    (app_with('headers = { "X-A" = 1 }'), "apps.a.headers.X-A: expected a string"),
    (app_with('headers = { "X A" = "v" }'), "apps.a.headers.X A: is not an HTTP header name"),
    (app_with('headers = { "X-A;" = "v" }'), "is not an HTTP header name"),
    (app_with('headers = { "X-Fleet-Site" = "v" }'), "is set by fleet itself"),
    (app_with('headers = { "x-a" = "v", "X-A" = "w" }'), "is given twice"),
    (app_with('client_max_body_size = "10m;"'), "apps.a.client_max_body_size: '10m;' is not"),
    (app_with('client_max_body_size = 10'), "apps.a.client_max_body_size: expected a string"),
    (app_with('redirect_from = ["a.com"]'), "apps.a.redirect_from[0]: 'a.com' is one of"),
    (app_with('redirect_from = ["b.com;"]'), "apps.a.redirect_from[0]: 'b.com;' is not a valid"),
    (app_with('redirect_from = ["b.com", "b.com"]'), "apps.a.redirect_from: lists the same"),
    (app_with('maintenance = "yes"'), "apps.a.maintenance: expected a boolean"),
    (app_with('maintenance_message = "a\\u0007b"'), "apps.a.maintenance_message: must be one"),
    (app_with(f'maintenance_message = "{"x" * 501}"'), "at most 500 characters"),
    (app_with('auth = { users = "shop.htpasswd" }'), "apps.a.auth.users: 'shop.htpasswd' must"),
    (app_with('auth = { users = "/etc/a;b" }'), "apps.a.auth.users: '/etc/a;b' may only use"),
    (app_with('auth = { file = "/etc/a" }'), "apps.a.auth.file: unknown key"),
    (app_with("auth = {}"), "apps.a.auth.users: required key is missing"),
    (app_with('allow = ["10.0.0.1/8"]'), "apps.a.allow[0]: '10.0.0.1/8' has host bits set"),
    (app_with('allow = ["all"]'), "apps.a.allow[0]: 'all' is not an IPv4 or IPv6"),
    (app_with('rate_limit = "10r/h"'), "apps.a.rate_limit: '10r/h' is not a rate"),
    (app_with('rate_limit = "0r/s"'), "apps.a.rate_limit: '0r/s' is not a rate"),
    (app_with('burst = 5'), "apps.a.burst: only applies with rate_limit"),
    (app_with('rate_limit = "1r/s"', "burst = -1"), "apps.a.burst: must be between 0"),
    (app_with('redirect_from = ["b.com"]') + "[apps.b]\nrepo = 'x'\ndomains = ['b.com']\n",
     "apps.a.redirect_from[0]: 'b.com' is already used by app 'b'"),
])
def test_bad_door_keys_are_one_line_naming_file_and_key(text: str, expected: str) -> None:
    if "already used" in expected:
        from fleet.config.store import desired_state
        with pytest.raises(ConfigError) as info:
            desired_state(tc.server(), "f.toml", text)
        message = str(info.value)
    else:
        message = error_of(text)
    assert expected in message, message
    assert "\n" not in message


def test_door_keys_parse_to_settings() -> None:
    _, _, apps = parse(app_with(
        'client_max_body_size = "50m"', 'headers = { "X-Frame-Options" = "DENY" }',
        'redirect_from = ["www.a.com"]', "maintenance = true",
        'maintenance_message = "Back soon"', 'auth = { users = "/etc/fleet/auth/a.htpasswd" }',
        'allow = ["10.0.0.0/8", "203.0.113.7/32"]', 'rate_limit = "10r/s"', "burst = 20"))
    a = apps["a"]
    assert a.client_max_body_size == "50m" and a.headers == (("X-Frame-Options", "DENY"),)
    assert a.redirect_from == ("www.a.com",) and a.cert_domains == ("a.com", "www.a.com")
    assert a.maintenance and a.maintenance_message == "Back soon"
    assert a.auth == AuthConfig("/etc/fleet/auth/a.htpasswd")
    assert a.allow == ("10.0.0.0/8", "203.0.113.7") and a.rate_limit == "10r/s"
    assert a.burst == 20
    plain = parse(APP)[2]["a"]
    assert (plain.headers, plain.redirect_from, plain.maintenance, plain.auth, plain.allow,
            plain.rate_limit, plain.client_max_body_size) == ((), (), False, None, (), None, None)


def site(app: AppConfig, server: ServerConfig | None = None, tls: dict | None = None,
         others: tuple[AppConfig, ...] = ()) -> str:
    cfg = Config(server or ServerConfig(), EmperorConfig(), (app, *others))
    return render_site(cfg, app, "aaaaaaaaaaaa", tls).decode()


def locations(text: str) -> dict[str, str]:
    """Each `location X {` block's body, by X (no nested blocks but `if`)."""
    found = {}
    for match in re.finditer(r"^    location ([^{]+) \{\n(.*?)^    \}\n", text, re.M | re.S):
        found.setdefault(match.group(1), match.group(2))  # the first of that name
    return found


DOOR = AppConfig(name="shop", repo="r", domains=("shop.test",), client_max_body_size="2k",
                 headers=(("X-Frame-Options", "DENY"),), maintenance=True,
                 maintenance_message='Back <soon> & "later" $host \\ {x};',
                 auth=AuthConfig("/etc/fleet/auth/shop.htpasswd"), allow=("10.0.0.0/8",),
                 rate_limit="10r/s", burst=20, static=(("/static", "static"),))


def test_every_control_is_in_each_of_the_apps_locations() -> None:
    text = site(DOOR)
    blocks = locations(text)
    for where in ("/", "/static/"):
        body = blocks[where]
        assert "client_max_body_size 2k;" in body
        assert ("allow 10.0.0.0/8;\n        allow 127.0.0.1;\n        allow ::1;\n"
                "        deny all;") in body
        assert "limit_req zone=fleet_shop burst=20 nodelay;" in body
        assert "limit_req_status 429;" in body
        assert "auth_basic $fleet_auth_realm;" in body
        assert "auth_basic_user_file /etc/nginx/fleet/auth/shop.htpasswd;" in body
        assert "error_page 503 @fleet_maintenance_shop;" in body
        assert 'if ($fleet_probe_local = "") {\n            return 503;' in body
        # add_header here drops the server block's: fleet's own is repeated.
        assert 'add_header X-Fleet-Site "$fleet_probe_reply" always;' in body
        assert 'add_header X-Frame-Options "DENY" always;' in body
        assert 'add_header Retry-After "$fleet_retry_after_shop" always;' in body
    page = blocks["@fleet_maintenance_shop"]
    assert "add_header Retry-After 120 always;" in page and "default_type text/html;" in page
    assert ("Back &#60;soon&#62; &#38; &#34;later&#34; &#36;host &#92; &#123;x&#125;&#59;"
            in page), page
    assert "ACME" not in text  # no tls: no challenge location to keep open


def test_nothing_is_rendered_for_an_app_without_controls() -> None:
    plain = AppConfig(name="plain", repo="r", domains=("plain.test",))
    text = site(plain)
    for word in ("allow ", "limit_req", "auth_basic", "error_page", "add_header Retry",
                 "client_max_body_size 2k", "301"):
        assert word not in text, word


def test_allow_is_intersected_with_accept_from_and_keeps_loopback() -> None:
    server = ServerConfig(accept_from=("10.1.0.0/16", "192.0.2.7"))
    app = AppConfig(name="a", repo="r", domains=("a.test",),
                    allow=("10.0.0.0/8", "10.1.2.3", "198.51.100.0/24", "::1"))
    assert sites.allowed(app, server) == ["10.1.0.0/16", "10.1.2.3", "127.0.0.1", "::1"]
    assert sites.allowed(app, ServerConfig()) == ["10.0.0.0/8", "10.1.2.3", "198.51.100.0/24",
                                                 "127.0.0.1", "::1"]
    outside = AppConfig(name="a", repo="r", domains=("a.test",), allow=("198.51.100.0/24",))
    assert sites.allowed(outside, server) == ["127.0.0.1", "::1"]  # nobody but loopback


def test_redirect_from_answers_301_to_the_first_domain_keeping_path_and_query() -> None:
    app = AppConfig(name="a", repo="r", domains=("shop.test", "b.test"),
                    redirect_from=("www.shop.test", "old.test"))
    text = site(app)
    block = text.split("# redirect_from")[1]
    assert "server_name www.shop.test old.test;" in block
    assert "return 301 http://shop.test$request_uri;" in block
    tls = {"cert": "/etc/ssl/a.pem", "key": "/etc/ssl/a.key", "hsts": 0, "http2_on": True}
    block = site(app, tls=tls).split("# redirect_from")[1]
    assert "listen 80;" in block and "listen 443 ssl;" in block
    assert "return 301 https://shop.test$request_uri;" in block


def test_acme_certificate_covers_the_redirected_names() -> None:
    cfg = parse(app_with('redirect_from = ["www.a.com"]', 'tls = "acme"'))
    app = cfg[2]["a"]
    config = Config(ServerConfig(), EmperorConfig(), (app,))
    argv = certbot_command(config, app, reissue=False).argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-d"] == ["a.com", "www.a.com"]
    text = site(app, tls=None).replace("\n", " ")
    assert text.count("acme-challenge") >= 2  # the redirect block answers challenges too


def test_apps_under_prefixes_carry_their_own_controls() -> None:
    home = AppConfig(name="home", repo="r", domains=("ex.test",))
    blog = AppConfig(name="blog", repo="r", domains=("ex.test",), prefix="/blog",
                     maintenance=True, headers=(("X-Blog", "1"),))
    cfg = Config(ServerConfig(), EmperorConfig(), (blog, home))
    guest = render_site(cfg, blog, "bbbbbbbbbbbb").decode()
    assert "error_page 503 @fleet_maintenance_blog;" in guest
    assert "location @fleet_maintenance_blog {" in guest
    assert 'add_header X-Blog "1" always;' in guest
    assert "503" not in render_site(cfg, home, "aaaaaaaaaaaa").decode()
    with pytest.raises(ConfigError, match="redirect_from: not supported yet"):
        from fleet.config.parse import check_across_apps
        check_across_apps("f", [home, AppConfig(name="blog", repo="r", domains=("ex.test",),
                                                prefix="/blog", redirect_from=("w.test",))])


def test_global_config_has_probe_bypass_and_one_zone_per_limited_app() -> None:
    host = tc.server()
    plain = AppConfig(name="plain", repo="r", domains=("p.test",))
    cfg = Config(ServerConfig(), EmperorConfig(), (DOOR, plain))
    text = render_global(host, cfg).decode()
    assert 'map "$realip_remote_addr $http_x_fleet_probe" $fleet_probe_local {' in text
    assert "limit_req_zone $fleet_limit_key zone=fleet_shop:1m rate=10r/s;" in text
    assert text.count("limit_req_zone") == 1
    assert 'map $status $fleet_retry_after_shop {\n    429 "1";' in text
    assert [sites.retry_after(r) for r in ("10r/s", "1r/m", "2r/m", "7r/m", "600r/m")] == [
        1, 60, 30, 9, 1]
    line = next(x for x in text.splitlines() if '"1";' in x and "~^" in x)
    pattern = re.compile(line.split('"')[1][1:])
    assert pattern.search("127.0.0.1 1") and pattern.search("::1 1")
    assert not pattern.search("192.0.2.2 1") and not pattern.search("127.0.0.1 ")


def test_htpasswd_lines_are_checked_and_the_file_must_be_root_only() -> None:
    assert parse_users("f", f"# users\n\nalice:{HASH}\nbob:$apr1$abc$def\n") == (
        ("alice", HASH), ("bob", "$apr1$abc$def"))
    for bad in ("alice", f"al ice:{HASH}", "alice:plaintext", "alice:$6$a b"):
        with pytest.raises(ConfigError) as info:
            parse_users("/etc/fleet/auth/a.htpasswd", bad + "\n")
        assert "line 1" in str(info.value) and "plaintext" not in str(info.value)
    host = tc.server()
    app = AppConfig(name="a", repo="r", domains=("a.test",),
                    auth=AuthConfig("/etc/fleet/auth/a.htpasswd"))
    with pytest.raises(ConfigError, match="no such file"):
        load_users(host, app)
    host.mkdir("/etc/fleet/auth", 0o700, "root", "root")
    host.write("/etc/fleet/auth/a.htpasswd", f"alice:{HASH}\n".encode(), 0o644, "root", "root")
    with pytest.raises(ConfigError, match="readable by nobody else"):
        load_users(host, app)


AUTHED = """
[apps.alpha]
repo = "git://remote/alpha.git"
domains = ["alpha.test"]
auth = { users = "/etc/fleet/auth/alpha.htpasswd" }
maintenance = true
rate_limit = "5r/s"
[apps.beta]
repo = "git://remote/beta.git"
domains = ["beta.test"]
"""


def test_converge_gives_nginx_a_group_readable_copy_and_then_changes_nothing() -> None:
    host = tc.server()
    host.mkdir("/etc/fleet/auth", 0o700, "root", "root")
    host.write("/etc/fleet/auth/alpha.htpasswd", f"alice:{HASH}\n".encode(), 0o600, "root",
               "root")
    session, outcome = tc.run(host, tc.config(host, AUTHED))
    assert outcome.aborted is None and not any(r.failed for r in outcome.apps.values())
    copy = host.files["/etc/nginx/fleet/auth/alpha.htpasswd"]
    assert (copy.mode, copy.owner, copy.group) == (0o640, "root", layout.NGINX_USER)
    assert copy.content == f"alice:{HASH}\n".encode()
    folder = host.files[layout.NGINX_AUTH_DIR]
    assert (folder.mode, folder.group) == (0o750, layout.NGINX_USER)
    assert "zone=fleet_alpha" in host.read(layout.NGINX_GLOBAL).decode()
    session, _ = tc.run(host, tc.config(host, AUTHED))
    assert tc.changed_steps(session) == []
    # auth off: nginx's copy goes in the same tested change
    session, _ = tc.run(host, tc.config(host, AUTHED.replace(
        'auth = { users = "/etc/fleet/auth/alpha.htpasswd" }\n', "")))
    assert "/etc/nginx/fleet/auth/alpha.htpasswd" not in host.files
    assert "nginx site alpha" in tc.changed_steps(session)


@pytest.mark.parametrize(("live", "changed", "expected"), [
    (None, False, "aaaaaaaaaaaa"),  # first deploy
    ("bbbbbbbbbbbb", True, "aaaaaaaaaaaa"),  # a new commit: its own release
    ("aaaaaaaaaaaa", False, "aaaaaaaaaaaa"),  # same commit, same env: in place
    ("aaaaaaaaaaaa", True, "aaaaaaaaaaaa-b"),  # new env: the twin, beside the live one
    ("aaaaaaaaaaaa-b", True, "aaaaaaaaaaaa"),  # and back
    ("aaaaaaaaaaaa-b", False, "aaaaaaaaaaaa-b"),
])
def test_a_new_environment_is_served_by_the_twin_release(live, changed, expected) -> None:
    from fleet.server.release import twin_release
    assert twin_release("a" * 40, live, changed) == expected


def test_env_change_twins_then_converges_to_nothing_and_twins_back() -> None:
    host = tc.server()
    tc.run(host, tc.config(host))
    for value, release in (("one", "cccccccccccc-b"), ("two", "cccccccccccc")):
        text = tc.CONFIG.replace("hunter2", value)
        session, outcome = tc.run(host, tc.config(host, text))
        assert outcome.apps["beta"].release == release and outcome.apps["beta"].swapped
        assert host.files["/srv/fleet/beta/current"].target.endswith("/" + release)
        vassals = [v for v in host.listdir("/etc/uwsgi/vassals") if v.startswith("beta@")]
        assert vassals == [f"beta@{release}.ini"]
        site = host.read("/etc/nginx/sites-enabled/fleet-beta.conf").decode()
        assert f"/run/fleet/beta/{release}.sock" in site
        session, _ = tc.run(host, tc.config(host, text))
        assert tc.changed_steps(session) == []


FRONTED = """
[servers.app1]
address = "10.0.0.11"
[servers.lb]
address = "10.0.0.10"
role = "front"

[apps.shop]
repo = "https://git.example.com/shop.git"
domains = ["shop.example.com"]
headers = { "X-Frame-Options" = "DENY" }
client_max_body_size = "50m"
redirect_from = ["www.shop.example.com"]
maintenance = true
maintenance_message = "Back soon"
allow = ["203.0.113.0/24"]
rate_limit = "10r/s"
burst = 20
"""


def test_with_fronts_door_controls_move_to_the_fronts() -> None:
    from tomli_w import dumps

    from fleet.cluster.inventory import host_document, load_inventory
    from fleet.config.checker import Checker
    from fleet.config.parse import parse_front, parse_toml
    from fleet.converge.front import render_front

    inventory, data = load_inventory("f.toml", FRONTED)
    app_share = host_document(inventory, data, "app1")["apps"]["shop"]
    assert set(app_share) == {"repo", "domains"}  # behind the front: plain, open to it
    lb = host_document(inventory, data, "lb")
    (front,) = parse_front(Checker("share", "front", parse_toml("share", dumps(lb))["front"]))
    assert front.maintenance and front.allow == ("203.0.113.0/24",)
    assert front.rate_limit == "10r/s" and front.burst == 20
    cfg = Config(ServerConfig(), EmperorConfig(), (), (front,))
    text = render_front(cfg, tc.server(), front, {}, None).decode()
    proxied = locations(text)["/"]
    for line in ("client_max_body_size 50m;", "allow 203.0.113.0/24;", "deny all;",
                 "limit_req zone=fleet_shop burst=20 nodelay;",
                 "error_page 503 @fleet_maintenance_shop;",
                 'add_header X-Frame-Options "DENY" always;'):
        assert line in proxied, line
    assert "location @fleet_maintenance_shop {" in text
    assert "return 301 http://shop.example.com$request_uri;" in text
    assert "zone=fleet_shop:1m rate=10r/s" in render_global(tc.server(), cfg).decode()


# ----------------------------------------------------------------------------- commands


@pytest.fixture
def stored(monkeypatch: pytest.MonkeyPatch):
    """Two stored apps on a FakeHost; converging is recorded, not run."""
    import io

    from fleet.cli import door as door_cmd
    host = tc.server()
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    for name in ("alpha", "beta"):
        host.write(f"/etc/fleet/apps/{name}.toml",
                   f'repo = "git://r/{name}.git"\ndomains = ["{name}.test"]\n'.encode(),
                   0o600, "root", "root")
    converged: list = []
    monkeypatch.setattr(door_cmd, "local_host", lambda: host)
    monkeypatch.setattr(door_cmd, "require_root", lambda: None)
    monkeypatch.setattr("fleet.cli.basics.run_lock",
                        lambda *a, **k: __import__("contextlib").nullcontext())
    def run_converge(desired, **kw) -> int:  # writes what the command validated, converges
        perform_all(host, kw.get("first", ()))
        converged.append((desired, kw))
        return 0

    monkeypatch.setattr(door_cmd, "run_converge", run_converge)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return host, converged


def main(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    import io
    import sys

    from fleet.cli import app as cli
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_env_set_reads_stdin_stores_the_value_and_converges_that_app(
        stored, monkeypatch, capsys) -> None:
    _host, converged = stored
    code, out, err = main(monkeypatch, capsys, "env", "alpha", "set", "TOKEN",
                          stdin="s3cret value\n")
    assert code == 0 and "s3cret" not in out + err
    desired, kw = converged[-1]
    assert dict(desired.config.app("alpha").env) == {"TOKEN": "s3cret value"}
    assert kw["only"] == {"alpha"}
    code, out, err = main(monkeypatch, capsys, "env", "alpha", "--json")
    assert code == 0 and json.loads(out) == {"app": "alpha", "env": {}}  # not stored: mocked


@pytest.mark.parametrize(("args", "stdin", "expected"), [
    (["env", "alpha", "set", "TOKEN=x"], "", "env: TOKEN=x: is not a valid environment"),
    (["env", "alpha", "set", "TOKEN"], "two\nlines\n", "stdin: TOKEN: must be a single line"),
    (["env", "alpha", "unset", "NOPE"], "", "env.NOPE: is not set"),
    (["env", "nope", "set", "K"], "v\n", "no app named 'nope' in /etc/fleet/apps"),
    (["env", "alpha", "frob", "K"], "", "expected set KEY, unset KEY or import FILE"),
    (["maintenance", "alpha", "maybe"], "", "maintenance: maybe: expected on or off"),
    (["maintenance", "alpha", "on", "--message", "a\u0007"], "",
     "maintenance_message: must be one line"),
    (["auth", "alpha", "add", "bad user"], "pw\n", "auth: bad user: a user name is"),
    (["auth", "alpha", "add", "bob"], "", "stdin: password for bob: is empty"),
    (["auth", "alpha", "remove", "bob"], "", "bob: no such user"),
])
def test_bad_command_input_is_one_line_exit_2_and_converges_nothing(
        stored, monkeypatch, capsys, args, stdin, expected) -> None:
    host, converged = stored
    before = dict(host.files)
    code, out, err = main(monkeypatch, capsys, *args, stdin=stdin)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert converged == [] and host.files == before


def test_maintenance_on_writes_the_key_and_message(stored, monkeypatch, capsys) -> None:
    _, converged = stored
    code, _, _ = main(monkeypatch, capsys, "maintenance", "beta", "on", "--message", "Soon")
    app = converged[-1][0].config.app("beta")
    assert code == 0 and app.maintenance and app.maintenance_message == "Soon"
    assert converged[-1][0].apps_raw["beta"]["maintenance"] is True


def test_auth_add_hashes_through_openssl_stdin_and_writes_a_root_only_file(
        stored, monkeypatch, capsys) -> None:
    from fleet.host.machine import RunResult
    host, converged = stored
    seen = []

    def openssl(_host, argv):
        if argv[0] == "openssl":
            seen.append(argv)
            return RunResult(0, HASH + "\n", "")
        return None
    host.handlers.append(openssl)
    code, out, err = main(monkeypatch, capsys, "auth", "alpha", "add", "alice",
                          stdin="pw-secret\n")
    assert code == 0, err
    assert seen == [["openssl", "passwd", "-6", "-stdin"]]  # the password is not in argv
    stored_file = host.files["/etc/fleet/auth/alpha.htpasswd"]
    assert stored_file.content == f"alice:{HASH}\n".encode() and stored_file.mode == 0o600
    assert converged[-1][0].config.app("alpha").auth == AuthConfig(
        "/etc/fleet/auth/alpha.htpasswd")
    assert "pw-secret" not in out + err


def test_rollback_skips_the_live_commits_twin() -> None:
    from fleet.server.history import History
    history = History("shop")
    history.record("aaaaaaaaaaaa", "a" * 40, built=1.0, deployed=1.0)
    history.record("bbbbbbbbbbbb", "b" * 40, built=2.0, deployed=2.0)
    history.record("bbbbbbbbbbbb-b", "b" * 40, built=3.0, deployed=3.0)  # new env, same code
    previous = history.previous("bbbbbbbbbbbb-b")
    assert previous is not None and previous.id == "aaaaaaaaaaaa"

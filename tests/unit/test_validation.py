"""Issue 14, validation: each refused input class is one line naming file, key and problem.

Every case here was accepted before and reached a template (nginx, uWSGI ini, systemd unit),
git's argv or a parser that crashed; each must now be exit 2 before anything is touched.
"""

from __future__ import annotations

import os
import sys

import pytest

from fleet.cli import app as cli
from fleet.config.limits import ENV_LINE_MAX, TOML_MAX_BYTES, TOML_MAX_DEPTH
from fleet.config.parse import VASSAL_SET_ALLOWED, parse_toml
from fleet.config.store import desired_state, with_app
from fleet.errors import EXIT_INVALID, ConfigError
from fleet.host import layout
from tests.unit.fakehost import FakeHost
from tests.unit.support import error_of, parse

APP = "[apps.a]\nrepo = 'git://example/a.git'\ndomains = ['a.com']\n"


def app_with(line: str) -> str:
    return APP + line + "\n"


@pytest.mark.parametrize(("text", "expected"), [
    # full matches: a trailing newline used to pass `re.match(...$)`
    ('[apps."a\\n"]\nrepo = "x"\ndomains = ["a.com"]\n', "invalid app name 'a\\n'"),
    (APP + '[apps.a.env]\n"K\\n" = "v"\n', "apps.a.env.K\\n: is not a valid environment"),
    ('[emperor.vassal_set]\n"harakiri\\n" = 5\n', "is not a uWSGI option name"),
    (app_with('user = "bob\\n"'), "apps.a.user: 'bob\\n' is not a valid user name"),
    (app_with('module = "wsgi:app\\n"'), "apps.a.module: 'wsgi:app\\n' is not a module spec"),
    (app_with('processes = "1-4\\n"'), "apps.a.processes: expected an integer or a range"),
    (app_with('prefix = "/blog\\n"'), "apps.a.prefix: must be a single line"),
    (app_with('socket = "tcp:127.0.0.1:9001\\n"'), "apps.a.socket: must be a single line"),
    ('[server]\nclient_max_body_size = "10m\\n"\n', "server.client_max_body_size: '10m\\n'"),
    ('[server]\npackages = ["curl\\n"]\n', "server.packages[0]: must be a single line"),
    # static: nginx directives through the URL prefix or the directory
    (APP + "[apps.a.static]\n'/s' = 'static;}location /x{alias /etc'\n",
     "apps.a.static./s: 'static;}location /x{alias /etc' may only use letters, digits"),
    (APP + "[apps.a.static]\n'/s;' = 'static'\n", "apps.a.static./s;: URL prefix must start"),
    (APP + "[apps.a.static]\n'/s{' = 'static'\n", "apps.a.static./s{: URL prefix"),
    (APP + '[apps.a.static]\n"/s\\n" = "static"\n', "URL prefix must start with '/'"),
    (APP + "[apps.a.static]\n'//s' = 'static'\n", "apps.a.static.//s: URL prefix"),
    (APP + "[apps.a.static]\n'/s' = 'my static'\n", "apps.a.static./s: 'my static' may only"),
    (APP + "[apps.a.static]\n'/s' = '-static'\n",
     "apps.a.static./s: '-static': no path component may start with '-'"),
    # path and persist
    (app_with("path = 'src dir'"), "apps.a.path: 'src dir' may only use letters, digits"),
    (app_with("path = 'a/-b'"), "apps.a.path: 'a/-b': no path component may start with '-'"),
    (app_with("path = 'a$b'"), "apps.a.path: 'a$b' may only use"),
    (app_with("persist = ['data;x']"), "apps.a.persist[0]: 'data;x' may only use"),
    (app_with("persist = ['../x']"), "apps.a.persist[0]: '../x' must be a relative path"),
    # absolute file paths reaching nginx and systemd unit text
    (app_with("tls = { cert = '/etc/ssl/a b.pem', key = '/etc/ssl/a.key' }"),
     "apps.a.tls.cert: '/etc/ssl/a b.pem' may only use"),
    (app_with("tls = { cert = '/etc/ssl/a.pem', key = '/etc/ssl/a.key;' }"),
     "apps.a.tls.key: '/etc/ssl/a.key;' may only use"),
    (app_with("tls = { cert = '/etc/ssl/../shadow', key = '/etc/ssl/a.key' }"),
     "apps.a.tls.cert: '/etc/ssl/../shadow' must be an absolute path without '..'"),
    ("[server.acme]\nca_bundle = '/etc/ca.pem LD_PRELOAD=/tmp/x.so'\n",
     "server.acme.ca_bundle: '/etc/ca.pem LD_PRELOAD=/tmp/x.so' may only use"),
    ("[server.acme]\ndirectory = 'https://acme.test/dir x'\n",
     "server.acme.directory: 'https://acme.test/dir x' must be an https:// URL"),
    ("[server.pip]\ncert = '/etc/pip ca.pem'\n", "server.pip.cert: '/etc/pip ca.pem' may only"),
    (app_with("env_file = '/etc/fleet/a env'"), "apps.a.env_file: '/etc/fleet/a env' may only"),
    (app_with("env_file = '/etc/-a.env'"), "apps.a.env_file: '/etc/-a.env': no path component"),
    ("[server.pip]\nindex_url = 'https://pypi.test/simple x'\n",
     "server.pip.index_url: must be an http(s):// URL without whitespace"),
    ("[server.pip]\nextra_index_urls = ['https://a.test/simple', '--trusted-host=x']\n",
     "server.pip.extra_index_urls[1]: must be an http(s):// URL"),
    # repo URL and ref reach git's argv
    ("[apps.a]\nrepo = '--upload-pack=touch /tmp/pwned'\ndomains = ['a.com']\n",
     "apps.a.repo: '--upload-pack=touch /tmp/pwned' must not start with '-'"),
    ("[apps.a]\nrepo = 'https://h/x y.git'\ndomains = ['a.com']\n",
     "apps.a.repo: must not contain whitespace or control characters"),
    ('[apps.a]\nrepo = "https://h/x\\u0007.git"\ndomains = ["a.com"]\n',
     "apps.a.repo: must not contain whitespace"),
    (app_with("ref = '-b'"), "apps.a.ref: '-b' is not a git branch, tag or commit"),
    (app_with('ref = "main\\tx"'), "apps.a.ref: 'main\\tx' is not a git branch"),
    # health.path goes into a request line
    (APP + "[apps.a.health]\npath = '/a b'\n",
     "apps.a.health.path: '/a b' is not a URL path (no spaces"),
    (APP + '[apps.a.health]\npath = "/a\\u0001"\n', "apps.a.health.path: '/a\\x01' is not a"),
    (APP + "[apps.a.health]\npath = '/a%zz'\n", "apps.a.health.path: '/a%zz' is not a URL path"),
    # env lines uWSGI would split
    (APP + f"[apps.a.env]\nK = '{'x' * (ENV_LINE_MAX - 1)}'\n",
     f"apps.a.env.K: KEY=VALUE is {ENV_LINE_MAX + 1} bytes; uWSGI reads at most "
     f"{ENV_LINE_MAX} per line"),
    (APP + '[apps.a.env]\nK = "a\\rb"\n', "apps.a.env.K: must be a single line"),
])
def test_refused_inputs_name_file_key_and_problem(text: str, expected: str) -> None:
    assert expected in error_of(text)


@pytest.mark.parametrize("option", [
    "uid", "gid", "master-as-root", "exec-as-root", "exec-pre-app", "exec-as-user",
    "hook-as-root", "emperor", "plugin-dir", "plugins", "need-plugin", "chroot",
    "pivot_root", "unshare", "attach-daemon", "smart-attach-daemon", "cron", "mule",
    "for-readline", "include", "ini", "yaml", "json", "xml", "set-ph", "set-placeholder",
    "logto", "pidfile", "socket", "http-socket", "cap", "route", "python-path", "pythonpath",
    "env", "chdir", "virtualenv", "module", "wsgi-file", "touch-reload", "stats", "daemonize",
])
def test_vassal_set_refuses_privilege_exec_and_path_options(option: str) -> None:
    message = error_of(f"[emperor.vassal_set]\n{option} = '1'\n")
    assert message.startswith(f"f.toml: emperor.vassal_set.{option}: is not a uWSGI ")


@pytest.mark.parametrize("value", ["@(exec://id)", "$(HOME)", "%(_)", "5;x", "a\tb", "a\nb"])
def test_vassal_set_values_cannot_use_uwsgi_magic(value: str) -> None:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    message = error_of(f'[emperor.vassal_set]\nharakiri = "{escaped}"\n')
    assert message.startswith("f.toml: emperor.vassal_set.harakiri: ")
    assert "uWSGI expands $ @ % ( ) as root" in message


def test_vassal_set_keeps_harmless_tuning_options() -> None:
    _, emperor, _ = parse("[emperor.vassal_set]\nharakiri = 30\nreload-on-rss = 512\n"
                          "lazy-apps = true\nadd-header = 'X-Served-By: fleet'\n")
    assert emperor is not None and emperor.vassal_set == (
        ("add-header", "X-Served-By: fleet"), ("harakiri", "30"), ("lazy-apps", "true"),
        ("reload-on-rss", "512"))
    assert "uid" not in VASSAL_SET_ALLOWED and "harakiri" in VASSAL_SET_ALLOWED


def test_accepted_paths_still_pass() -> None:
    _, _, apps = parse(APP + "path = 'src/app_1'\npersist = ['instance', 'data/up-loads']\n"
                       "env_file = '/etc/fleet/a.env'\n"
                       "tls = { cert = '/etc/letsencrypt/live/a.com/fullchain.pem', "
                       "key = '/etc/ssl/private/a+b@c.key' }\n"
                       "[apps.a.health]\npath = '/health?full=1&x=%20'\n"
                       f"[apps.a.env]\nK = '{'x' * (ENV_LINE_MAX - 2)}'\n"
                       "[apps.a.static]\n'/static' = 'src/static'\n")
    app = apps["a"]
    assert app.path == "src/app_1" and app.static == (("/static", "src/static"),)
    assert len(f"K={app.env[0][1]}") == ENV_LINE_MAX


# ----------------------------------------------------------------------------- TOML limits


def test_deeply_nested_toml_is_one_line_not_a_traceback() -> None:
    for text in ("x = " + "[" * 5000 + "]" * 5000 + "\n",
                 "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
                 "x = " + "[" * (TOML_MAX_DEPTH + 1) + "]" * (TOML_MAX_DEPTH + 1) + "\n"):
        with pytest.raises(ConfigError) as info:
            parse_toml("f.toml", text)
        assert str(info.value) == (f"f.toml: tables and arrays nest deeper than "
                                   f"{TOML_MAX_DEPTH} levels")
        assert info.value.exit_code == EXIT_INVALID


def test_huge_toml_is_refused_before_parsing() -> None:
    text = "# " + "x" * TOML_MAX_BYTES + "\n"
    with pytest.raises(ConfigError) as info:
        parse_toml("f.toml", text)
    assert str(info.value) == (f"f.toml: is {TOML_MAX_BYTES + 3} bytes; fleet reads at most "
                               f"{TOML_MAX_BYTES}")


def test_apply_of_a_huge_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (3 * TOML_MAX_BYTES) + "\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["fleet", "apply", str(big)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.strip() == f"fleet: {big}: is {TOML_MAX_BYTES + 1} bytes; fleet reads at most " \
                          f"{TOML_MAX_BYTES}"


# ----------------------------------------------------------------------------- root


@pytest.mark.parametrize("args", [
    ["apply", "x.toml"], ["plan", "x.toml"], ["releases", "a"], ["status"], ["check"],
    ["logs", "a"], ["deploy", "a"], ["rollback", "a"], ["remove-app", "a"],
    ["add-app", "a", "--repo", "r", "--domain", "a.com"], ["drain", "10.0.0.1"],
    ["undrain", "10.0.0.1"],
])
def test_every_root_command_says_so_in_one_line(args, monkeypatch, capsys) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "argv", ["fleet", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out, err = capsys.readouterr()
    assert exc.value.code == EXIT_INVALID
    assert out == ""
    assert err == (f"fleet: fleet {args[0]} must run as root: fleet's state under /etc/fleet "
                   "and /srv/fleet is root-only (try sudo)\n")


# ----------------------------------------------------------------------------- fronts


FRONT = ("[front.apps.blog]\ndomains = ['blog.com']\nupstreams = ['10.0.0.2:80']\n")


def test_a_local_app_and_a_balanced_app_may_not_share_a_name() -> None:
    text = FRONT + "[apps.blog]\nrepo = 'git://x/blog.git'\ndomains = ['other.com']\n"
    with pytest.raises(ConfigError) as info:
        desired_state(FakeHost(), "f.toml", text)
    assert str(info.value) == ("f.toml: front.apps.blog: 'blog' is also a local app "
                               "([apps.blog])")


def front_host() -> FakeHost:
    host = FakeHost()
    host.mkdir("/etc/fleet", 0o700, "root", "root")
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    host.write(layout.SERVER_FILE, FRONT.encode(), 0o600, "root", "root")
    return host


def test_add_app_checks_the_front_domains_and_names() -> None:
    desired = desired_state(front_host(), None, None)
    raw = {"repo": "git://x/a.git", "domains": ["blog.com"]}
    with pytest.raises(ConfigError) as info:
        with_app(desired, "shop", raw, "add-app shop")
    assert str(info.value) == ("add-app shop: front.apps.blog.domains: 'blog.com' is also "
                               "served by a local app")
    with pytest.raises(ConfigError, match="'blog' is also a local app"):
        with_app(desired, "blog", {"repo": "git://x/a.git", "domains": ["x.com"]}, "add-app")


def test_deploy_ref_is_validated_like_the_config() -> None:
    host = front_host()
    host.write("/etc/fleet/apps/shop.toml",
               b'repo = "git://x/shop.git"\ndomains = ["shop.com"]\n', 0o600, "root", "root")
    desired = desired_state(host, None, None)
    raw = {**desired.apps_raw["shop"], "ref": "--output=/etc/passwd"}
    with pytest.raises(ConfigError) as info:
        with_app(desired, "shop", raw, "deploy shop --ref")
    assert str(info.value) == ("deploy shop --ref: ref: '--output=/etc/passwd' is not a git "
                               "branch, tag or commit")


def test_a_stored_table_refused_by_a_newer_fleet_is_repaired_by_apply() -> None:
    host = FakeHost()
    host.mkdir("/etc/fleet", 0o700, "root", "root")
    host.mkdir("/etc/fleet/apps", 0o700, "root", "root")
    host.write(layout.SERVER_FILE, b'[emperor.vassal_set]\nuid = "root"\n', 0o600, "root", "root")
    host.write("/etc/fleet/apps/a.toml", b'repo = "-x"\ndomains = ["a.com"]\n', 0o600, "root",
               "root")
    with pytest.raises(ConfigError) as info:
        desired_state(host, None, None)
    assert str(info.value) == (f"{layout.SERVER_FILE}: emperor.vassal_set.uid: is not a uWSGI "
                               "tuning option fleet passes to vassals (see README, [emperor] "
                               "vassal_set)")
    fixed = desired_state(host, "f.toml", "[emperor]\nthunder_lock = true\n"
                          "[apps.a]\nrepo = 'git://x/a.git'\ndomains = ['a.com']\n")
    assert fixed.config.emperor.vassal_set == () and fixed.config.apps[0].repo == "git://x/a.git"
    assert "uid" not in str(fixed.server_raw)

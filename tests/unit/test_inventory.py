"""The inventory ([servers.NAME], apps.X.servers) and each host's share of the operator file."""

from __future__ import annotations

import socket

import pytest
from tomli_w import dumps

from fleet.cluster.inventory import Server, host_document, load_inventory
from fleet.config import parse as config
from fleet.config.parse import parse_front
from fleet.errors import ConfigError

BASE = """
[server]
packages = ["htop"]

[servers.app1]
address = "10.0.0.11"

[servers.app2]
address = "app2.internal"
user = "deploy"
port = 2222
role = "app"

[servers.lb]
address = "10.0.0.10"
role = "front"

[apps.blog]
repo = "https://git.example.com/blog.git"
domains = ["blog.example.com"]
health = { path = "/health" }
env = { SECRET = "s3cret" }

[apps.shop]
repo = "https://git.example.com/shop.git"
domains = ["shop.example.com", "www.shop.example.com"]
servers = ["app2"]
"""


def test_servers_get_defaults_and_apps_default_to_every_app_server() -> None:
    inventory, _ = load_inventory("f.toml", BASE)
    assert inventory.server("app1") == Server("app1", "10.0.0.11", "root", 22, "app")
    assert inventory.server("app2") == Server("app2", "app2.internal", "deploy", 2222, "app")
    assert [s.name for s in inventory.fronts] == ["lb"]
    assert inventory.servers_of("blog") == ("app1", "app2")
    assert inventory.servers_of("shop") == ("app2",)
    assert inventory.apps_on("app1") == ["blog"] and inventory.apps_on("lb") == []


@pytest.mark.parametrize(("edit", "key", "problem"), [
    ('servers = ["app9"]', "apps.shop.servers[0]", "no server 'app9'"),
    ('servers = ["lb"]', "apps.shop.servers[0]", "role 'front'"),
    ("servers = []", "apps.shop.servers", "at least one app server"),
    ('servers = ["app1", "app1"]', "apps.shop.servers", "same server twice"),
    ("servers = 3", "apps.shop.servers", "expected an array"),
])
def test_bad_app_servers_name_the_key(edit: str, key: str, problem: str) -> None:
    text = BASE.replace('servers = ["app2"]', edit)
    with pytest.raises(ConfigError) as info:
        load_inventory("f.toml", text)
    assert info.value.source == "f.toml" and info.value.key == key
    assert problem in info.value.problem


@pytest.mark.parametrize(("edit", "key", "problem"), [
    ('role = "front"', "servers.lb.role", None),  # baseline: valid
    ('role = "db"', "servers.lb.role", "must be one of app, front"),
    ('role = "front"\nport = 0', "servers.lb.port", "between 1 and 65535"),
    ('role = "front"\nhost = "x"', "servers.lb.host", "unknown key"),
    ('role = "front"\nuser = "Bad User"', "servers.lb.user", "not a user name"),
])
def test_bad_server_entries(edit: str, key: str, problem: str | None) -> None:
    text = BASE.replace('role = "front"', edit)
    if problem is None:
        load_inventory("f.toml", text)
        return
    with pytest.raises(ConfigError) as info:
        load_inventory("f.toml", text)
    assert info.value.key == key and problem in info.value.problem


def test_address_must_be_present_safe_and_unique() -> None:
    with pytest.raises(ConfigError, match=r"servers.app1.address: required"):
        load_inventory("f.toml", BASE.replace('address = "10.0.0.11"\n', ""))
    with pytest.raises(ConfigError, match=r"servers.app1.address: '-oProxyCommand=x' is not"):
        load_inventory("f.toml", BASE.replace('"10.0.0.11"', '"-oProxyCommand=x"'))
    with pytest.raises(ConfigError, match=r"servers.lb.address: 10.0.0.11:22 is already"):
        load_inventory("f.toml", BASE.replace('"10.0.0.10"', '"10.0.0.11"'))


def test_no_servers_or_no_app_servers_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        load_inventory("f.toml", '[apps.a]\nrepo = "r"\ndomains = ["a.example"]\n')
    only_front = ('[servers.lb]\naddress = "h"\nrole = "front"\n'
                  '[apps.a]\nrepo = "r"\ndomains = ["a.example"]\n')
    with pytest.raises(ConfigError, match=r"apps.a.servers: there are no app servers"):
        load_inventory("f.toml", only_front)


def test_app_keys_are_validated_before_any_host_is_touched() -> None:
    with pytest.raises(ConfigError, match=r"apps.blog.domains\[0\]"):
        load_inventory("f.toml", BASE.replace('"blog.example.com"', '"Not A Domain"'))


def test_a_single_server_apply_accepts_and_ignores_the_inventory() -> None:
    data = config.parse_toml("f.toml", BASE)
    server, _, apps = config.parse_document("f.toml", data)
    assert server is not None and sorted(apps) == ["blog", "shop"]


def test_app_server_share_holds_only_its_apps_without_inventory_keys() -> None:
    inventory, data = load_inventory("f.toml", BASE)
    doc = host_document(inventory, data, "app1")
    assert sorted(doc) == ["apps", "server"] and sorted(doc["apps"]) == ["blog"]
    assert doc["apps"]["blog"]["env"] == {"SECRET": "s3cret"}
    doc2 = host_document(inventory, data, "app2")
    assert sorted(doc2["apps"]) == ["blog", "shop"] and "servers" not in doc2["apps"]["shop"]
    # The share is what the server's `fleet apply` parses: it must be valid on its own.
    config.parse_document("share", config.parse_toml("share", dumps(doc2)))


def test_front_share_lists_each_apps_servers_as_upstreams() -> None:
    inventory, data = load_inventory("f.toml", BASE)
    doc = host_document(inventory, data, "lb")
    assert "apps" not in doc
    front = doc["front"]["apps"]
    assert front["blog"] == {"domains": ["blog.example.com"],
                             "upstreams": ["10.0.0.11:80", "app2.internal:80"],
                             "health": {"path": "/health"}}
    assert front["shop"]["upstreams"] == ["app2.internal:80"]
    parsed = parse_front(config.Checker("share", "front", config.parse_toml(
        "share", dumps(doc))["front"]))
    assert [f.name for f in parsed] == ["blog", "shop"]
    assert parsed[0].health.path == "/health" and parsed[1].domains[1] == "www.shop.example.com"


@pytest.mark.parametrize(("table", "key"), [
    ({"apps": {"a": {"domains": ["a.example"], "upstreams": []}}}, "front.apps.a.upstreams"),
    ({"apps": {"a": {"domains": ["a.example"], "upstreams": ["h"]}}},
     "front.apps.a.upstreams[0]"),
    ({"apps": {"a": {"domains": ["a.example"], "upstreams": ["h:80"], "x": 1}}},
     "front.apps.a.x"),
    ({"apps": {"a": {"upstreams": ["h:80"]}}}, "front.apps.a.domains"),
])
def test_bad_front_tables(table: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_front(config.Checker("f", "front", table))
    assert info.value.key == key


def test_with_fronts_tls_and_hsts_move_to_the_fronts_and_leave_the_app_servers() -> None:
    text = BASE.replace('env = { SECRET = "s3cret" }',
                        'env = { SECRET = "s3cret" }\ntls = "acme"\nhsts = 600').replace(
        'servers = ["app2"]', 'servers = ["app2"]\ntls = { cert = "/etc/ssl/s.pem", '
                              'key = "/etc/ssl/s.key" }')
    inventory, data = load_inventory("f.toml", text)
    for name in ("app1", "app2"):
        doc = host_document(inventory, data, name)
        assert all("tls" not in app and "hsts" not in app for app in doc["apps"].values())
        _, _, apps = config.parse_document("share", config.parse_toml("share", dumps(doc)))
        assert all(app.tls.mode == "off" for app in apps.values())  # plain HTTP to the front
    lb = host_document(inventory, data, "lb")
    assert lb["front"]["apps"]["blog"]["tls"] == "acme"
    assert lb["front"]["apps"]["blog"]["hsts"] == 600
    assert lb["front"]["apps"]["shop"]["tls"] == {"cert": "/etc/ssl/s.pem",
                                                  "key": "/etc/ssl/s.key"}
    blog, shop = parse_front(config.Checker("share", "front", config.parse_toml(
        "share", dumps(lb))["front"]))
    assert (blog.tls.mode, blog.hsts) == ("acme", 600)
    assert (shop.tls.mode, shop.tls.cert, shop.hsts) == ("files", "/etc/ssl/s.pem",
                                                         config.HSTS_DEFAULT)
    assert data["apps"]["blog"]["tls"] == "acme"  # the operator's file is left as it was


def test_without_fronts_an_apps_tls_stays_with_it() -> None:
    text = BASE.replace('address = "10.0.0.10"\nrole = "front"',
                        'address = "10.0.0.10"').replace('env = { SECRET = "s3cret" }',
                                                         'env = { SECRET = "s3cret" }\n'
                                                         'tls = "acme"\nhsts = false')
    inventory, data = load_inventory("f.toml", text)
    doc = host_document(inventory, data, "app1")
    assert doc["apps"]["blog"]["tls"] == "acme" and doc["apps"]["blog"]["hsts"] is False


@pytest.mark.parametrize(("entry", "key"), [
    ({"tls": "on"}, "front.apps.a.tls"),
    ({"tls": {"cert": "relative.pem", "key": "/k"}}, "front.apps.a.tls.cert"),
    ({"tls": {"cert": "/c"}}, "front.apps.a.tls.key"),
    ({"hsts": -1}, "front.apps.a.hsts"),
])
def test_a_front_apps_tls_is_validated_like_an_apps(entry: dict, key: str) -> None:
    table = {"apps": {"a": {"domains": ["a.example"], "upstreams": ["h:80"], **entry}}}
    with pytest.raises(ConfigError) as info:
        parse_front(config.Checker("f", "front", table))
    assert info.value.key == key


# ----------------------------------------------------------------------------- accept_from


def share_server(text: str, name: str) -> dict:
    inventory, data = load_inventory("f.toml", text)
    doc = host_document(inventory, data, name)
    # What the server's `fleet apply` reads back.
    server, _, _ = config.parse_document("share", config.parse_toml("share", dumps(doc)))
    return {"raw": doc.get("server", {}), "parsed": server}


def test_app_servers_accept_the_fronts_fronts_do_not_change() -> None:
    app1 = share_server(BASE, "app1")
    assert app1["raw"] == {"packages": ["htop"], "accept_from": ["10.0.0.10"]}
    assert app1["parsed"].accept_from == ("10.0.0.10",)
    lb = share_server(BASE, "lb")
    assert lb["raw"] == {"packages": ["htop"]} and lb["parsed"].accept_from == ()


def test_operator_accept_from_comes_first_and_fronts_are_added_once() -> None:
    text = BASE.replace('packages = ["htop"]',
                        'accept_from = ["192.168.7.0/24", "10.0.0.10"]') + (
        '\n[servers.lb2]\naddress = "fd00::20"\nrole = "front"\n')
    share = share_server(text, "app2")
    assert share["raw"]["accept_from"] == ["192.168.7.0/24", "10.0.0.10", "fd00::20"]
    assert share["parsed"].accept_from == ("192.168.7.0/24", "10.0.0.10", "fd00::20")
    # The operator's file itself is left as it was.
    _, data = load_inventory("f.toml", text)
    assert data["server"]["accept_from"] == ["192.168.7.0/24", "10.0.0.10"]


def test_without_fronts_or_with_the_opt_out_shares_keep_the_operators_setting() -> None:
    no_front = BASE.replace('address = "10.0.0.10"\nrole = "front"', 'address = "10.0.0.10"')
    assert "accept_from" not in share_server(no_front, "app1")["raw"]
    opt_out = BASE.replace('packages = ["htop"]', 'accept_from = ["0.0.0.0/0", "::/0"]')
    assert share_server(opt_out, "app1")["raw"]["accept_from"] == ["0.0.0.0/0", "::/0"]


def test_a_share_without_server_table_gets_one() -> None:
    text = BASE.replace('[server]\npackages = ["htop"]\n', "")
    assert share_server(text, "app1")["raw"] == {"accept_from": ["10.0.0.10"]}


def test_front_host_name_is_resolved_here_to_all_its_addresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        assert host == "lb.internal"
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd00::10", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.10", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.10", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    text = BASE.replace('address = "10.0.0.10"', 'address = "lb.internal"')
    inventory, _ = load_inventory("f.toml", text)
    assert inventory.front_sources == ("10.0.0.9", "10.0.0.10", "fd00::10")
    assert share_server(text, "app2")["parsed"].accept_from == (
        "10.0.0.9", "10.0.0.10", "fd00::10")
    assert asked == ["lb.internal", "lb.internal"]  # once per load, never per host


def test_front_that_does_not_resolve_stops_the_push_at_load(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    text = BASE.replace('address = "10.0.0.10"', 'address = "lb.internal"')
    with pytest.raises(ConfigError) as info:
        load_inventory("f.toml", text)
    assert info.value.source == "f.toml" and info.value.key == "servers.lb.address"
    assert info.value.problem.startswith(
        "cannot restrict app servers to this front: 'lb.internal' does not resolve on this "
        "machine (Name or service not known)")
    # The opt-out needs no name resolution.
    opt_out = text.replace('packages = ["htop"]', 'accept_from = ["0.0.0.0/0", "::/0"]')
    inventory, _ = load_inventory("f.toml", opt_out)
    assert inventory.front_sources == ()


def test_ip_literal_fronts_need_no_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*_args, **_kwargs):
        raise AssertionError("an IP address is not looked up")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    inventory, _ = load_inventory("f.toml", BASE)
    assert inventory.front_sources == ("10.0.0.10",)


SHARED = """
[servers.a]
address = "10.0.0.1"
[servers.b]
address = "10.0.0.2"
[servers.lb]
address = "10.0.0.9"
role = "front"
[apps.api]
repo = "/srv/git/api"
domains = ["x.example.com"]
prefix = "/api"
health = { path = "/ping" }
[apps.site]
repo = "/srv/git/site"
domains = ["x.example.com"]
"""


def test_apps_sharing_a_domain_reach_the_front_as_one_site() -> None:
    inventory, data = load_inventory("f.toml", SHARED)
    front = host_document(inventory, data, "lb")["front"]["apps"]
    # One server block for the domain (two would conflict in nginx): the root app's, whose
    # upstream reaches both apps, as the app servers route by prefix.
    assert front == {"site": {"domains": ["x.example.com"],
                              "upstreams": ["10.0.0.1:80", "10.0.0.2:80"]}}


def test_a_shared_domain_without_a_root_app_is_checked_under_its_prefix() -> None:
    text = SHARED + 'prefix = "/www"\n'  # the last table is site's
    inventory, data = load_inventory("f.toml", text)
    front = host_document(inventory, data, "lb")["front"]["apps"]
    assert list(front) == ["api"] and front["api"]["health"] == {"path": "/api/ping"}


def test_apps_sharing_a_domain_must_run_on_the_same_servers_behind_a_front() -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory("f.toml", SHARED + 'servers = ["a"]\n')
    assert str(info.value) == (
        "f.toml: apps.api.servers: shares domain 'x.example.com' with app 'site', which runs "
        "on other app servers: behind a front, apps on one domain must run on the same servers")
    no_front = SHARED.replace('role = "front"', 'role = "app"')
    load_inventory("f.toml", no_front + 'servers = ["a"]\n')  # without fronts: each serves


PROCESSES = """
[apps.blog.workers.queue]
command = "rq worker"
[apps.blog.jobs.prune]
command = "flask prune"
schedule = "daily"
"""


def test_workers_run_on_every_app_server_and_jobs_on_one() -> None:
    inventory, data = load_inventory("f.toml", BASE + PROCESSES)
    one, two = (host_document(inventory, data, name)["apps"]["blog"]
                for name in ("app1", "app2"))
    assert "queue" in one["workers"] and "queue" in two["workers"]
    assert "prune" in one["jobs"] and "jobs" not in two  # the first server only: never twice
    placed = BASE.replace('env = { SECRET = "s3cret" }',
                          'env = { SECRET = "s3cret" }\nworkers_on = ["app2"]\n'
                          'jobs_on = "app2"')
    inventory, data = load_inventory("f.toml", placed + PROCESSES)
    one, two = (host_document(inventory, data, name)["apps"]["blog"]
                for name in ("app1", "app2"))
    assert "workers" not in one and "jobs" not in one
    assert "queue" in two["workers"] and "prune" in two["jobs"]
    assert "workers_on" not in two and "jobs_on" not in two  # the servers never see them


@pytest.mark.parametrize(("edit", "key", "problem"), [
    ('workers_on = ["app9"]', "apps.shop.workers_on[0]", "not one of the app's servers"),
    ('jobs_on = "app1"', "apps.shop.jobs_on", "not one of the app's servers (app2)"),
    ("jobs_on = 2", "apps.shop.jobs_on", "expected a string"),
])
def test_bad_worker_or_job_placement_names_the_key(edit: str, key: str, problem: str) -> None:
    text = BASE.replace('servers = ["app2"]', f'servers = ["app2"]\n{edit}')
    with pytest.raises(ConfigError) as info:
        load_inventory("f.toml", text)
    assert info.value.key == key and problem in info.value.problem

"""Routing on a real server: three apps under "/", "/blog" and "/shop" of one domain (shop on a
TCP socket), port conflicts refused before anything changes, and moving an app's prefix or
socket without restarting the others. One server for the module, in order.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from fleet.host.client import uwsgi_get
from fleet.server.ports import parse_listeners
from tests.e2e.helpers import describe, fleet, fleet_json, install_fleet, service_pids
from tests.harness.server import BareServer, NoResponse

PAGES = Path(__file__).resolve().parents[1] / "apps" / "pages"
SHOP_PORT = 9301
MOVED_PORT = 9304


def config(blog_prefix: str = "/blog", shop_port: int = SHOP_PORT, extra: str = "") -> str:
    apps = ""
    for name, prefix, sock in (("home", "/", "unix"), ("blog", blog_prefix, "unix"),
                               ("shop", "/shop", f"tcp:127.0.0.1:{shop_port}")):
        apps += f"""
[apps.{name}]
repo = "REPO/{name}.git"
domains = ["site.test", "www.site.test"]
prefix = "{prefix}"
socket = "{sock}"
static = {{ "/static" = "static" }}
env = {{ PAGES_NAME = "{name}" }}
[apps.{name}.health]
path = "/health"
contains = "{name} ok"
timeout = 30
"""
    return apps + extra


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    for name in ("home", "blog", "shop"):
        if name not in git_remote.repos_created:
            git_remote.create_repo(name, PAGES)
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    write_config(server, git_remote, config())
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply",
                         "/root/fleet.toml", "--json"], timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return server


def write_config(server: BareServer, git_remote, text: str) -> None:
    base = git_remote.url("home").rsplit("/", 1)[0]
    server.write_file("/root/fleet.toml", text.replace("REPO", base))


def fetch(box: BareServer, path: str) -> tuple[int, str, str]:
    response = box.http(path, host="site.test")
    return response.status, response.body, response.headers.get("location", "")


def listening(box: BareServer) -> set[str]:
    return parse_listeners(box.read_file("/proc/net/tcp").decode())


def test_three_apps_share_a_domain_under_prefixes(box) -> None:
    status, body, _ = fetch(box, "/")
    assert status == 200 and body.startswith("home v1 index root=- link=/about "), body
    status, body, _ = fetch(box, "/blog/")
    assert body == ("blog v1 index root=/blog link=/blog/about "
                    "static=/blog/static/hello.txt"), body
    assert fetch(box, "/shop/")[1].startswith("shop v1 index root=/shop link=/shop/about ")
    assert fetch(box, "/blog/about")[1] == "blog v1 about"
    # Redirects the app issues keep its prefix; the bare prefix gets its slash.
    status, _, location = fetch(box, "/blog/go")
    assert status == 302 and location.endswith("/blog/about"), (status, location)
    status, _, location = fetch(box, "/shop/go")
    assert status == 302 and location.endswith("/shop/about"), (status, location)
    status, _, location = fetch(box, "/blog?x=1")
    assert status == 301 and location.endswith("/blog/?x=1"), (status, location)
    # Static files under the prefix come from nginx (the app would answer "path=...").
    status, body, _ = fetch(box, "/blog/static/hello.txt")
    assert status == 200 and body == "pages static file\n", body
    # Everything outside the prefixes is the "/" app's, including look-alikes.
    assert fetch(box, "/elsewhere/x")[1] == "home v1 path=/elsewhere/x root=-"
    assert fetch(box, "/blogger")[1] == "home v1 path=/blogger root=-"
    assert box.http("/blog/about", host="www.site.test").body == "blog v1 about"


def test_tcp_app_binds_only_its_address(box) -> None:
    ours = {a for a in listening(box) if a.endswith(f":{SHOP_PORT}")}
    assert ours == {f"127.0.0.1:{SHOP_PORT}"}, ours
    reply = uwsgi_get(f"127.0.0.1:{SHOP_PORT}", "/shop/about", "site.test")
    assert reply.status == 200 and reply.body == "shop v1 about"
    with pytest.raises(OSError):  # 127.0.0.2 is loopback too, but not the bound address
        uwsgi_get(f"127.0.0.2:{SHOP_PORT}", "/shop/about", "site.test", timeout=3)
    assert not box.run(["ls", "/run/fleet/shop"]).stdout.strip().endswith(".sock")
    status = fleet_json(box, "status")
    assert status.data["apps"]["shop"]["health"] == "passed", status.data["apps"]["shop"]
    assert status.data["apps"]["blog"]["health"] == "passed", status.data["apps"]["blog"]


def test_taken_ports_and_duplicate_routes_are_refused_before_any_change(box, git_remote):
    before = box.run(["cat", "/etc/fleet/apps/shop.toml"]).stdout
    with socket.socket() as squatter:  # the server shares the host's network
        squatter.bind(("127.0.0.1", 9309))
        squatter.listen()
        write_config(box, git_remote, config(shop_port=9309))
        result = fleet(box, "apply", "/root/fleet.toml")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "socket: tcp:127.0.0.1:9309 is already in use" in result.stderr, result.stderr
    write_config(box, git_remote, config(blog_prefix="/shop"))
    result = fleet(box, "apply", "/root/fleet.toml")
    assert result.returncode == 2 and "'site.test' at /shop is already used by app" \
        in result.stderr, result.stderr
    assert box.run(["cat", "/etc/fleet/apps/shop.toml"]).stdout == before


def test_moving_a_prefix_and_a_socket_restarts_no_other_app(box, git_remote) -> None:
    before = service_pids(box)
    write_config(box, git_remote, config(blog_prefix="/journal", shop_port=MOVED_PORT))
    run = fleet_json(box, "apply", "/root/fleet.toml")
    assert run.returncode == 0, describe(run)
    assert fetch(box, "/journal/")[1].startswith("blog v1 index root=/journal "
                                                 "link=/journal/about")
    assert fetch(box, "/blog/about")[1] == "home v1 path=/blog/about root=-"
    assert fetch(box, "/shop/about")[1] == "shop v1 about"
    ports = {a for a in listening(box) if a.endswith((f":{SHOP_PORT}", f":{MOVED_PORT}"))}
    assert ports == {f"127.0.0.1:{MOVED_PORT}"}, ports
    after = service_pids(box)
    home = {k: v for k, v in before.items() if k.startswith("uwsgi") and k.endswith(":home")}
    assert home and all(after.get(k) == v for k, v in home.items()), (before, after)
    changed = {s["app"] for s in run.data["steps"] if s["status"] == "changed" and s["app"]}
    assert changed == {"blog", "shop"}, run.data["steps"]


def test_new_release_of_a_tcp_app_takes_over_its_port(box, git_remote) -> None:
    source = (PAGES / "wsgi.py").read_text().replace('VERSION = "v1"', 'VERSION = "v2"')
    git_remote.commit("shop", {"wsgi.py": source})
    run = fleet_json(box, "deploy", "shop")
    assert run.returncode == 0, describe(run)
    assert fetch(box, "/shop/about")[1] == "shop v2 about"
    vassals = box.run(["ls", "/etc/uwsgi/vassals"]).stdout.split()
    assert len([v for v in vassals if v.startswith("shop@") and v.endswith(".ini")]) == 1
    git_remote.commit("shop", {"wsgi.py": "import no_such_module_fleet  # noqa\n"})
    run = fleet_json(box, "deploy", "shop")
    assert run.returncode == 1
    # The failed release gave the port back to the previous one.
    status, body = 0, ""
    for _ in range(20):
        with contextlib.suppress(OSError, NoResponse):
            status, body, _ = fetch(box, "/shop/about")
        if body == "shop v2 about":
            break
        time.sleep(1)
    assert body == "shop v2 about", (status, body)

"""Issue 20, door controls, on a real bare Debian through nginx: headers, per-app upload
limit, redirects, allow-list, rate limit, `fleet env set` and maintenance under load, basic
auth, and fleet's probes passing maintenance and auth. One server, one apply of three apps.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import fleet, fleet_json, install_fleet
from tests.e2e.load import Load
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
VALUE = "val-" + secrets.token_hex(12)  # an env value that must appear nowhere but the app
PASSWORD = "pw-" + secrets.token_hex(12)


def outside_address() -> str:
    """A non-loopback address of this machine (the servers share its network): a request
    sent to it comes *from* it, an address no allow-list here names."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        address = probe.getsockname()[0]
    assert not address.startswith("127."), address
    return address


OUTSIDE = outside_address()


def fleet_toml(git_remote) -> str:
    app = f'repo = "{git_remote.url("door-pages")}"\n[apps.{{0}}.health]\npath = "/health"\n'
    return f"""
[apps.shop]
domains = ["shop.test"]
headers = {{ "X-Frame-Options" = "DENY", "X-Door-Test" = "a b/c=d" }}
client_max_body_size = "2k"
redirect_from = ["www.shop.test", "old-shop.test"]
allow = ["{OUTSIDE}", "10.0.0.0/8"]
static = {{ "/static" = "static" }}
env = {{ PAGES_NAME = "shop" }}
{app.format("shop")}
[apps.walled]
domains = ["walled.test"]
allow = ["203.0.113.7"]
{app.format("walled")}
[apps.limited]
domains = ["limited.test"]
rate_limit = "5r/s"
burst = 5
{app.format("limited")}"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def request(host: str, path: str = "/", *, address: str = "127.0.0.1", method: str = "GET",
            body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection(address, 80, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                      resp.read().decode(errors="replace"))
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz):
    if "door-pages" not in git_remote.repos_created:
        git_remote.create_repo("door-pages", APPS / "pages")
    server: BareServer = server_factory(provisioned=True)
    install_fleet(server, fleet_pyz)
    server.write_file("/root/fleet.toml", fleet_toml(git_remote))
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply",
                         "/root/fleet.toml", "--json"], timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return server


def test_headers_upload_limit_and_redirects(box) -> None:
    answer = request("shop.test", "/about")
    assert answer.status == 200 and answer.body.startswith("shop v1 about"), answer
    assert answer.headers.get("x-frame-options") == "DENY"
    assert answer.headers.get("x-door-test") == "a b/c=d"
    assert "x-fleet-site" not in answer.headers  # still only for fleet's own probes
    missing = request("shop.test", "/nothing/here")  # every answer, whatever its status
    assert missing.headers.get("x-frame-options") == "DENY"
    static = request("shop.test", "/static/hello.txt")  # served by nginx itself
    assert static.status == 200 and static.headers.get("x-frame-options") == "DENY", static
    assert request("walled.test", "/static/hello.txt", address=OUTSIDE).status == 403
    assert request("shop.test", "/up", method="POST", body=b"x" * 3000).status == 413
    assert request("shop.test", "/up", method="POST", body=b"x" * 1000).status != 413
    assert request("limited.test", "/up", method="POST", body=b"x" * 3000).status != 413
    assert "x-frame-options" not in request("limited.test").headers  # per app
    for name in ("www.shop.test", "old-shop.test"):
        moved = request(name, "/a/b?x=1&y=two")
        assert moved.status == 301, (name, moved)
        assert moved.headers["location"] == "http://shop.test/a/b?x=1&y=two"


def test_allow_list_refuses_other_addresses(box) -> None:
    assert request("walled.test", address=OUTSIDE).status == 403
    assert request("shop.test", address=OUTSIDE).status == 200  # its list names OUTSIDE
    assert request("limited.test", address=OUTSIDE).status == 200  # no list: anyone
    # Loopback stays allowed (fleet's health checks come from there).
    assert request("walled.test").status == 200
    # A header naming an allowed address changes nothing: no real_ip without fronts.
    spoofed = request("walled.test", address=OUTSIDE,
                      headers={"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.7"})
    assert spoofed.status == 403


def test_rate_limit_answers_429_beyond_rate_and_burst(box) -> None:
    time.sleep(2)  # the bucket is full again after the tests before
    statuses, retry = [], set()
    start = time.monotonic()
    for _ in range(30):
        answer = request("limited.test", "/about")
        statuses.append(answer.status)
        if answer.status == 429:
            retry.add(answer.headers.get("retry-after"))
    elapsed = time.monotonic() - start
    assert set(statuses) <= {200, 429}, statuses
    passed = statuses.count(200)
    # 5r/s with burst 5, nodelay: 1 + 5 at once, then one more every 0.2 s.
    assert elapsed < 3, elapsed
    assert 6 <= passed <= 6 + int(elapsed / 0.2) + 1, (passed, elapsed, statuses)
    assert statuses[:6] == [200] * 6 and 429 in statuses
    assert retry == {"1"}, retry
    time.sleep(1.5)
    calm = request("limited.test", "/about")
    assert calm.status == 200 and "retry-after" not in calm.headers
    # fleet's own checks are not counted: they pass right after the burst.
    check = fleet_json(box, "check")
    assert check.returncode == 0 and check.data["apps"]["limited"]["health"] == "passed", \
        check.data


def world_readable_hits(box: BareServer, text: str) -> str:
    """Files anyone on the server can read that contain `text`."""
    script = (f"find /etc /srv /run /var/lib/fleet /var/log /tmp /root -xdev -type f "
              f"-perm -o=r -print0 2>/dev/null | xargs -0 grep -l -F -e '{text}' 2>/dev/null")
    return box.run(["sh", "-c", script], timeout=120).stdout


def test_env_set_under_load_reloads_with_no_failed_request(box) -> None:
    with Load("shop.test", path="/about", threads=2) as load:
        result = fleet(box, "-v", "env", "shop", "set", "PAGES_NAME", input=VALUE + "\n")
        time.sleep(1)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert load.failed == 0, load.failures[:5]
    assert load.ok > 20, load.ok
    assert request("shop.test", "/about").body.startswith(f"{VALUE} v1 about")
    assert VALUE not in result.stdout + result.stderr  # -v shows every command run
    assert world_readable_hits(box, VALUE) == ""
    listed = fleet_json(box, "env", "shop")
    assert listed.data == {"app": "shop", "env": {"PAGES_NAME": {"value": "********",
                                                                 "from": "env"}}}
    assert VALUE not in fleet(box, "env", "shop").stdout
    bad = fleet(box, "env", "shop", "set", "BAD-NAME", input="x\n")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    refused = fleet(box, "env", "shop", "set", "PAGES_NAME=x")
    assert refused.returncode == 2, refused.stderr


def test_maintenance_under_load_and_health_checks_pass_it(box) -> None:
    message = 'Back <soon> & "later" $host'
    with Load("shop.test", path="/about", threads=2) as on:
        result = fleet_json(box, "maintenance", "shop", "on", "--message", message)
        time.sleep(1)
    assert result.returncode == 0, result.data
    health = [s for s in result.data["steps"] if s["name"] == "health" and s["app"] == "shop"]
    assert health and health[0]["status"] == "ok", health  # the gate passed while on
    assert on.failed > 0 and set(on.failures) == {on.failures[0]}, on.failures[:5]
    assert on.failures[0].startswith("HTTP 503"), on.failures[0]
    page = request("shop.test", "/about")
    assert page.status == 503 and page.headers.get("retry-after") == "120"
    assert page.headers["content-type"].startswith("text/html")
    assert "Back &#60;soon&#62; &#38; &#34;later&#34; &#36;host" in page.body, page.body
    assert request("shop.test", "/static/hello.txt").status == 503
    assert request("walled.test").status == 200  # other apps go on
    check = fleet_json(box, "check")
    assert check.returncode == 0 and check.data["apps"]["shop"]["health"] == "passed"
    # A new release still passes its gate and the check through nginx while visitors get 503.
    gated = fleet_json(box, "env", "shop", "set", "DURING_MAINTENANCE", input="1\n")
    steps = {(s["name"], s["app"]): s["status"] for s in gated.data["steps"]}
    assert gated.returncode == 0 and steps[("deploy", "shop")] == "changed", gated.data
    assert steps[("health", "shop")] == "ok"
    assert request("shop.test", "/about").status == 503
    # The probe header from another address changes nothing.
    assert request("shop.test", "/about", address=OUTSIDE,
                   headers={"X-Fleet-Probe": "1"}).status == 503
    with Load("shop.test", path="/about", threads=2) as off:
        result = fleet(box, "maintenance", "shop", "off")
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(f.startswith("HTTP 503") for f in off.failures), off.failures[:5]
    with Load("shop.test", path="/about", threads=2) as after:
        time.sleep(2)
    assert after.failed == 0 and after.ok > 10, after.failures[:5]


def test_basic_auth(box) -> None:
    result = fleet(box, "-v", "auth", "shop", "add", "alice", input=PASSWORD + "\n")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PASSWORD not in result.stdout + result.stderr
    assert request("shop.test", "/about").status == 401
    assert request("shop.test", "/about", headers=basic("alice", "wrong")).status == 401
    ok = request("shop.test", "/about", headers=basic("alice", PASSWORD))
    assert ok.status == 200 and ok.body.startswith(f"{VALUE} v1 about"), ok
    assert request("shop.test", "/about", address=OUTSIDE,
                   headers={"X-Fleet-Probe": "1"}).status == 401
    check = fleet_json(box, "check")
    assert check.returncode == 0 and check.data["apps"]["shop"]["health"] == "passed"
    modes = box.run(["stat", "-c", "%n %U:%G %a", "/etc/fleet/auth/shop.htpasswd",
                     "/etc/nginx/fleet/auth", "/etc/nginx/fleet/auth/shop.htpasswd"],
                    check=True).stdout.split("\n")
    assert modes[:3] == ["/etc/fleet/auth/shop.htpasswd root:root 600",
                         "/etc/nginx/fleet/auth root:www-data 750",
                         "/etc/nginx/fleet/auth/shop.htpasswd root:www-data 640"], modes
    assert "alice:$6$" in box.read_file("/etc/fleet/auth/shop.htpasswd").decode()
    assert world_readable_hits(box, PASSWORD) == ""
    assert fleet_json(box, "auth", "shop", "list").data["users"] == ["alice"]
    assert fleet(box, "auth", "shop", "remove", "alice").returncode == 0
    assert request("shop.test", "/about", headers=basic("alice", PASSWORD)).status == 401


def test_rerun_changes_nothing_and_bad_input_touches_nothing(box) -> None:
    again = fleet_json(box, "apply")
    assert again.returncode == 0
    changed = [(s["name"], s["app"]) for s in again.data["steps"] if s["status"] != "ok"]
    assert changed == [], changed
    before = box.run(["sh", "-c", "cat /etc/fleet/apps/*.toml /etc/nginx/sites-enabled/*"],
                     check=True).stdout
    box.write_file("/root/bad.toml", '[apps.shop]\nrepo = "x"\ndomains = ["shop.test"]\n'
                                     'headers = { "X-A" = "a; add_header X-B b" }\n')
    bad = fleet(box, "apply", "/root/bad.toml")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "/root/bad.toml: apps.shop.headers.X-A" in bad.stderr
    assert fleet(box, "maintenance", "shop", "maybe").returncode == 2
    after = box.run(["sh", "-c", "cat /etc/fleet/apps/*.toml /etc/nginx/sites-enabled/*"],
                    check=True).stdout
    assert after == before
    assert json.loads(fleet(box, "env", "shop", "--json").stdout)["app"] == "shop"

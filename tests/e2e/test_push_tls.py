"""fleet push with HTTPS at the front: the app's `tls = "acme"` goes to the front, which gets
its certificate from a real ACME CA (Debian's pebble, run on the front itself: its DNS answers
127.0.0.1 for every name, so the CA validates through the front's own nginx) and proxies to
the app servers over plain HTTP; the app servers' shares carry no tls. One cluster, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.config.parse import parse_toml
from tests.harness.bridged import BridgedServer
from tests.harness.cluster import DOMAIN, HOSTNAMES, Cluster, whoami_cluster
from tests.harness.pebble import https, start_pebble
from tests.harness.server import CommandFailed

# Keys of [apps.whoami], then the CA every server's share names (only the front uses it).
EXTRA = """tls = "acme"

[server.acme]
email = "ops@example.com"
directory = "https://localhost:14000/dir"
ca_bundle = "/etc/pebble/api.pem"
"""
# pebble's root, fetched on the front (its management port listens on the front's loopback).
ROOT_SCRIPT = """
import socket, ssl, sys
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
with socket.create_connection(("127.0.0.1", 15000), timeout=10) as raw, \\
        context.wrap_socket(raw, server_hostname="localhost") as tls:
    tls.sendall(b"GET /roots/0 HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
    data = b"".join(iter(lambda: tls.recv(65536), b""))
sys.stdout.write(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
"""


def install_pebble(server: BridgedServer) -> None:
    """Install pebble ahead of start_pebble, retried: the downloads go through the bridge's
    NAT and DNS, where a transient failure (or another session's apt lock) is no finding."""
    for attempt in range(3):
        result = server.run(["apt-get", "install", "-y", "-q", "pebble", "openssl"],
                            timeout=900, env={"DEBIAN_FRONTEND": "noninteractive"})
        if result.ok:
            return
        if attempt < 2:
            time.sleep(10)
    raise CommandFailed(result)


@pytest.fixture(scope="module")
def cluster(e2e_host: None, suite: str, fleet_pyz: Path, fixture_apps_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("push-tls")
    with whoami_cluster(suite, fleet_pyz, fixture_apps_dir, work, extra=EXTRA) as booted:
        install_pebble(booted.front)
        start_pebble(booted.front)
        yield booted


@pytest.fixture(scope="module")
def first(cluster: Cluster) -> dict:
    code, report, stderr = cluster.push()
    assert code == 0, json.dumps(report, indent=1)[-6000:] + stderr[-2000:]
    return report


@pytest.fixture(scope="module")
def root(cluster: Cluster, first: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root the front's certificate chains to (pebble makes a new one at every start)."""
    pem = cluster.front.run(["python3", "-c", ROOT_SCRIPT], check=True).stdout
    path = tmp_path_factory.mktemp("pebble") / "root.pem"
    path.write_text(pem)
    return path


def test_push_gets_the_front_a_certificate_and_the_front_checks_over_https(
        cluster: Cluster, first: dict) -> None:
    assert {n: h["status"] for n, h in first["hosts"].items()} == {
        "app1": "changed", "app2": "changed", "front": "changed"}
    front = first["hosts"]["front"]
    assert front["apps"]["whoami"]["health"] == "passed", front
    status = json.loads(cluster.front.run("fleet status --json", check=True).stdout)
    certificate = status["front"]["whoami"]["certificate"]
    assert certificate["names"] == [DOMAIN] and certificate["problem"] is None, certificate
    checked = json.loads(cluster.front.run("fleet check --json", check=True).stdout)
    assert checked["apps"]["whoami"]["health"] == "passed", checked
    assert "certificate expires" in checked["apps"]["whoami"]["detail"], checked


def test_the_front_answers_https_from_both_app_servers(cluster: Cluster, root: Path) -> None:
    bodies = []
    for _ in range(20):
        reply = https(DOMAIN, root, "/", address=cluster.front.address)  # verifies the chain
        assert reply.status == 200, reply
        assert reply.headers["strict-transport-security"] == "max-age=15768000"
        bodies.append(reply.body)
    assert all(body.startswith("whoami ") and body.split()[2].startswith("v")
               for body in bodies), bodies[:3]
    assert {body.split()[1] for body in bodies} == set(HOSTNAMES.values())


def test_http_on_the_front_redirects_to_https(cluster: Cluster, first: dict) -> None:
    reply = cluster.front.http_at("/some/page?q=1", host=DOMAIN)
    assert reply.status == 301, reply
    assert reply.headers["location"] == f"https://{DOMAIN}/some/page?q=1"


def test_app_servers_serve_plain_http_without_tls(cluster: Cluster, first: dict) -> None:
    for server in (cluster.app1, cluster.app2):
        share = parse_toml("share", server.run("cat /var/lib/fleet/push/fleet.toml",
                                               check=True).stdout)
        assert "tls" not in share["apps"]["whoami"] and "hsts" not in share["apps"]["whoami"]
        status = json.loads(server.run("fleet status --json", check=True).stdout)
        assert status["apps"]["whoami"]["certificate"] is None, status["apps"]["whoami"]
        assert not server.exists("/etc/letsencrypt/live/fleet-whoami")


def test_a_second_push_changes_nothing_on_any_host(cluster: Cluster, first: dict) -> None:
    code, report, stderr = cluster.push()
    assert code == 0, stderr[-2000:]
    assert {n: h["status"] for n, h in report["hosts"].items()} == {
        "app1": "ok", "app2": "ok", "front": "ok"}
    assert all(host["changed"] == 0 for host in report["hosts"].values()), report

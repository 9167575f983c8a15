"""HTTPS end to end: a real ACME CA (Debian's pebble, run inside the server on loopback)
issues certificates through fleet's nginx; certbot's own timer unit renews them and the hook
reloads nginx without fleet; an operator's own files are served, and bad ones refused before
anything changes. One server for the module, in order."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.helpers import fleet, fleet_json, install_fleet
from tests.harness.server import BareServer

APPS = Path(__file__).resolve().parents[1] / "apps"
WSGI = '''import os
from flask import Flask, request

app = Flask(__name__)


@app.get("/")
@app.get("/<path:rest>")
def index(rest=""):
    # request.url is built from the scheme nginx passes (HTTPS / REQUEST_SCHEME).
    return f"{os.environ['APP']} {request.url}", 200, {"Content-Type": "text/plain"}
'''
DOMAINS = {"one": ["one.test", "www.one.test"], "two": ["two.test"], "own": ["own.test"]}
PEBBLE_CONFIG = {"pebble": {
    "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
    "certificate": "/etc/pebble/api.pem", "privateKey": "/etc/pebble/api.key",
    "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
    "externalAccountBindingRequired": False}}
OWN = "/etc/ssl/fleet-test"


def wait_port(server: BareServer, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.run(["bash", "-c", f"echo > /dev/tcp/127.0.0.1/{port}"]).returncode:
        assert time.monotonic() < deadline, server.journal(lines=40)
        time.sleep(0.3)


def self_signed(server: BareServer, key: str, cert: str, names: str) -> None:
    server.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                "-keyout", key, "-out", cert, "-subj", "/CN=fleet test",
                "-addext", f"subjectAltName={names}"], check=True)
    server.run(["chmod", "600", key], check=True)


def start_pebble(server: BareServer) -> None:
    """pebble on loopback with its DNS at pebble-challtestsrv, which answers 127.0.0.1 for
    every name: the CA validates HTTP-01 against this server's nginx."""
    server.run(["apt-get", "install", "-y", "-q", "pebble", "openssl"], check=True,
               timeout=900, env={"DEBIAN_FRONTEND": "noninteractive"})
    server.run(["mkdir", "-p", "/etc/pebble", OWN], check=True)
    self_signed(server, "/etc/pebble/api.key", "/etc/pebble/api.pem",
                "DNS:localhost,IP:127.0.0.1")
    server.write_file("/etc/pebble/config.json", json.dumps(PEBBLE_CONFIG))
    dns = ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
           "-dns01", "127.0.0.1:8053", "-management", "127.0.0.1:8055", "-http01", "",
           "-https01", "", "-tlsalpn01", ""]
    if "-doh" in server.run(["pebble-challtestsrv", "-h"]).stderr:
        dns += ["-doh", ""]
    server.run(["systemd-run", "--unit=test-challtestsrv", "--", *dns], check=True)
    server.run(["systemd-run", "--unit=test-pebble", "--setenv=PEBBLE_VA_NOSLEEP=1",
                "--setenv=PEBBLE_WFE_NONCEREJECT=0", "--", "pebble", "-config",
                "/etc/pebble/config.json", "-dnsserver", "127.0.0.1:8053"], check=True)
    wait_port(server, 8053)
    wait_port(server, 14000)
    hosts = " ".join(d for names in DOMAINS.values() for d in names)
    server.run(["sh", "-c", f"echo '127.0.0.1 {hosts}' >> /etc/hosts"], check=True)


def pebble_root(tmp: Path) -> Path:
    """The root issued certificates chain to (pebble makes a new one at every start)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 15000), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b"".join(iter(lambda: tls.recv(65536), b""))
    path = tmp / "pebble-root.pem"
    path.write_bytes(data.split(b"\r\n\r\n", 1)[1])
    return path


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    der: bytes  # the certificate nginx served
    alpn: str | None


def https(domain: str, cafile: Path, path: str = "/", alpn: list[str] | None = None,
          address: str = "127.0.0.1") -> Reply:
    """GET over TLS to address:443 with SNI and Host = domain, verifying chain and name."""
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection((address, 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=domain) as tls:
        der = tls.getpeercert(binary_form=True) or b""
        chosen = tls.selected_alpn_protocol()
        if chosen == "h2":
            return Reply(0, {}, "", der, chosen)
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {domain}\r\nConnection: close\r\n\r\n"
                    .encode())
        data = b"".join(iter(lambda: tls.recv(65536), b""))
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return Reply(int(lines[0].split()[1]), headers, body, der, chosen)


def config_text(git_remote, own_key: str = f"{OWN}/own.key",
                own_cert: str = f"{OWN}/own.pem") -> str:
    text = """
[server.acme]
email = "ops@example.com"
directory = "https://localhost:14000/dir"
ca_bundle = "/etc/pebble/api.pem"
"""
    for name, domains in DOMAINS.items():
        tls = (f'{{ cert = "{own_cert}", key = "{own_key}" }}' if name == "own"
               else '"acme"')
        text += f"""
[apps.{name}]
repo = "{git_remote.url('tlsweb')}"
domains = {json.dumps(domains)}
tls = {tls}
[apps.{name}.env]
APP = "{name}"
"""
    return text


@pytest.fixture(scope="module")
def box(server_factory, git_remote, fleet_pyz, tmp_path_factory):
    if "tlsweb" not in git_remote.repos_created:
        git_remote.create_repo("tlsweb", APPS / "alpha",
                               files={"wsgi.py": WSGI, "requirements.txt": "flask\n"})
    server: BareServer = server_factory()
    install_fleet(server, fleet_pyz)
    start_pebble(server)
    self_signed(server, f"{OWN}/own.key", f"{OWN}/own.pem", "DNS:own.test")
    self_signed(server, f"{OWN}/other.key", f"{OWN}/other.pem", "DNS:other.test")
    server.write_file("/root/fleet.toml", config_text(git_remote))
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply",
                         "/root/fleet.toml", "--json"], timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    server.first_run = json.loads(result.stdout)  # type: ignore[attr-defined]
    tmp = tmp_path_factory.mktemp("tls")
    server.root_ca = pebble_root(tmp)  # type: ignore[attr-defined]
    server.own_ca = tmp / "own.pem"  # type: ignore[attr-defined]
    server.own_ca.write_bytes(server.read_file(f"{OWN}/own.pem"))  # type: ignore[attr-defined]
    return server


def test_acme_apps_answer_over_https_with_their_own_certificate(box) -> None:
    steps = [s for s in box.first_run["steps"] if s["name"] == "certificate"]
    assert sorted(s["app"] for s in steps) == ["one", "two"], steps
    assert all(s["status"] == "changed" for s in steps), steps
    for name in ("one", "two"):
        for domain in DOMAINS[name]:
            reply = https(domain, box.root_ca, "/a/b?c=1")  # verifies chain and name
            assert reply.status == 200, reply
            # Flask saw HTTPS: nginx passed the scheme to the app.
            assert reply.body == f"{name} https://{domain}/a/b?c=1", reply.body
            assert reply.headers["strict-transport-security"] == "max-age=15768000"
        assert https(DOMAINS[name][0], box.root_ca, alpn=["h2", "http/1.1"]).alpn == "h2"
    with pytest.raises(ssl.SSLError):  # each certificate is for its own app's names only
        context = ssl.create_default_context(cafile=str(box.root_ca))
        with socket.create_connection(("127.0.0.1", 443), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="nobody.test"):
            pass


def test_http_redirects_to_https_keeping_host_and_path(box) -> None:
    for domain in ("www.one.test", "one.test", "two.test", "own.test"):
        reply = box.http("/some/page?q=1", host=domain)
        assert reply.status == 301, (domain, reply.status)
        assert reply.headers["location"] == f"https://{domain}/some/page?q=1"


def test_acme_challenge_path_stays_on_plain_http(box) -> None:
    box.write_file("/var/lib/fleet/acme/.well-known/acme-challenge/probe-e2e", "token-e2e")
    reply = box.http("/.well-known/acme-challenge/probe-e2e", host="two.test")
    assert (reply.status, reply.body) == (200, "token-e2e")


def test_operator_certificate_is_served(box) -> None:
    reply = https("own.test", box.own_ca, "/x")
    assert reply.status == 200 and reply.body == "own https://own.test/x"
    assert reply.der == ssl.PEM_cert_to_DER_cert(box.own_ca.read_text())


def test_status_and_check_show_certificate_expiry(box) -> None:
    status = json.loads(fleet(box, "status", "--json").stdout)
    for name in DOMAINS:
        cert = status["apps"][name]["certificate"]
        assert cert["expires"] and cert["days_left"] > 14 and cert["problem"] is None, cert
        assert status["apps"][name]["health"] == "passed", status["apps"][name]
    assert status["apps"]["own"]["certificate"]["days_left"] in (29, 30)
    check = fleet_json(box, "check")
    assert check.returncode == 0, check.data
    assert "certificate expires" in check.data["apps"]["one"]["detail"]


def test_forced_renewal_is_served_without_fleet(box) -> None:
    before = https("one.test", box.root_ca).der
    assert box.run(["systemctl", "is-enabled", "certbot.timer"]).stdout.strip() == "enabled"
    # The timer's unit itself (with fleet's CA-bundle drop-in), forced to renew now.
    box.run(["sh", "-c", "echo force-renewal = True >> /etc/letsencrypt/cli.ini"], check=True)
    try:
        result = box.run(["systemctl", "start", "certbot.service"], timeout=300)
        assert result.returncode == 0, box.journal("certbot.service", lines=60)
    finally:
        box.run(["sed", "-i", "/^force-renewal/d", "/etc/letsencrypt/cli.ini"], check=True)
    assert box.exists("/etc/letsencrypt/archive/fleet-one/cert2.pem")
    deadline = time.monotonic() + 10
    while (after := https("one.test", box.root_ca).der) == before:
        assert time.monotonic() < deadline, "nginx still serves the old certificate"
        time.sleep(0.3)
    assert after == ssl.PEM_cert_to_DER_cert(
        box.read_file("/etc/letsencrypt/live/fleet-one/cert.pem").decode())


def test_second_apply_requests_no_certificate(box) -> None:
    archives = {n: box.run(["ls", f"/etc/letsencrypt/archive/fleet-{n}"]).stdout
                for n in ("one", "two")}
    run = fleet_json(box, "apply")
    assert run.returncode == 0, run.data
    steps = [s for s in run.data["steps"] if s["name"] == "certificate"]
    assert len(steps) == 2 and all(s["status"] == "ok" for s in steps), steps
    assert {n: box.run(["ls", f"/etc/letsencrypt/archive/fleet-{n}"]).stdout
            for n in ("one", "two")} == archives


@pytest.mark.parametrize("key, cert, problem", [
    (f"{OWN}/other.key", f"{OWN}/own.pem", "does not match"),
    (f"{OWN}/own.key", f"{OWN}/missing.pem", "no such file"),
])
def test_bad_operator_files_are_refused_before_anything_changes(box, git_remote, key, cert,
                                                                 problem) -> None:
    watched = ["/etc/fleet/apps/own.toml", "/etc/nginx/sites-enabled/fleet-own.conf"]
    before = [box.read_file(p) for p in watched]
    box.write_file("/root/bad.toml", config_text(git_remote, own_key=key, own_cert=cert))
    result = fleet(box, "apply", "/root/bad.toml")
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert problem in line and "apps.own.tls." in line, line
    assert (key if problem == "does not match" else cert) in line, line
    assert [box.read_file(p) for p in watched] == before
    assert https("own.test", box.own_ca).status == 200


def test_remove_app_purge_deletes_its_certificate_with_certbot(box) -> None:
    """Last in the module: it removes app one."""
    assert "Certificate Name: fleet-one" in box.run(["certbot", "certificates"]).stdout
    run = fleet_json(box, "remove-app", "one", "--purge")
    assert run.returncode == 0, run.data
    purge = next(s for s in run.data["steps"] if s["name"] == "purge")
    assert any(a.startswith("delete certificate fleet-one: certbot delete") for a in
               purge["actions"]), purge
    assert not box.exists("/etc/letsencrypt/live/fleet-one")
    assert not box.exists("/etc/letsencrypt/renewal/fleet-one.conf")
    listed = box.run(["certbot", "certificates"])
    assert listed.returncode == 0, listed.stderr
    assert "fleet-one" not in listed.stdout and "Certificate Name: fleet-two" in listed.stdout
    assert https("two.test", box.root_ca, "/x").body == "two https://two.test/x"
    assert https("own.test", box.own_ca, "/x").body == "own https://own.test/x"

"""HTTPS end to end: a real ACME CA (Debian's pebble, run inside the server on loopback)
issues certificates through fleet's nginx; certbot's own timer unit renews them and the hook
reloads nginx without fleet; an operator's own files are served, and bad ones refused before
anything changes. One server for the module, in order.

Not a provisioning test: its server starts from the provisioned tree (python3 and fleet's OS
packages preinstalled, tests/harness/rootfs.py); bare servers are provisioned in test_apply,
test_operator, test_reliability, test_trixie and the push modules."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.e2e.helpers import fleet, fleet_json, install_fleet
from tests.harness.pebble import DOMAINS, OWN, https, pebble_root, self_signed, start_pebble
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
    server: BareServer = server_factory(provisioned=True)
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

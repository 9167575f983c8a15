"""A private ACME CA on a test server (Debian's pebble and pebble-challtestsrv), and an HTTPS
client that verifies what nginx serves: shared by the TLS tests of one server and of a
cluster."""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.server import BareServer

# The names the TLS tests' apps use: pebble's DNS and the server's /etc/hosts answer them.
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

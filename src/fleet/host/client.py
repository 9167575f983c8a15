"""fleet's one client of the apps: a GET through nginx (HTTP, or HTTPS with the domain as
SNI) and a GET straight to a vassal over the uwsgi protocol (how a new release is checked on
its own socket while the old one still serves).

Both answer with one Reply, and both are bounded as a whole: an app behind them may stream
a byte a second or answer without end, so the exchange takes at most `timeout` seconds
(AnswerTooSlow) and reads at most a cap of bytes (AnswerTooLarge, or the cap for HTTP bodies).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from fleet.errors import AnswerTooSlow
from fleet.host.bounded import REPLY_CAP, deadline, read_all

BODY_CAP = 65536  # what a health check's `contains` is looked for in
PROBE_HEADER = "X-Fleet-Probe"  # nginx answers a loopback probe with the site that served it
SITE_HEADER = "X-Fleet-Site"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: str = ""

    @property
    def site(self) -> str | None:
        """Which fleet site answered (app@release): nginx tells loopback probes only."""
        return self.headers.get(SITE_HEADER.lower())


def http_get(host_header: str, path: str, timeout: float = 5.0, address: str = "127.0.0.1",
             port: int | None = None, https: bool = False,
             user_agent: str = "fleet-health") -> Reply:
    """One GET through nginx with the app's Host header, marked as fleet's probe; with
    `https`, over TLS on 443 with the domain as SNI (port 80 only redirects). The certificate
    is not verified here: its expiry is checked apart. Only the first BODY_CAP bytes are
    read."""
    conn: http.client.HTTPConnection
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = _SniConnection(address, port or 443, timeout=timeout, context=context,
                              sni=host_header)
    else:
        conn = http.client.HTTPConnection(address, port or 80, timeout=timeout)
    start = time.monotonic()
    try:
        conn.connect()
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise AnswerTooSlow(timeout)
        with deadline(conn.sock, left) as expired:
            try:
                conn.request("GET", path, headers={"Host": host_header,
                                                   "User-Agent": user_agent,
                                                   PROBE_HEADER: "1"})
                response = conn.getresponse()
                body = response.read(BODY_CAP)
            except (OSError, http.client.HTTPException):
                if expired.is_set():
                    raise AnswerTooSlow(timeout) from None
                raise
            if expired.is_set():  # a body cut short by the deadline is no answer
                raise AnswerTooSlow(timeout)
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                     body.decode(errors="replace"))
    finally:
        conn.close()


class _SniConnection(http.client.HTTPSConnection):
    """HTTPS to an address (127.0.0.1) with another name in SNI, as a browser would send."""

    def __init__(self, address: str, port: int, *, timeout: float, context: ssl.SSLContext,
                 sni: str) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._context = context
        self._sni = sni

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._sni)


def encode_vars(variables: dict[str, str]) -> bytes:
    data = b"".join(
        struct.pack("<H", len(k.encode())) + k.encode() + struct.pack("<H", len(v.encode()))
        + v.encode() for k, v in variables.items())
    return struct.pack("<BHB", 0, len(data), 0) + data


def request_vars(path: str, host: str, script_name: str = "") -> dict[str, str]:
    path_info, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": path_info,
        "QUERY_STRING": query, "SCRIPT_NAME": script_name, "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": host, "SERVER_PORT": "80", "HTTP_HOST": host,
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "0", "UWSGI_SCHEME": "http",
        "HTTP_USER_AGENT": "fleet-health",
    }


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(parts[1]), headers, body.decode(errors="replace"))


def uwsgi_get(address: str, path: str, host: str, timeout: float = 5.0,
              script_name: str = "") -> Reply:
    """address: a unix socket path, or HOST:PORT for a TCP socket. The whole exchange takes
    at most `timeout` seconds and REPLY_CAP bytes (AnswerTooSlow / AnswerTooLarge)."""
    start = time.monotonic()
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address
    else:
        hostname, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (hostname, int(port))
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)  # type: ignore[arg-type]
        sock.sendall(encode_vars(request_vars(path, host, script_name)))
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise AnswerTooSlow(timeout)
        raw = read_all(sock, left, REPLY_CAP)
    return parse_reply(raw)

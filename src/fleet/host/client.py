"""fleet's one client of the apps: a GET through nginx (HTTP, or HTTPS with the domain as
SNI) and a GET straight to a vassal over the uwsgi protocol (how a new release is checked on
its own socket while the old one still serves).

Both answer with one Reply, and both are bounded as a whole: an app behind them may stream
a byte a second or answer without end, so the exchange takes at most `timeout` seconds
(AnswerTooSlow) and reads at most a cap of bytes (AnswerTooLarge, or the cap for HTTP bodies).
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from fleet.errors import AnswerTooLarge, AnswerTooSlow
from fleet.host.bounded import REPLY_CAP, read_all

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
    read.

    Plain HTTP is spoken here over a socket; HTTPS through http.client and ssl, imported only
    then (fleet.host.https_client): together they cost `fleet status` a fifth of its start."""
    if https:
        from fleet.host.https_client import https_get

        return Reply(*https_get(host_header, path, timeout, address, port or 443,
                                {"User-Agent": user_agent, PROBE_HEADER: "1"}, BODY_CAP))
    start = time.monotonic()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAccept-Encoding: identity\r\n"
               f"User-Agent: {user_agent}\r\n{PROBE_HEADER}: 1\r\nConnection: close\r\n\r\n")
    with socket.create_connection((address, port or 80), timeout=timeout) as sock:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise AnswerTooSlow(timeout)
        sock.settimeout(left)
        try:
            sock.sendall(request.encode("latin-1"))
        except TimeoutError:
            raise AnswerTooSlow(timeout) from None
        return read_reply(sock, start + timeout, timeout)


class RemoteDisconnected(ConnectionResetError):
    """Closed without an answer (http.client's name for it, so messages read the same)."""


class BadStatusLine(OSError):
    """Not an HTTP answer (http.client's name for it; an OSError, so every caller's
    `except OSError` names it as the app's failure)."""


def answer_errors() -> tuple[type[Exception], ...]:
    """What a GET may raise besides AnswerError: OSError, and http.client's own errors once
    an HTTPS GET has imported it (they are no OSError)."""
    module = sys.modules.get("http.client")
    return (OSError, module.HTTPException) if module else (OSError,)


def read_reply(sock: socket.socket, until: float, timeout: float) -> Reply:
    """Read an answer to a `Connection: close` GET until it is complete (or BODY_CAP bytes of
    its body are in), the peer closes, or the monotonic clock reaches `until`."""
    data = b""
    while True:
        reply = complete_reply(data, closed=False)
        if reply is not None:
            return reply
        left = until - time.monotonic()
        if left <= 0:
            raise AnswerTooSlow(timeout)
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AnswerTooSlow(timeout) from None
        if not chunk:
            reply = complete_reply(data, closed=True)
            assert reply is not None
            return reply
        data += chunk
        if len(data) > REPLY_CAP + BODY_CAP:
            raise AnswerTooLarge(REPLY_CAP)


def complete_reply(data: bytes, closed: bool) -> Reply | None:
    """The Reply in `data` once there is enough of it (None: read on). The body is framed by
    Content-Length, chunks, or the end of the connection, and cut at BODY_CAP bytes."""
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        if not closed:
            return None
        if not data:
            raise RemoteDisconnected("Remote end closed connection without response")
        raise BadStatusLine(data.split(b"\r\n", 1)[0].decode("latin-1")[:80])
    head = parse_reply(data[:head_end + 4], BadStatusLine)
    body = data[head_end + 4:]
    length = head.headers.get("content-length", "")
    if head.status in (204, 304) or 100 <= head.status < 200:
        body, done = b"", True
    elif "chunked" in head.headers.get("transfer-encoding", "").lower():
        body, done = unchunk(body)
    elif length.strip().isdigit():
        body, done = body[:int(length)], len(body) >= int(length)
    else:
        done = False
    if not (done or closed or len(body) >= BODY_CAP):
        return None
    return Reply(head.status, head.headers, body[:BODY_CAP].decode(errors="replace"))


def unchunk(data: bytes) -> tuple[bytes, bool]:
    """The body of chunked `data` so far, and whether its last chunk has come."""
    body, at = b"", 0
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return body, False
        size_text = data[at:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadStatusLine(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            return body, True
        start = line_end + 2
        body += data[start:start + size]
        if len(data) < start + size + 2:
            return body, False
        at = start + size + 2


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


def parse_reply(raw: bytes, error: type[Exception] = ValueError) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise error(f"not an HTTP response: {lines[0][:80]!r}")
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

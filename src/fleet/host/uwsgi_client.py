"""A minimal client of the uwsgi protocol: ask a vassal directly, before nginx sends it traffic.

This is how a new release is health-checked on its own socket while the old one still serves.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

from fleet.errors import AnswerTooSlow
from fleet.host.bounded import REPLY_CAP, read_all


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str


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


def get(address: str, path: str, host: str, timeout: float = 5.0,
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

"""fleet's one client of the apps, against real sockets: what it sends, what it returns, and
that an app cannot hold it longer than its timeout or feed it more than its cap."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleet.errors import AnswerTooLarge, AnswerTooSlow
from fleet.host.client import BODY_CAP, http_get, uwsgi_get


def serve(sock: socket.socket, answer: Callable[[socket.socket, bytes], None]) -> list[bytes]:
    """Answer one connection in a thread; returns the list the request lands in."""
    seen: list[bytes] = []

    def run() -> None:
        conn, _ = sock.accept()
        with conn:
            request = conn.recv(65536)
            seen.append(request)
            with contextlib.suppress(OSError):  # the client gave up first
                answer(conn, request)

    threading.Thread(target=run, daemon=True).start()
    return seen


@pytest.fixture
def tcp() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def test_http_get_sends_the_host_and_probe_headers_and_reads_the_site(tcp) -> None:
    seen = serve(tcp, lambda c, _r: c.sendall(
        b"HTTP/1.1 200 OK\r\nX-Fleet-Site: blog@abc\r\nContent-Length: 2\r\n\r\nok"))
    reply = http_get("blog.test", "/health?x=1", timeout=5, port=tcp.getsockname()[1])
    assert (reply.status, reply.body, reply.site) == (200, "ok", "blog@abc")
    request = seen[0].decode()
    assert request.startswith("GET /health?x=1 HTTP/1.1\r\n")
    assert "Host: blog.test\r\n" in request and "X-Fleet-Probe: 1\r\n" in request


def test_http_get_reads_only_the_body_cap(tcp) -> None:
    size = BODY_CAP * 4
    serve(tcp, lambda c, _r: c.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * size))
    reply = http_get("blog.test", "/", timeout=5, port=tcp.getsockname()[1])
    assert len(reply.body) == BODY_CAP


def test_http_get_gives_up_on_a_trickling_answer_at_its_timeout(tcp) -> None:
    def trickle(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.1)

    serve(tcp, trickle)
    start = time.monotonic()
    with pytest.raises(AnswerTooSlow):
        http_get("blog.test", "/", timeout=1.0, port=tcp.getsockname()[1])
    assert time.monotonic() - start < 3


def test_http_get_reads_a_chunked_body_and_one_framed_by_the_close(tcp) -> None:
    serve(tcp, lambda c, _r: c.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))
    assert http_get("blog.test", "/", timeout=5, port=tcp.getsockname()[1]).body == "abcde"
    serve(tcp, lambda c, _r: c.sendall(b"HTTP/1.0 503 Busy\r\nX-A: 1\r\n\r\nnot now"))
    reply = http_get("blog.test", "/", timeout=5, port=tcp.getsockname()[1])
    assert (reply.status, reply.body, reply.headers["x-a"]) == (503, "not now", "1")


def test_http_get_answers_at_its_content_length_without_waiting_for_the_close(tcp) -> None:
    def keep_open(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        time.sleep(3)

    serve(tcp, keep_open)
    start = time.monotonic()
    assert http_get("blog.test", "/", timeout=5, port=tcp.getsockname()[1]).status == 204
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(("answer", "error", "text"), [
    (b"", "RemoteDisconnected", "Remote end closed connection without response"),
    (b"SSH-2.0-OpenSSH\r\n", "BadStatusLine", "SSH-2.0-OpenSSH"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "BadStatusLine", "not an HTTP response"),
])
def test_http_get_names_a_missing_or_foreign_answer_as_an_oserror(tcp, answer, error,
                                                                  text) -> None:
    serve(tcp, lambda c, _r: c.sendall(answer))
    with pytest.raises(OSError) as failure:
        http_get("blog.test", "/", timeout=5, port=tcp.getsockname()[1])
    assert failure.type.__name__ == error and text in str(failure.value)


def test_http_get_over_plain_http_leaves_http_client_and_ssl_unimported() -> None:
    code = ("import sys; import fleet.server.status, fleet.server.health, fleet.server.certs; "
            "print(sorted(m for m in ('http.client', 'ssl') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def unix(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "app.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    yield sock, path
    sock.close()


def test_uwsgi_get_sends_the_request_vars_and_parses_the_reply(unix) -> None:
    sock, path = unix
    seen = serve(sock, lambda c, _r: c.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbusy"))
    reply = uwsgi_get(path, "/health?deep=1", "blog.test", timeout=5)
    assert (reply.status, reply.headers["content-type"], reply.body) == (503, "text/plain",
                                                                         "busy")
    packet = seen[0]
    assert packet[0] == 0 and b"PATH_INFO\x07\x00/health" in packet
    assert b"QUERY_STRING\x06\x00deep=1" in packet and b"HTTP_HOST\x09\x00blog.test" in packet


def test_uwsgi_get_refuses_an_endless_answer(unix) -> None:
    sock, path = unix

    def flood(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
        while True:
            conn.sendall(b"x" * 65536)

    serve(sock, flood)
    with pytest.raises(AnswerTooLarge):
        uwsgi_get(path, "/", "blog.test", timeout=10)

"""The probes LocalHost answers for the modules above it (they no longer read /proc, sockets
or logs themselves): checked against this machine."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from fleet.errors import AnswerTooLarge
from fleet.host.machine import LocalHost


def test_processes_include_this_one_with_its_uid_cmdline_and_memory() -> None:
    me = next(p for p in LocalHost().processes() if p.pid == os.getpid())
    assert me.uid == os.getuid()
    assert b"python" in me.cmdline.split(b"\0")[0] or b"pytest" in me.cmdline
    assert me.rss > 1024 * 1024


def test_read_tail_reads_the_end_of_a_large_file(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(200_000)))
    tail = LocalHost().read_tail(str(log), 3)
    assert tail.endswith(b"line 199998\nline 199999\n")
    assert len(tail) < 200_000  # only the end was read


def test_ask_socket_reads_until_close_within_its_cap(tmp_path: Path) -> None:
    path = str(tmp_path / "stats.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(2)

    def answer(data: bytes) -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data)

    try:
        threading.Thread(target=answer, args=(b'{"ok": 1}',), daemon=True).start()
        assert LocalHost().ask_socket(path, timeout=5, cap=100) == b'{"ok": 1}'
        threading.Thread(target=answer, args=(b"x" * 1000,), daemon=True).start()
        with pytest.raises(AnswerTooLarge):
            LocalHost().ask_socket(path, timeout=5, cap=100)
    finally:
        server.close()


def test_follow_yields_lines_as_they_come_and_stops_the_command() -> None:
    lines = LocalHost().follow(["sh", "-c", "echo one; echo two; sleep 30"],
                               env={"PATH": "/usr/bin:/bin"})
    assert [next(lines), next(lines)] == ["one\n", "two\n"]
    lines.close()  # the caller stops iterating: the command is terminated, not waited for

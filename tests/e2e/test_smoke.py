"""Smoke tests of the harness itself: a booted server is really bare, reachable, rebootable,
and leaves nothing behind. If these fail, no other end-to-end result means anything."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.harness import BareServer, GitRemote, NoResponse

MAX_BOOT_SECONDS = 15


def _pkt_line(payload: bytes) -> bytes:
    return f"{len(payload) + 4:04x}".encode() + payload


def test_server_is_bare_and_reachable(
    bare_server: BareServer, git_remote: GitRemote, tmp_path: Path
) -> None:
    server = bare_server
    print(f"boot from cached rootfs: {server.boot_seconds:.2f}s")
    assert server.boot_seconds is not None and server.boot_seconds < MAX_BOOT_SECONDS

    state = server.run(["systemctl", "is-system-running"]).stdout.strip()
    assert state in ("running", "degraded"), server.journal(lines=50)
    for tool in ("python3", "nginx", "git", "uwsgi", "ps"):
        found = server.run(f"command -v {tool}")
        assert found.returncode != 0, f"{tool} should be absent: {found.stdout}"

    # The git remote answers from inside: speak git's protocol over bash's /dev/tcp.
    if "smoke" not in git_remote.repos_created:
        git_remote.create_repo("smoke", files={"README": "smoke\n"})
    request = _pkt_line(b"git-upload-pack /smoke.git\0host=127.0.0.1\0") + b"0000"
    talk = server.run(
        ["bash", "-c", 'exec 3<>"/dev/tcp/127.0.0.1/$1"; cat >&3; timeout 10 cat <&3',
         "bash", str(git_remote.port)],
        input=request,
        timeout=30,
    )  # fmt: skip
    assert talk.returncode == 0, talk.stderr
    assert f"{git_remote.head('smoke')} refs/heads/main" in talk.stdout, talk.stdout

    # Files: host -> server -> host, with mode, into a tmpfs (/run) and onto disk.
    payload = os.urandom(4096) + "é\n".encode()
    (tmp_path / "blob").write_bytes(payload)
    server.copy_in(tmp_path / "blob", "/root/sub/blob", mode=0o600)
    assert server.read_file("/root/sub/blob") == payload
    assert server.run(["stat", "-c", "%a %U", "/root/sub/blob"]).stdout.split() == ["600", "root"]
    server.write_file("/run/fleet-smoke/note", "hi\n", 0o640)
    assert server.exists("/run/fleet-smoke/note") and not server.exists("/run/nope")
    assert server.read_file("/run/fleet-smoke/note") == b"hi\n"
    with pytest.raises(FileNotFoundError):
        server.read_file("/etc/does-not-exist")

    # /proc readers (no procps inside).
    assert server.pids_of("systemd-journald")
    assert server.proc_user(1) == "root"
    (dbus,) = server.pids_of("dbus-daemon")
    assert server.proc_user(dbus) == "messagebus"
    assert "dbus" in server.journal("dbus.service", lines=20)

    # Nothing listens on port 80 yet: "no response" is distinguishable from an HTTP error.
    with pytest.raises(NoResponse) as info:
        server.http("/", host="example.test", timeout=3)
    assert info.value.reason == "refused"


def test_reboot_brings_systemd_back(bare_server: BareServer) -> None:
    server = bare_server
    server.write_file("/var/lib/fleet-smoke/marker", "persisted\n")
    before = server.init_pid
    started = time.monotonic()
    server.reboot()
    print(f"reboot (poweroff + boot): {time.monotonic() - started:.2f}s")
    assert server.init_pid != before
    state = server.run(["systemctl", "is-system-running"]).stdout.strip()
    assert state in ("running", "degraded")
    assert server.read_file("/var/lib/fleet-smoke/marker") == b"persisted\n"
    boots = server.run(["journalctl", "--list-boots", "--no-pager", "-q"]).stdout
    assert len(boots.strip().splitlines()) == 2, boots


def _nspawn_pids_for(path: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"systemd-nspawn" in cmdline and str(path).encode() in cmdline:
            pids.append(int(entry))
    return pids


def test_destroy_leaves_nothing_behind(e2e_host: None, suite: str) -> None:
    server = BareServer(suite)
    try:
        # Before boot, files are read through the tree (symlinks resolved inside it).
        assert b"Debian" in server.read_file("/etc/os-release")
        server.boot()
        assert _nspawn_pids_for(server.dir)
        started = time.monotonic()
    finally:
        server.destroy()
    print(f"kill + delete: {time.monotonic() - started:.2f}s")
    assert not _nspawn_pids_for(server.dir)
    assert str(server.dir) not in Path("/proc/self/mountinfo").read_text()
    assert not server.dir.exists()
    assert not Path("/run/systemd/nspawn/propagate", server.name).exists()
    server.destroy()  # idempotent
    with pytest.raises(Exception, match="destroyed"):
        server.boot()

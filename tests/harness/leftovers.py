"""Servers left behind by dead test sessions: found by their owner file and nspawn command
lines, and removed (nspawn, container, mounts and tree) before a new server is made; and the
signal handlers that let a killed session clean up after itself."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from ._util import (
    descendants,
    kill_quietly,
    pid_alive,
    read_cmdline,
    read_comm,
    safe_rmtree,
    wait_until,
)

SERVERS_ROOT = Path(os.environ.get("FLEET_TEST_SERVERS", "/var/tmp/fleet-test-servers"))
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
_swept = False


def start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_alive(server_dir: Path) -> bool:
    try:
        pid_s, start = (server_dir / "owner").read_text().split()
    except (OSError, ValueError):
        return False
    return pid_alive(int(pid_s)) and start_time(int(pid_s)) == start


def _nspawn_pids_for(server_dir: Path) -> list[int]:
    """nspawn processes booting a tree below *server_dir* (a dir or SERVERS_ROOT itself)."""
    prefix = f"--directory={server_dir}/"
    return [
        int(e) for e in os.listdir("/proc")
        if e.isdigit() and read_comm(int(e)) == "systemd-nspawn"
        and any(a.startswith(prefix) for a in read_cmdline(int(e)))
    ]  # fmt: skip


def kill_nspawns_for(server_dir: Path) -> None:
    """SIGKILL any nspawn (and its container) still running from *server_dir*."""
    for pid in _nspawn_pids_for(server_dir):
        for child in descendants(pid):
            if read_comm(child) == "systemd":
                kill_quietly(child)  # pid-ns init: takes the whole container down
        kill_quietly(pid)
        kill_quietly(pid, group=True)
    for pid in _nspawn_pids_for(server_dir):
        wait_until(lambda p=pid: not pid_alive(p), timeout=10, what=f"nspawn {pid} to exit")


def sweep_leftovers() -> list[Path]:
    """Remove servers left by dead sessions (their nspawn, mounts and trees)."""
    removed: list[Path] = []
    if not SERVERS_ROOT.is_dir():
        return removed
    for pid in _nspawn_pids_for(SERVERS_ROOT):  # also those whose tree is already deleted
        arg = next(a for a in read_cmdline(pid) if a.startswith("--directory="))
        server_dir = Path(arg.removeprefix("--directory=")).parent
        if not server_dir.is_dir():
            kill_nspawns_for(server_dir)
    for server_dir in SERVERS_ROOT.iterdir():
        if not server_dir.is_dir() or _owner_alive(server_dir):
            continue
        kill_nspawns_for(server_dir)
        safe_rmtree(server_dir)
        shutil.rmtree(PROPAGATE_DIR / server_dir.name, ignore_errors=True)
        removed.append(server_dir)
    return removed


def sweep_leftovers_once() -> None:
    global _swept
    if not _swept:
        _swept = True
        for path in sweep_leftovers():
            print(f"[fleet-tests] removed leftover server {path}")


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so finalizers and atexit still run."""

    def _handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _handler)

"""Small host-side helpers shared by the harness: mounts, process trees, safe deletion.

They exist because a killed test session can leave a container tree with live mounts
(debootstrap's /proc, nspawn's propagation dir) and a plain ``rm -rf`` would then descend
into them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class HarnessError(RuntimeError):
    """Root error of the test harness (setup/teardown went wrong, not the code under test)."""


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below *path* in our mount namespace, deepest first."""
    root = os.path.realpath(path)
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            # Field 5 is the mount point, with spaces etc. octal-escaped.
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all_under(path: Path) -> None:
    """Lazily unmount everything below *path* (no-op when nothing is mounted)."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)


def safe_rmtree(path: Path) -> None:
    """Delete *path* without ever crossing into a mounted filesystem."""
    if not os.path.lexists(path):
        return
    unmount_all_under(path)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False)
    if os.path.lexists(path):
        raise HarnessError(f"could not delete {path} (still mounted or busy?)")


def _ppid_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> Iterator[int]:
    """All live descendants of *pid*, breadth first."""
    children: dict[int, list[int]] = {}
    for child, parent in _ppid_map().items():
        children.setdefault(parent, []).append(child)
    queue = list(children.get(pid, []))
    while queue:
        current = queue.pop(0)
        yield current
        queue.extend(children.get(current, []))


def read_comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def read_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_quietly(pid: int, sig: int = signal.SIGKILL, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when we die, even by SIGKILL (PR_SET_PDEATHSIG).

    A test session killed hard must not leave a container or git daemon running.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def wait_until(
    probe: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll *probe* until it returns something truthy; raise TimeoutError naming *what*."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

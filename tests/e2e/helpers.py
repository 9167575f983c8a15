"""What end-to-end tests do with fleet on a bare server: install it, run it, look at /proc."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.harness.server import BareServer, Completed, NoResponse

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]


def build_pyz(out: Path) -> Path:
    """Build the zipapp exactly as users do (`python3 build.py`)."""
    subprocess.run([sys.executable, str(ROOT / "build.py"), "--out", str(out)], check=True,
                   cwd=ROOT, capture_output=True)
    return out


def install_fleet(server: BareServer, pyz: Path) -> None:
    server.copy_in(pyz, "/root/fleet.pyz", 0o644)
    server.copy_in(ROOT / "bootstrap", "/root/bootstrap", 0o755)


def fleet(server: BareServer, *args: str, timeout: float = 1500,
          input: str | None = None) -> Completed:
    return server.run(["/usr/local/bin/fleet", *args], timeout=timeout, input=input)


@dataclass
class JsonRun:
    result: Completed
    data: dict

    @property
    def returncode(self) -> int:
        return self.result.returncode


def fleet_json(server: BareServer, *args: str, timeout: float = 1500,
               input: str | None = None) -> JsonRun:
    result = fleet(server, *args, "--json", timeout=timeout, input=input)
    try:
        data = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"fleet {args} printed no JSON (rc {result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}") from exc
    return JsonRun(result, data)


def describe(run: JsonRun) -> str:
    """Failed steps, for assertion messages."""
    failed = [s for s in run.data.get("steps", []) if s["status"] == "failed"]
    return json.dumps(failed, indent=1)[:6000] + run.result.stderr[-2000:]


def get(server: BareServer, host: str, path: str = "/", attempts: int = 1) -> tuple[int, str]:
    for attempt in range(attempts):
        try:
            response = server.http(path, host=host)
            return response.status, response.body
        except NoResponse:
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def proc_table(server: BareServer) -> list[dict[str, str]]:
    """Every process inside the server: pid, comm, uid, user (read from /proc: no procps)."""
    script = r"""
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  comm=$(cat $d/comm 2>/dev/null) || continue
  uid=$(awk '/^Uid:/ {print $2}' $d/status 2>/dev/null)
  ppid=$(awk '/^PPid:/ {print $2}' $d/status 2>/dev/null)
  echo "$pid $ppid $uid $comm"
done
"""
    out = server.run(["sh", "-c", script], check=True).stdout
    users = {line.split(":")[2]: line.split(":")[0]
             for line in server.read_file("/etc/passwd").decode().splitlines() if line}
    rows = []
    for line in out.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4:
            pid, ppid, uid, comm = parts
            rows.append({"pid": pid, "ppid": ppid, "uid": uid, "user": users.get(uid, uid),
                         "comm": comm})
    return rows


def uwsgi_processes(server: BareServer) -> list[dict[str, str]]:
    return [p for p in proc_table(server) if p["comm"].startswith("uwsgi")]


def service_pids(server: BareServer) -> dict[str, set[str]]:
    """PIDs of uWSGI (by user) and nginx processes: unchanged PIDs mean nothing restarted."""
    pids: dict[str, set[str]] = {}
    for p in proc_table(server):
        if p["comm"].startswith("uwsgi") or p["comm"] == "nginx":
            pids.setdefault(f"{p['comm']}:{p['user']}", set()).add(p["pid"])
    return pids


def bootstrap_apply(server: BareServer, toml: str, timeout: float = 1500) -> Completed:
    """Provision as a user would: write fleet.toml, `sh bootstrap fleet.pyz apply` it."""
    server.write_file("/root/fleet.toml", toml)
    result = server.run(["sh", "/root/bootstrap", "/root/fleet.pyz", "apply",
                         "/root/fleet.toml", "--json"], timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def eventually(check: Callable[[], T], timeout: float = 30, every: float = 0.5) -> T:
    """check() until it passes (returns its value), or re-raise its last AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(every)

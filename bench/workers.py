"""Workers on the new code, measured: the queue app (tests/apps/queue: web + a Redis worker)
is deployed, then `fleet apply` deploys new commits one by one while two probes watch from
the host: the web app (GET / through nginx) and the worker (a task enqueued through the web
app, its result read back). For each deploy it prints the seconds from the start of
`fleet apply` until each answers with the new version, and their ratio worker/web.

    sudo .venv/bin/python bench/workers.py [--deploys N] [--processes N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from _common import APPS, apply, machine, start
from tests.e2e.helpers import fleet
from tests.harness import BareServer, GitRemote

HOST = "queue.test"
DEADLINE = 180.0  # seconds a probe waits for the new version before giving up
VERSION_FILE = (APPS / "queue" / "version.py").read_text()


def toml(remote: GitRemote, processes: int) -> str:
    return f"""[server]
packages = ["redis-server"]

[apps.queue]
repo = "{remote.url('queue')}"
domains = ["{HOST}"]
[apps.queue.health]
path = "/health"
[apps.queue.workers.tasks]
command = "python worker.py"
processes = {processes}
"""


def web_version(server: BareServer) -> str | None:
    """The version the web app answers with, or None while it does not answer."""
    try:
        answer = server.http("/", host=HOST, timeout=5)
    except OSError:
        return None
    return answer.body.removeprefix("queue ") if answer.status == 200 else None


def enqueue(server: BareServer, key: str) -> bool:
    try:
        return server.http(f"/enqueue/{key}", host=HOST, method="POST", timeout=5).status == 202
    except OSError:
        return False


def result_version(server: BareServer, key: str) -> str | None:
    """The version of the worker that completed `key`, None while none has."""
    try:
        result = server.http(f"/result/{key}", host=HOST, timeout=5)
    except OSError:
        return None
    return json.loads(result.body)["version"] if result.status == 200 else None


def watch_web(server: BareServer, version: str, begin: float, seen: dict[str, float]) -> None:
    """GET / until the web app answers with `version`; store the seconds since `begin`."""
    while time.monotonic() - begin < DEADLINE:
        if web_version(server) == version:
            seen["web"] = time.monotonic() - begin
            return
        time.sleep(0.05)


def watch_worker(server: BareServer, version: str, begin: float,
                 seen: dict[str, float]) -> None:
    """Enqueue a task every 0.1 s and read the results in queue order (workers take the oldest
    first); store the seconds since `begin` when the first comes back with `version`."""
    pending: list[str] = []
    count, due = 0, 0.0
    while time.monotonic() - begin < DEADLINE:
        if time.monotonic() >= due:
            key = f"{version}-{count}"
            count += 1
            if enqueue(server, key):
                pending.append(key)
            due = time.monotonic() + 0.1
        while pending:
            done = result_version(server, pending[0])
            if done is None:
                break
            pending.pop(0)
            if done == version:
                seen["worker"] = time.monotonic() - begin
                return
        time.sleep(0.02)


def deploy(server: BareServer, remote: GitRemote, version: str) -> tuple[int, float, dict]:
    """Commit `version`, run `fleet apply`, and time the web app and the worker moving."""
    remote.commit("queue", {"version.py": VERSION_FILE.replace('"v1"', f'"{version}"')},
                  f"deploy {version}")
    seen: dict[str, float] = {}
    begin = time.monotonic()
    probes = [threading.Thread(target=watch, args=(server, version, begin, seen))
              for watch in (watch_web, watch_worker)]
    for probe in probes:
        probe.start()
    result = fleet(server, "apply")
    seen["apply"] = time.monotonic() - begin
    for probe in probes:
        probe.join()
    return result.returncode, seen.pop("apply"), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=3, help="new commits to deploy")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, GitRemote() as remote:
        remote.create_repo("queue", APPS / "queue")
        server = start(remote, Path(tmp))
        try:
            apply(server, toml(remote, args.processes))
            warm: dict[str, float] = {}
            watch_worker(server, "v1", time.monotonic(), warm)
            if "worker" not in warm:
                raise SystemExit("the worker did not complete a task after the first apply")
            for n in range(2, args.deploys + 2):
                rows.append((f"v{n}", *deploy(server, remote, f"v{n}")))
        finally:
            server.destroy()
    print(f"machine: {machine()}")
    print(f"worker processes: {args.processes}; seconds from the start of `fleet apply`")
    print(f"{'deploy':<7} {'exit':>4} {'apply':>6} {'web':>6} {'worker':>7} {'worker/web':>11}")
    for version, code, total, seen in rows:
        web, worker = seen.get("web"), seen.get("worker")
        ratio = f"{worker / web:.2f}" if web and worker else "-"
        print(f"{version:<7} {code:>4} {total:>6.1f} {fmt(web):>6} {fmt(worker):>7} "
              f"{ratio:>11}")


def fmt(seconds: float | None) -> str:
    return f"{seconds:.2f}" if seconds is not None else "never"


if __name__ == "__main__":
    main()

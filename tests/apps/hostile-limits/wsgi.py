"""Hostile fixture app for per-app limits (issue 18): each endpoint misbehaves one way.

- GET /hog allocates without end (8 MiB every 20 ms, every page touched) and never returns
  normally: the app's memory limit must stop it, not the kernel's OOM killer.
- GET /spin?s=N busy-loops N seconds: the CPU limit (and the request timeout) apply.
- GET /fork starts a fork bomb and answers how many forks succeeded and failed (EAGAIN at
  the app's task limit).
- GET /sleep?s=N sleeps N seconds: the request timeout must kill it and bring the worker back.

The fixture carries its own caps so that a server without any limit survives it: /hog stops
growing at HOG_CAP (then idles, still never answering), the bomb makes at most
1 + CHILDREN + CHILDREN * GRANDCHILDREN processes, each ends after LIFETIME seconds, and no
new bomb starts while the app's user already runs BOMB_REFUSE tasks.
"""

import contextlib
import json
import os
import resource
import select
import time

from flask import Flask, request

app = Flask(__name__)

CHUNK = 8 << 20  # bytes per allocation step of /hog
STEP = 0.02  # seconds between /hog's allocations
HOG_CAP = 1 << 30  # /hog stops growing here: a server without limits must not go down
CHILDREN, GRANDCHILDREN = 30, 32  # the bomb: at most 1 + 30 + 30 * 32 = 991 processes
LIFETIME = 20.0  # seconds every process of the bomb lives
REPORT_WAIT = 3.0  # seconds /fork waits for the bomb's reports (below any timeout tested)
BOMB_REFUSE = 500  # tasks of this user above which /fork refuses to start another bomb


def text(body: str, status: int = 200):
    return body, status, {"Content-Type": "text/plain"}


@app.get("/")
def index():
    return text(f"hostile pid={os.getpid()}")


@app.get("/health")
def health():
    return text("ok")


@app.get("/hog")
def hog():
    hoard, size = [], 0
    while True:
        if size < HOG_CAP:
            chunk = bytearray(CHUNK)
            chunk[::4096] = b"\x01" * (CHUNK // 4096)  # touch every page: resident, not virtual
            hoard.append(chunk)
            size += CHUNK
        time.sleep(STEP)


@app.get("/spin")
def spin():
    end = time.monotonic() + float(request.args.get("s", "10"))
    n = 0
    while time.monotonic() < end:
        n += 1
    return text(f"spun {n}")


@app.get("/sleep")
def sleep():
    time.sleep(float(request.args.get("s", "10")))
    return text("slept")


def own_tasks() -> int:
    """Threads of every process of this app's user (what RLIMIT_NPROC counts)."""
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass  # it exited meanwhile
    return count


def detach(keep: int) -> None:
    """In a forked child: let go of every descriptor but `keep`, above all the request's
    connection, or nginx would wait for the whole bomb before it sees the answer end."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    high = soft if 0 < soft < (1 << 20) else (1 << 20)
    os.closerange(3, keep)
    os.closerange(keep + 1, high)


def bomb(report: int, forks: int, children_forks: int) -> None:
    """One process of the bomb: fork `forks` children that each fork `children_forks`,
    write '+' per fork and '!' per refused one (EAGAIN at the task limit) to `report`, live
    LIFETIME seconds, reap its children. Only ever called in a child: the caller exits."""
    born, ok, failed = time.monotonic(), 0, 0
    for _ in range(forks):
        try:
            pid = os.fork()
        except OSError:
            failed += 1
            continue
        if pid == 0:
            child(report, children_forks, 0)
        ok += 1
    try:
        os.write(report, b"+" * ok + b"!" * failed)
    finally:
        os.close(report)  # /fork's read sees the end once every process reported
    time.sleep(max(0.0, LIFETIME - (time.monotonic() - born)))
    while True:
        try:
            os.wait()  # its own children, so none stays a zombie counted against the user
        except ChildProcessError:
            break


def child(report: int, forks: int, children_forks: int) -> None:
    """A forked process of the bomb: whatever happens it exits here, never returning into
    the uWSGI worker's code it was copied from."""
    try:
        bomb(report, forks, children_forks)
    finally:
        os._exit(0)


def go_between(report: int) -> None:
    """Forked by the worker; starts the bomb's root and exits at once, so the bomb belongs
    to init (which reaps it), not to the worker, and holds none of the worker's sockets."""
    try:
        detach(report)
        os.setsid()
        try:
            pid = os.fork()
        except OSError:
            os.write(report, b"!")
        else:
            if pid == 0:
                child(report, CHILDREN, GRANDCHILDREN)
            os.write(report, b"+")
    finally:
        os._exit(0)


@app.get("/fork")
def fork():
    tasks = own_tasks()
    if tasks > BOMB_REFUSE:
        return text(f"refused: {tasks} tasks already", 429)
    read, write = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read)
        os.close(write)
        return text(json.dumps({"forked": 0, "failed": 1, "complete": True, "error": str(exc)}))
    if pid == 0:
        go_between(write)
    os.close(write)
    with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: already reaped
        os.waitpid(pid, 0)
    got, complete = b"", False
    deadline = time.monotonic() + REPORT_WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(read, 65536)
        if not data:
            complete = True
            break
        got += data
    os.close(read)
    answer = {"forked": got.count(b"+"), "failed": got.count(b"!"), "complete": complete}
    return text(json.dumps(answer))

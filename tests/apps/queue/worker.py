"""The queue's worker: takes keys off the Redis list and writes, for each, who completed it
(version, release, pid, user, directory, an env value), so a test can see where it runs.

SIGTERM (a graceful stop) lets the current item finish, then the loop ends with exit 0."""

import json
import os
import pwd
import signal
import sys
import time

import redis
from version import VERSION

QUEUE = "queue:tasks"
stopping = False


def stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


def report(key: str) -> str:
    return json.dumps({
        "key": key, "version": VERSION, "release": os.environ.get("FLEET_RELEASE"),
        "process": os.environ.get("FLEET_PROCESS"), "pid": os.getpid(), "uid": os.getuid(),
        "user": pwd.getpwuid(os.getuid()).pw_name, "cwd": os.getcwd(),
        "home": os.environ.get("HOME"), "prefix": sys.prefix,
        "secret": os.environ.get("QUEUE_SECRET"),
        "from_file": os.environ.get("QUEUE_FROM_FILE"),
    })


def main() -> int:
    signal.signal(signal.SIGTERM, stop)
    store = redis.Redis(host="localhost", port=6379, decode_responses=True)
    print(f"worker {VERSION} pid={os.getpid()} started")
    while not stopping:
        try:
            item = store.blpop([QUEUE], timeout=1)  # wakes every second to see `stopping`
        except redis.ConnectionError:  # Redis not up yet (boot): try again shortly
            time.sleep(0.5)
            continue
        if item is not None:
            store.set(f"result:{item[1]}", report(item[1]))
            print(f"worker {VERSION} done {item[1]}")
    print(f"worker {VERSION} pid={os.getpid()} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

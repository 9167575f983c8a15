"""Hostile fixture app: replaces its vassal's stats socket (its directory is the app's) with
its own listener, which answers JSON nested a hundred thousand levels deep.

fleet's `status` must report the app's stats as unreadable, never a RecursionError traceback.
"""

import contextlib
import os
import socket

from flask import Flask

app = Flask(__name__)
NESTED = b"[" * 100_000 + b"]" * 100_000


def stats_path() -> str:
    import uwsgi  # only inside uWSGI

    value = uwsgi.opt.get("stats") or uwsgi.opt.get(b"stats")
    return value.decode() if isinstance(value, bytes) else str(value)


def serve_forever(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError):
            conn.sendall(NESTED)
        conn.close()


@app.get("/")
def index():
    return "hijack", 200, {"Content-Type": "text/plain"}


@app.get("/hijack")
def hijack():
    path = stats_path()
    os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    if os.fork() == 0:  # the child answers for ever; the worker goes on serving
        os.setsid()
        serve_forever(listener)
        os._exit(0)
    listener.close()
    return f"hijacked {path}", 200, {"Content-Type": "text/plain"}

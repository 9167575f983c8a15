"""Fixture app whoami: answers with the server's hostname, so a test behind a front can see
which app server served each request."""

import os
import socket

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    version = os.environ.get("WHOAMI_VERSION", "v1")
    return f"whoami {socket.gethostname()} {version}", 200, {"Content-Type": "text/plain"}


@app.get("/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain"}

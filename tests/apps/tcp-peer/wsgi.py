"""Fixture app tcp-peer: reports what a request told it (REMOTE_ADDR, one header), so a test
can see what a local user who connects to a TCP vassal socket directly can make it believe."""

import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return "tcp-peer v1", 200, {"Content-Type": "text/plain"}


@app.get("/peer")
def peer():
    forged = request.environ.get("HTTP_X_FLEET_TEST", "-")
    return (f"remote={request.remote_addr} header={forged} pid={os.getpid()}", 200,
            {"Content-Type": "text/plain"})

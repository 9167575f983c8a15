"""Fixture app pulse: a tiny hello world, plus a slow page to keep workers busy (autoscaling)."""

import os
import time

from flask import Flask, request

app = Flask(__name__)


@app.get("/")
def index():
    return f"pulse pid={os.getpid()}", 200, {"Content-Type": "text/plain"}


@app.get("/slow")
def slow():
    time.sleep(float(request.args.get("s", "0.5")))
    return "slow", 200, {"Content-Type": "text/plain"}

"""Hostile fixture app: its health endpoint streams one byte a second and never ends, so a
reader with only a per-read timeout would wait forever (issue 14)."""

import time

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "stream", 200, {"Content-Type": "text/plain"}


@app.get("/health")
def health():
    def forever():
        while True:
            yield b"x"
            time.sleep(1)

    return app.response_class(forever(), mimetype="text/plain")

"""Fixture app that fails at import time: the vassal must never report it healthy."""

import does_not_exist_xyz  # noqa: F401
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "unreachable"

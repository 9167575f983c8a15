"""Fixture app whose requirements cannot be installed: a deploy must fail at pip."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "broken-reqs", 200, {"Content-Type": "text/plain"}

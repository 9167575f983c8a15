"""Fixture app tally: a known mix of answers for `fleet top` and `fleet metrics` to count:
200 on /, 404 on any unknown path (Flask's own), 500 on /boom."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "tally", 200, {"Content-Type": "text/plain"}


@app.get("/boom")
def boom():
    return "boom", 500, {"Content-Type": "text/plain"}


@app.get("/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain"}

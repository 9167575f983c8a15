"""Fixture app hreqs: a pip.py beside requirements.txt, and an init that leaves processes."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "hreqs ok", 200, {"Content-Type": "text/plain"}

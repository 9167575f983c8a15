"""Fixture app hreqs: a pip.py beside requirements.txt, a local package it names (pip builds
it in place, writing egg-info: never in the read-only release), and an init that leaves
processes."""

import localpkg
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return f"hreqs ok {localpkg.VALUE}", 200, {"Content-Type": "text/plain"}

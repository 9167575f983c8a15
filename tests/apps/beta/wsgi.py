"""Fixture app beta: reports the SQLAlchemy it actually imported (2.0.x pin)."""

import sqlalchemy
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return f"beta sqlalchemy={sqlalchemy.__version__}", 200, {"Content-Type": "text/plain"}


@app.get("/health")
def health():
    return "ok", 200, {"Content-Type": "text/plain"}

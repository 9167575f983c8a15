"""Fixture app keeper: rows in a SQLite database in Flask's instance folder (persisted)."""

import os
import sqlite3

from flask import Flask

app = Flask(__name__)
DB = os.path.join(app.instance_path, "keeper.db")
VERSION = "v1"


def db() -> sqlite3.Connection:
    return sqlite3.connect(DB)


@app.get("/")
def index():
    with db() as conn:
        count = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    return f"keeper {VERSION} notes={count}", 200, {"Content-Type": "text/plain"}


@app.post("/notes")
def add():
    with db() as conn:
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    return "added", 201, {"Content-Type": "text/plain"}

"""Fixture app ledger: rows in a SQLite database in WAL mode, in Flask's instance folder
(persisted). POST /rows commits one row and answers its id only after the commit, so a
client knows which rows any later snapshot must hold; GET /rows answers "COUNT MAXID"."""

import os
import sqlite3
import time

from flask import Flask

app = Flask(__name__)
DB = os.path.join(app.instance_path, "ledger.db")
TEXT = {"Content-Type": "text/plain"}


def db() -> sqlite3.Connection:
    os.makedirs(app.instance_path, exist_ok=True)
    conn = sqlite3.connect(DB, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


@app.get("/health")
def health():
    return "ok", 200, TEXT


@app.post("/rows")
def add():
    # SQLite answers "database is locked" at once, without waiting out the timeout, in a few
    # WAL cases (another connection opening or recovering the WAL index while the last one
    # closes); with a connection per request and four writers, a careful app retries those.
    for attempt in range(5):
        try:
            conn = db()
            try:
                row = conn.execute("INSERT INTO rows (body) VALUES (?)", ("x" * 200,)).lastrowid
                conn.commit()
            finally:
                conn.close()
            return str(row), 201, TEXT
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


@app.get("/rows")
def count():
    conn = db()
    try:
        total, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM rows").fetchone()
    finally:
        conn.close()
    return f"{total} {top}", 200, TEXT

"""The app's init command: create the schema (idempotent), as a migration would."""

import os
import sqlite3

from wsgi import DB, app

os.makedirs(app.instance_path, exist_ok=True)
with sqlite3.connect(DB) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
print("schema ready at", DB)

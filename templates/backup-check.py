# fleet restore: PRAGMA integrity_check of each restored SQLite database, run as the APP's
# user (contained), never as root. Prints {"PATH": "ok" or the first problem} as JSON.
# argv: DATABASE...
import json
import sqlite3
import sys
import urllib.parse

results = {}
for path in sys.argv[1:]:
    try:
        db = sqlite3.connect("file:" + urllib.parse.quote(path) + "?mode=rw", uri=True,
                             timeout=60)
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
        results[path] = "ok" if rows == [("ok",)] else str(rows[0][0])[:300]
    except sqlite3.Error as exc:
        results[path] = f"{type(exc).__name__}: {exc}"[:300]
json.dump(results, sys.stdout)

"""Fixture app hostile-links: a plain Flask app whose repos get symbolic links at test time
(tests/e2e/test_contained_paths.py): `static -> /etc`, `app -> /`, `instance -> /etc`, a parent
of a persist item that is a link, and links inside its static directory to /etc/passwd and
/etc/shadow. The links are made when the repo is created, never stored in fleet's tree (a
link to / there would send tools walking the whole disk)."""

import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return f"{os.environ.get('APP_LABEL', 'hostile-links')} ok", 200, {"Content-Type": "text/plain"}

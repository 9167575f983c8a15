"""Fixture app hbuild: says who built it and what its build could write."""

import hostile_build_info as info
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return (f"hbuild built-by={info.BUILT_BY} uid={info.UID} attempts={info.ATTEMPTS}", 200,
            {"Content-Type": "text/plain"})

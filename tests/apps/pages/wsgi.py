"""Fixture app pages: links built with url_for, a redirect and a static file, to prove an app
works under any URL prefix. PAGES_NAME (its env) and VERSION say which app and commit answer."""

import os

from flask import Flask, redirect, request, url_for

VERSION = "v1"
NAME = os.environ.get("PAGES_NAME", "pages")
TEXT = {"Content-Type": "text/plain"}

app = Flask(__name__)


@app.get("/")
def index():
    return (f"{NAME} {VERSION} index root={request.script_root or '-'} "
            f"link={url_for('about')} static={url_for('static', filename='hello.txt')}",
            200, TEXT)


@app.get("/about")
def about():
    return f"{NAME} {VERSION} about", 200, TEXT


@app.get("/go")
def go():
    return redirect(url_for("about"))


@app.get("/health")
def health():
    return f"{NAME} ok", 200, TEXT


@app.get("/<path:rest>")
def anything(rest: str):
    return f"{NAME} {VERSION} path={request.path} root={request.script_root or '-'}", 200, TEXT

"""Fixture app gamma: a package with an app factory (module spec ``gamma:create_app()``)."""

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index():
        return "gamma factory", 200, {"Content-Type": "text/plain"}

    @app.get("/health")
    def health():
        return "ok", 200, {"Content-Type": "text/plain"}

    return app

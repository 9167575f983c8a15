"""Fixture app queue: the web side of a Redis-backed task queue (worker.py completes tasks).

POST /enqueue/KEY pushes KEY; GET /result/KEY returns what the worker wrote for it (404
until then); GET / names the version; GET /health answers 200 while HEALTHY."""

import redis
from flask import Flask
from version import VERSION

HEALTHY = True  # a test commits False to make a release fail its health gate
QUEUE = "queue:tasks"

app = Flask(__name__)
store = redis.Redis(host="localhost", port=6379, decode_responses=True)
TEXT = {"Content-Type": "text/plain"}


@app.get("/")
def index():
    return f"queue {VERSION}", 200, TEXT


@app.post("/enqueue/<key>")
def enqueue(key: str):
    store.rpush(QUEUE, key)
    return f"queued {key}", 202, TEXT


@app.get("/result/<key>")
def result(key: str):
    done = store.get(f"result:{key}")
    if done is None:
        return "not yet", 404, TEXT
    return done, 200, {"Content-Type": "application/json"}


@app.get("/health")
def health():
    return ("ok", 200, TEXT) if HEALTHY else ("unhealthy", 500, TEXT)

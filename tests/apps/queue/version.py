"""The code's version: one constant the web app, the worker and the job all report, so a test
can tell which commit each of them runs."""

VERSION = "v1"

"""Hostile build: tries to write outside the venv, records who built it, and installs a .pth
file that runs at every interpreter start of the venv (as whoever starts it)."""

import getpass
import os
import sysconfig

from setuptools import setup

TARGETS = ("/etc/pwned-setup", "/root/pwned-setup", "/usr/pwned-setup",
           "/srv/fleet/calm/pwned-setup", "/srv/fleet/calm/shared/pwned-setup")


def attempt(path: str) -> str:
    try:
        with open(path, "w") as handle:
            handle.write("written by a build\n")
        return "written"
    except OSError as exc:
        return type(exc).__name__


results = {path: attempt(path) for path in TARGETS}
with open("hostile_build_info.py", "w") as handle:
    handle.write(f"BUILT_BY = {getpass.getuser()!r}\nUID = {os.getuid()}\n"
                 f"ATTEMPTS = {results!r}\n")
paths = sysconfig.get_paths()
site = os.path.relpath(paths["purelib"], paths["data"])
setup(name="hostile-build", version="1.0", py_modules=["hostile_build_info", "wsgi"],
      install_requires=["flask==3.0.3"], data_files=[(site, ["hostile_build.pth"])])

"""End-to-end test harness: bare Debian servers under systemd-nspawn and a local git remote."""

from ._util import HarnessError, wait_until
from .gitremote import GitRemote
from .leftovers import install_signal_handlers, sweep_leftovers
from .results import CommandFailed, Completed, HttpResponse, NoResponse
from .rootfs import SUITES, base_rootfs, default_suite
from .server import BareServer, destroy_all

__all__ = [
    "SUITES",
    "BareServer",
    "CommandFailed",
    "Completed",
    "GitRemote",
    "HarnessError",
    "HttpResponse",
    "NoResponse",
    "base_rootfs",
    "default_suite",
    "destroy_all",
    "install_signal_handlers",
    "sweep_leftovers",
    "wait_until",
]

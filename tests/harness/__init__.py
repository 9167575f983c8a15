"""End-to-end test harness: bare Debian servers under systemd-nspawn and a local git remote."""

from ._util import HarnessError, wait_until
from .gitremote import GitRemote
from .rootfs import SUITES, base_rootfs, default_suite
from .server import (
    BareServer,
    CommandFailed,
    Completed,
    HttpResponse,
    NoResponse,
    destroy_all,
    install_signal_handlers,
    sweep_leftovers,
)

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

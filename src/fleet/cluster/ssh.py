"""The transport of `fleet push`: the system's OpenSSH client, one multiplexed connection per host.

Using ssh itself (not a Python SSH library) means the operator's ~/.ssh/config, agent, keys,
known_hosts, ProxyJump and certificates all apply exactly as for their own `ssh`. The control
sockets live in a private temporary directory and die shortly after the run (ControlPersist),
so nothing outlives it even if the run is killed.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Protocol

from fleet.cluster.inventory import Server

UNREACHABLE = 255  # ssh's own exit status for "could not connect or authenticate"
CONTROL_PERSIST = 30  # seconds a master connection outlives its last session


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: bytes
    stderr: str


class Transport(Protocol):
    """Runs one shell command on a server; unit tests replace it with a fake."""

    def run(self, server: Server, command: str, input: bytes | None = None,
            timeout: float | None = None) -> Result: ...

    def close(self) -> None: ...


def as_root(server: Server, command: str) -> str:
    """Commands run as root: directly for root logins, else through passwordless sudo."""
    if server.user == "root":
        return command
    return f"sudo -n sh -c {shlex.quote(command)}"


class OpenSSH:
    """`ssh` with ControlMaster multiplexing: one TCP/auth handshake per host per run."""

    def __init__(self, config_file: str | None = None, connect_timeout: int = 10) -> None:
        self.config_file = config_file  # -F only when asked: the operator's config otherwise
        self.connect_timeout = connect_timeout
        self.control_dir = tempfile.mkdtemp(prefix="fleet-ssh-")
        self.used: dict[str, Server] = {}

    def argv(self, server: Server, command: str) -> list[str]:
        argv = ["ssh"]
        if self.config_file:
            argv += ["-F", self.config_file]
        argv += [
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self.control_dir}/%C",
            "-o", f"ControlPersist={CONTROL_PERSIST}",
            "-o", "BatchMode=yes",  # never prompt: a push runs unattended, host after host
            "-o", f"ConnectTimeout={self.connect_timeout}",
            "-o", "ServerAliveInterval=15",
            "-p", str(server.port), "-l", server.user,
            "--", server.address, command,
        ]  # fmt: skip
        return argv

    def run(self, server: Server, command: str, input: bytes | None = None,
            timeout: float | None = None) -> Result:
        self.used[server.name] = server
        try:
            proc = subprocess.run(self.argv(server, command), input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Result(UNREACHABLE, b"", f"no answer within {timeout:.0f} s")
        except FileNotFoundError:
            return Result(UNREACHABLE, b"", "ssh not found: install the OpenSSH client")
        return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))

    def close(self) -> None:
        """Stop the master connections and delete their sockets."""
        for server in self.used.values():
            exit_argv = self.argv(server, "")[:-1]
            exit_argv.insert(1, "-O")
            exit_argv.insert(2, "exit")
            subprocess.run(exit_argv, capture_output=True, check=False, timeout=15)
        shutil.rmtree(self.control_dir, ignore_errors=True)

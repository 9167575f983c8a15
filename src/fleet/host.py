"""The only code that touches the machine: run commands and read/write files.

Resources read facts through a Host and the executor applies actions through it, so unit
tests swap in a fake host and the real one stays small.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fleet.errors import CommandError

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Temp names of write() (mkstemp: .fleet-tmp-XXXXXXXX) and symlink() (NAME.fleet-tmp). "tmp" in
# both keeps them apart from fleet's own dot files (.fleet-complete): converge sweeps them.
TEMP_PREFIX = ".fleet-tmp-"
LINK_TEMP_SUFFIX = ".fleet-tmp"
_TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}[a-z0-9_]{{8}}|.+{re.escape(LINK_TEMP_SUFFIX)}")


def is_temp_name(name: str) -> bool:
    """A temp file write() or symlink() leaves behind when the run is killed mid-way."""
    return _TEMP_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class FileState:
    """What fleet compares a managed file (or directory, or link) against."""

    kind: str  # "file", "dir", "link", "other"
    mode: int
    owner: str
    group: str
    target: str = ""  # symlink target
    mtime: float = field(default=0.0, compare=False)


class Host(Protocol):
    def run(self, argv: Sequence[str], *, check: bool = True, cwd: str | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float | None = None) -> RunResult: ...

    def read(self, path: str) -> bytes | None: ...

    def state(self, path: str) -> FileState | None: ...

    def write(self, path: str, content: bytes, mode: int, owner: str, group: str) -> None: ...

    def mkdir(self, path: str, mode: int, owner: str, group: str) -> None: ...

    def chown(self, path: str, mode: int, owner: str, group: str) -> None: ...

    def symlink(self, path: str, target: str) -> None: ...

    def remove(self, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def build_venv(self, path: str, python: str) -> None: ...

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800) -> RunResult: ...


# How long past its RuntimeMaxSec= fleet waits for systemd-run to return before giving up.
CONTAINED_GRACE = 30.0
# Where the root-only environment file of a contained run lives while it runs (tmpfs).
CONTAINED_ENV_DIR = "/run"


def contained_argv(argv: Sequence[str], *, user: str, cwd: str, writable: Sequence[str],
                   timeout: float, env_file: str | None) -> list[str]:
    """systemd-run command line for a contained run: the unit, not fleet, starts the process,
    so it gets a new session, no terminal, and dies with its whole cgroup."""
    props = [f"User={user}", f"Group={user}", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "NoNewPrivileges=yes", "StandardInput=null",
             f"RuntimeMaxSec={max(1, int(timeout))}", "KillMode=control-group",
             "TimeoutStopSec=5", f"WorkingDirectory={cwd}", "UMask=0027"]
    props += [f"ReadWritePaths={path}" for path in writable]
    if env_file:
        props.append(f"EnvironmentFile={env_file}")
    head = ["systemd-run", "--wait", "--pipe", "--collect", "--quiet", "--service-type=exec"]
    for prop in props:
        head += ["-p", prop]
    return [*head, "--", *argv]


def env_file_text(env: Mapping[str, str]) -> str:
    """systemd EnvironmentFile= text: values double-quoted, so spaces and quotes survive."""
    lines = []
    for key, value in env.items():
        quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
        lines.append(f'{key}="{quoted}"\n')
    return "".join(lines)


CommandLogger = Callable[[Sequence[str]], None]


class LocalHost:
    """The machine fleet runs on (as root, on the server)."""

    def __init__(self, log_command: CommandLogger | None = None) -> None:
        self.log_command = log_command

    def run(self, argv: Sequence[str], *, check: bool = True, cwd: str | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float | None = None) -> RunResult:
        if self.log_command:
            self.log_command(argv)
        full_env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        full_env.update(env or {})
        try:
            # No child ever shares fleet's terminal: stdin is /dev/null unless input is given.
            stdin = subprocess.DEVNULL if input is None else None
            proc = subprocess.run(list(argv), cwd=cwd, env=full_env, input=input, stdin=stdin,
                                  capture_output=True, text=True, timeout=timeout,
                                  errors="replace", check=False)
        except FileNotFoundError:
            result = RunResult(127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            result = RunResult(124, out, f"timed out after {timeout} s: {shlex.join(argv)}")
        else:
            result = RunResult(proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandError(list(argv), result.returncode, result.stdout, result.stderr)
        return result

    def read(self, path: str) -> bytes | None:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def state(self, path: str) -> FileState | None:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if os.path.islink(path):
            return FileState("link", 0o777, _user(st.st_uid), _group(st.st_gid),
                             os.readlink(path))
        kind = "dir" if os.path.isdir(path) else "file" if os.path.isfile(path) else "other"
        return FileState(kind, st.st_mode & 0o7777, _user(st.st_uid), _group(st.st_gid),
                         mtime=st.st_mtime)

    def write(self, path: str, content: bytes, mode: int, owner: str, group: str) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chown(tmp, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def mkdir(self, path: str, mode: int, owner: str, group: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.chown(path, mode, owner, group)

    def chown(self, path: str, mode: int, owner: str, group: str) -> None:
        os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid,
                 follow_symlinks=False)
        os.chmod(path, mode)

    def symlink(self, path: str, target: str) -> None:
        """Point a link at a new target atomically (rename over the old link)."""
        tmp = f"{path}{LINK_TEMP_SUFFIX}"
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)

    def remove(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def build_venv(self, path: str, python: str) -> None:
        if self.log_command:
            self.log_command(["virtualenv", path, "--python", python])
        build_venv(path, python)

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800) -> RunResult:
        """Run as `user` in a transient systemd unit (see contained_argv). The environment
        (pip index tokens, app secrets) goes through a 0600 root-only file that systemd reads
        before dropping privileges, never through a command line; it is removed afterwards."""
        env_file = None
        if env:
            fd, env_file = tempfile.mkstemp(prefix=".fleet-env-", dir=CONTAINED_ENV_DIR)
            with os.fdopen(fd, "w") as handle:
                handle.write(env_file_text(env))
        started = time.monotonic()
        try:
            result = self.run(contained_argv(argv, user=user, cwd=cwd, writable=writable,
                                             timeout=timeout, env_file=env_file),
                              check=False, timeout=timeout + CONTAINED_GRACE)
        finally:
            if env_file:
                with contextlib.suppress(OSError):
                    os.unlink(env_file)
        if not result.ok and time.monotonic() - started >= timeout:
            result = RunResult(124, result.stdout, result.stderr
                               + f"\ntimed out after {timeout:g} s: {shlex.join(argv)}")
        if not result.ok:
            raise CommandError(list(argv), result.returncode, result.stdout, result.stderr)
        return result

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def build_venv(path: str, python: str) -> None:
    """Build a virtualenv in-process: works from inside the zipapp, whose wheels are real files."""
    from virtualenv import cli_run

    cli_run([path, "--python", python, "--no-periodic-update", "--quiet"], setup_logging=False)

"""The only code that touches the machine: run commands and read/write files.

Resources read facts through a Host and the executor applies actions through it, so unit
tests swap in a fake host and the real one stays small.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fleet.errors import CommandError, FleetError
from fleet.host.bounded import read_all

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Temp names of write() (mkstemp: .fleet-tmp-XXXXXXXX) and symlink() (NAME.fleet-tmp). "tmp" in
# both keeps them apart from fleet's own dot files (.fleet-complete): converge sweeps them.
TEMP_PREFIX = ".fleet-tmp-"
LINK_TEMP_SUFFIX = ".fleet-tmp"
_TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}[a-z0-9_]{{8}}|.+{re.escape(LINK_TEMP_SUFFIX)}")


# remove() renames a directory to this name before deleting it: a delete killed mid-way leaves
# a name nothing trusts (not a release id, not a venv key), and converge sweeps it.
TRASH_PREFIX = ".fleet-trash-"
_TRASH_NAME = re.compile(rf"{re.escape(TRASH_PREFIX)}[a-z0-9_]{{8}}")
ENV_FILE_PREFIX = ".fleet-env-"
_ENV_FILE_NAME = re.compile(rf"{re.escape(ENV_FILE_PREFIX)}[A-Za-z0-9_]{{8}}")
# Below this directory the tree holds app-controlled content (releases, venvs, persistent
# data): root walks it with O_NOFOLLOW, one component at a time.
UNTRUSTED_ROOT = "/srv/fleet"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_TREE_DEPTH = 256


def is_temp_name(name: str) -> bool:
    """A temp file write() or symlink() leaves behind when the run is killed mid-way."""
    return _TEMP_NAME.fullmatch(name) is not None


def is_env_file_name(name: str) -> bool:
    """The environment file of a contained run killed before it could remove it (SIGKILL)."""
    return _ENV_FILE_NAME.fullmatch(name) is not None


def is_trash_name(name: str) -> bool:
    """A directory remove() was deleting when the run was killed."""
    return _TRASH_NAME.fullmatch(name) is not None


def private_mode(mode: int, is_dir: bool) -> int:
    """chmod u=rwX,g=rX,o= (set-id bits cleared): root writes, the app's group reads."""
    x = is_dir or bool(mode & 0o111)
    return 0o640 | (0o110 if x else 0)


def exposed_mode(mode: int, is_dir: bool) -> int:
    """chmod o+rX: nginx reads static files and traverses their directories."""
    x = is_dir or bool(mode & 0o111)
    return (mode & 0o7777) | 0o004 | (0o001 if x else 0)


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class ProcessInfo:
    """One process as /proc shows it: enough to find nginx's workers, an app user's
    processes, and a uWSGI worker's memory."""

    pid: int
    uid: int
    cmdline: bytes  # NUL-separated, as in /proc/PID/cmdline
    rss: int = 0  # resident memory in bytes
    threads: int = 1
    cpu_ticks: int = 0  # user + system time, in clock ticks (os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class Span:
    """A piece of a file (Host.read_span): its bytes, where they start, the file's size and
    inode (a log rotated away has a new inode at the same path)."""

    data: bytes
    start: int
    size: int
    inode: int


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

    def read_tail(self, path: str, lines: int) -> bytes:
        """At least the last `lines` lines of a file (a log), reading only its end."""
        ...

    def read_span(self, path: str, start: int, length: int) -> Span | None:
        """Up to `length` bytes of a regular file from `start` (clamped to its size), with its
        size and inode, never following a symlink (a log read as root); None when absent."""
        ...

    def processes(self) -> list[ProcessInfo]:
        """Every process now (a minimal Debian has no ps: /proc is read)."""
        ...

    def ask_socket(self, path: str, *, timeout: float, cap: int) -> bytes:
        """Connect to a unix socket and read what it says until it closes, within `timeout`
        seconds and `cap` bytes (an app may own the socket: AnswerError otherwise)."""
        ...

    def follow(self, argv: Sequence[str], *, env: Mapping[str, str]) -> Iterator[str]:
        """A command's output lines as they come (journalctl --follow), until the caller
        stops iterating; the command is then stopped."""
        ...

    def build_venv(self, path: str, python: str, uv: str | None = None) -> None: ...

    def fetch_wheel(self, indexes: tuple[str, ...], project: str, filename: str, sha256: str,
                    member: str, dest: str, tmp: str, cert: str | None,
                    timeout: float) -> None: ...

    def own_tree(self, path: str, owner: str | None, group: str, modes: str) -> None: ...

    def expose_tree(self, home: str, path: str) -> None: ...

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800, limits: Sequence[str] = ()) -> RunResult: ...

    def run_attached(self, argv: Sequence[str], *, properties: Sequence[str],
                     env: Mapping[str, str], tty: bool) -> int: ...


# How long past its RuntimeMaxSec= fleet waits for systemd-run to return before giving up.
CONTAINED_GRACE = 30.0
# Where the root-only environment file of a contained run lives while it runs (tmpfs).
CONTAINED_ENV_DIR = "/run"


def contained_argv(argv: Sequence[str], *, user: str, cwd: str, writable: Sequence[str],
                   timeout: float, env_file: str | None,
                   limits: Sequence[str] = ()) -> list[str]:
    """systemd-run command line for a contained run: the unit, not fleet, starts the process,
    so it gets a new session, no terminal, and dies with its whole cgroup."""
    props = [f"User={user}", f"Group={user}", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "NoNewPrivileges=yes", "StandardInput=null",
             f"RuntimeMaxSec={max(1, int(timeout))}", "KillMode=control-group",
             "TimeoutStopSec=5", f"WorkingDirectory={cwd}", "UMask=0027"]
    props += [f"ReadWritePaths={path}" for path in writable]
    props += list(limits)
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
            proc = subprocess.Popen(list(argv), cwd=cwd, env=full_env,
                                    stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    errors="replace")
        except FileNotFoundError:
            result = RunResult(127, "", f"{argv[0]}: command not found")
        else:
            result = _communicate(proc, input, timeout, argv)
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
        """Create the directory and its missing parents; below /srv/fleet no component may be
        a link (an app could have put one where root creates its data directory)."""
        parent_fd, name = _open_parent(path, create=True)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = _open_component(parent_fd, name, path)
        finally:
            os.close(parent_fd)
        _set_attrs(fd, mode, owner, group)

    def chown(self, path: str, mode: int, owner: str, group: str) -> None:
        """Owner, group and mode of the path itself, never of what a link points at."""
        parent_fd, name = _open_parent(path)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FleetError(f"{path} is a symbolic link; fleet does not follow it") from None
            raise
        finally:
            os.close(parent_fd)
        _set_attrs(fd, mode, owner, group)

    def own_tree(self, path: str, owner: str | None, group: str, modes: str) -> None:
        """chown -R (and with modes="private", chmod -R u=rwX,g=rX,o=) without following a
        link anywhere: a link gets its own owner changed (lchown), never its target's."""
        if self.log_command:
            self.log_command(["fleet-own-tree", f"{owner or ''}:{group}", modes, path])
        uid = -1 if owner is None else pwd.getpwnam(owner).pw_uid
        gid = grp.getgrnam(group).gr_gid
        parent_fd, name = _open_parent(path)
        try:
            fd = _open_component(parent_fd, name, path)
        finally:
            os.close(parent_fd)

        def visit(fd: int, st: os.stat_result) -> None:
            os.fchown(fd, uid, gid)
            if modes == "private":
                os.fchmod(fd, private_mode(st.st_mode, stat.S_ISDIR(st.st_mode)))

        def link(dir_fd: int, name: str) -> None:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

        _walk(fd, visit, link, path)

    def expose_tree(self, home: str, path: str) -> None:
        """chmod o+x on the directories between `home` and `path`, then chmod -R o+rX on
        `path`, opening each with O_NOFOLLOW: a link on the way is refused, a link inside is
        left alone (nginx does not serve links either)."""
        if self.log_command:
            self.log_command(["fleet-expose-tree", home, path])
        parts = [p for p in os.path.relpath(path, home).split("/") if p not in ("", ".")]
        if not parts or ".." in parts or not os.path.isabs(path):
            raise FleetError(f"{path} is not inside {home}")
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                child = _open_component(fd, part, path)
                os.close(fd)
                fd = child
                if index < len(parts) - 1:
                    os.fchmod(fd, (os.fstat(fd).st_mode & 0o7777) | 0o001)
        except BaseException:
            os.close(fd)
            raise

        def visit(fd: int, st: os.stat_result) -> None:
            os.fchmod(fd, exposed_mode(st.st_mode, stat.S_ISDIR(st.st_mode)))

        _walk(fd, visit, lambda _fd, _name: None, path)

    def symlink(self, path: str, target: str) -> None:
        """Point a link at a new target atomically (rename over the old link)."""
        tmp = f"{path}{LINK_TEMP_SUFFIX}"
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, path)

    def remove(self, path: str) -> None:
        """A directory is first renamed to a trash name beside it (atomic), then deleted: a
        delete killed mid-way never leaves a half-deleted release or venv under its own name."""
        if os.path.isdir(path) and not os.path.islink(path):
            directory, name = os.path.split(path)
            trash = path
            if not is_trash_name(name):
                trash = os.path.join(directory, TRASH_PREFIX + os.urandom(4).hex())
                os.rename(path, trash)
            shutil.rmtree(trash)  # fd-based on Linux: never follows a link inside
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def build_venv(self, path: str, python: str, uv: str | None = None) -> None:
        if uv is not None:  # a command of its own: run() logs it
            self.run(uv_venv_argv(uv, path, python), cwd="/", env=UV_VENV_ENV)
            return
        if self.log_command:
            self.log_command(["virtualenv", path, "--python", python])
        build_venv(path, python)

    def fetch_wheel(self, indexes: tuple[str, ...], project: str, filename: str, sha256: str,
                    member: str, dest: str, tmp: str, cert: str | None,
                    timeout: float) -> None:
        """fleet.host.fetch.fetch_wheel, in this process (imported here: only an install of
        uv needs urllib, ssl and zipfile); logged like a command, without credentials."""
        from fleet.host.fetch import fetch_wheel
        from fleet.masking import mask_urls

        if self.log_command:
            self.log_command(["fetch-wheel", filename, "sha256=" + sha256, member, dest,
                              *(mask_urls(i) for i in indexes)])
        fetch_wheel(indexes, project, filename, sha256, member, dest, tmp, cert=cert,
                    timeout=timeout)

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800, limits: Sequence[str] = ()) -> RunResult:
        """Run as `user` in a transient systemd unit (see contained_argv). The environment
        (pip index tokens, app secrets) goes through a 0600 root-only file that systemd reads
        before dropping privileges, never through a command line; it is removed afterwards."""
        env_file = None
        if env:
            fd, env_file = tempfile.mkstemp(prefix=ENV_FILE_PREFIX, dir=CONTAINED_ENV_DIR)
            with os.fdopen(fd, "w") as handle:
                handle.write(env_file_text(env))
        started = time.monotonic()
        try:
            result = self.run(contained_argv(argv, user=user, cwd=cwd, writable=writable,
                                             timeout=timeout, env_file=env_file,
                                             limits=limits),
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

    def run_attached(self, argv: Sequence[str], *, properties: Sequence[str],
                     env: Mapping[str, str], tty: bool) -> int:
        """Run in a transient systemd unit with the operator's stdin, stdout and stderr (a
        new pty when `tty`: the command never gets fleet's own terminal); its exit status is
        returned. The environment goes through a root-only file, as with run_contained."""
        fd, env_file = tempfile.mkstemp(prefix=ENV_FILE_PREFIX, dir=CONTAINED_ENV_DIR)
        with os.fdopen(fd, "w") as handle:
            handle.write(env_file_text(env))
        head = ["systemd-run", "--wait", "--collect", "--quiet", "--service-type=exec",
                "--pty" if tty else "--pipe"]
        for prop in [*properties, f"EnvironmentFile={env_file}"]:
            head += ["-p", prop]
        if self.log_command:
            self.log_command([*head, "--", *argv])
        full_env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root",
                    **({"TERM": os.environ["TERM"]} if tty and "TERM" in os.environ else {})}
        try:
            return subprocess.run([*head, "--", *argv], env=full_env, check=False).returncode
        finally:
            with contextlib.suppress(OSError):
                os.unlink(env_file)

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_tail(self, path: str, lines: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            offset = handle.tell()
            block = b""
            while offset > 0 and block.count(b"\n") <= lines:
                step = min(65536, offset)
                offset -= step
                handle.seek(offset)
                block = handle.read(step) + block
        return block

    def read_span(self, path: str, start: int, length: int) -> Span | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path}: not a regular file")
            start = max(0, min(start, st.st_size))
            data = os.pread(fd, max(0, min(length, st.st_size - start)), start)
            return Span(data, start, st.st_size, st.st_ino)
        finally:
            os.close(fd)

    def processes(self) -> list[ProcessInfo]:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as handle:
                    fields = dict(line.split(":", 1) for line in handle if ":" in line)
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read()
                with open(f"/proc/{entry}/stat") as handle:
                    # After the command's closing parenthesis: state is field 3, utime 14.
                    stat = handle.read().rsplit(")", 1)[-1].split()
                rss = fields.get("VmRSS", "0 kB").split()
                found.append(ProcessInfo(int(entry), int(fields.get("Uid", "-1").split()[0]),
                                         cmdline, int(rss[0]) * 1024 if rss else 0,
                                         int(fields.get("Threads", "1").strip() or 1),
                                         int(stat[11]) + int(stat[12])))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or a kernel thread without the fields
        return found

    def ask_socket(self, path: str, *, timeout: float, cap: int) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            return read_all(sock, timeout, cap)

    def follow(self, argv: Sequence[str], *, env: Mapping[str, str]) -> Iterator[str]:
        if self.log_command:
            self.log_command(argv)
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=dict(env))
        assert proc.stdout is not None
        try:
            yield from proc.stdout
        finally:
            proc.terminate()
            proc.wait(timeout=5)


def _open_parent(path: str, create: bool = False) -> tuple[int, str]:
    """An fd of the path's parent directory, and the last component. Below /srv/fleet each
    component is opened with O_NOFOLLOW (a link there is refused); above it, the operator's
    own layout (say /srv a link to a data disk) is followed."""
    path = os.path.normpath(path)
    parent, name = os.path.split(path)
    if not path.startswith(UNTRUSTED_ROOT + "/"):
        if create:
            os.makedirs(parent, exist_ok=True)
        return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), name
    if create:
        os.makedirs(UNTRUSTED_ROOT, exist_ok=True)
    fd = os.open(UNTRUSTED_ROOT, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in os.path.relpath(parent, UNTRUSTED_ROOT).split("/"):
            if part in ("", "."):
                continue
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            child = _open_component(fd, part, path)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _open_component(dir_fd: int, name: str, path: str) -> int:
    """Open one directory below dir_fd; a link (or anything but a directory) is refused."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FleetError(f"{path}: {name} is a symbolic link or not a directory; "
                             "fleet does not follow links there") from None
        if exc.errno == errno.ENOENT:
            raise FleetError(f"{path}: {name} does not exist") from None
        raise


def _set_attrs(fd: int, mode: int, owner: str, group: str) -> None:
    """Owner, group and mode through the open fd (which this closes): never a link's target."""
    try:
        os.fchown(fd, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _walk(fd: int, visit: Callable[[int, os.stat_result], None],
          link: Callable[[int, str], None], path: str, depth: int = 0) -> None:
    """Visit the directory open as fd and everything below it through file descriptors only;
    links go to `link` (parent fd and name), never opened. Closes fd."""
    try:
        if depth > MAX_TREE_DEPTH:
            raise FleetError(f"{path}: more than {MAX_TREE_DEPTH} nested directories")
        visit(fd, os.fstat(fd))
        for name in os.listdir(fd):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                link(fd, name)
            elif stat.S_ISDIR(st.st_mode):
                _walk(os.open(name, _DIR_FLAGS, dir_fd=fd), visit, link, f"{path}/{name}",
                      depth + 1)
            elif stat.S_ISREG(st.st_mode):
                child = os.open(name, _FILE_FLAGS, dir_fd=fd)
                try:
                    visit(child, os.fstat(child))
                finally:
                    os.close(child)
            # fifos, sockets, devices: git archive never makes them; left alone
    finally:
        os.close(fd)


def _communicate(proc: subprocess.Popen[str], input: str | None, timeout: float | None,
                 argv: Sequence[str]) -> RunResult:
    """Wait for the command; at its timeout kill its whole tree (git's remote helper, hung on
    a silent server, would outlive git and keep the pipes open), then stop waiting for
    anything that escaped the tree."""
    try:
        out, errout = proc.communicate(input, timeout=timeout)
        return RunResult(proc.returncode, out, errout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = ""
        return RunResult(124, out or "", f"timed out after {timeout} s: {shlex.join(argv)}")


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (found through /proc: no procps needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    for member in tree:
        with contextlib.suppress(OSError):
            os.kill(member, signal.SIGKILL)


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


# uv as root only makes the venv: it runs the system Python to learn its version, reads no
# config file (--no-config: not root's, not one in a directory an app controls), keeps no
# cache, finds no project (--no-project) and never downloads a Python.
UV_VENV_ENV = {"UV_PYTHON_DOWNLOADS": "never"}


def uv_venv_argv(uv: str, path: str, python: str) -> list[str]:
    """An empty venv (no pip, setuptools: uv installs into it from outside). Relocatable:
    the entry points uv installs into it (bin/flask) start `python` beside themselves, not
    this path, so a copy of the venv elsewhere works and can seed the app's next build."""
    return [uv, "venv", "--no-config", "--no-cache", "--no-project", "--no-python-downloads",
            "--relocatable", "--quiet", "--python", python, path]

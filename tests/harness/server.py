"""A real bare Debian server, booted with systemd-nspawn from a copy of the cached rootfs.

The container shares the host's network (port 80 inside is 127.0.0.1:80 here), so only one
server may be booted at a time. Teardown is layered because a leaked container would break
every later run: ``destroy()`` (fixtures), an atexit hook, PR_SET_PDEATHSIG on nspawn (it
shuts its container down cleanly when our process dies, even by SIGKILL) and a sweep of
leftovers from dead sessions whenever a new server is created.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO

from ._util import (
    HarnessError,
    descendants,
    die_with_parent,
    kill_quietly,
    pid_alive,
    read_cmdline,
    read_comm,
    safe_rmtree,
    unmount_all_under,
    wait_until,
)
from .hostlock import take_host_lock
from .leftovers import (
    PROPAGATE_DIR,
    SERVERS_ROOT,
    kill_nspawns_for,
    start_time,
    sweep_leftovers_once,
)
from .results import CommandFailed, Completed, HttpResponse, NoResponse
from .rootfs import base_rootfs, cache_dir, default_suite, provisioned_rootfs

CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 90.0
POWEROFF_TIMEOUT = 30.0


_booted_lock = threading.Lock()
_booted: BareServer | None = None
_live: set[BareServer] = set()
_deleting: list[subprocess.Popen[bytes]] = []  # detached deletions of destroyed trees
_swept = False


class BareServer:
    """One bare Debian server: a private copy of the base rootfs, booted on demand."""

    # Host network: port 80 is the host's, so one booted server at a time (lock). Subclasses
    # with their own network namespace (tests/harness/bridged.py) set this False.
    shares_host_network = True

    def __init__(self, suite: str | None = None, *, provisioned: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        """A copy of the bare rootfs, or with *provisioned* of the tree that already has
        python3 and fleet's OS packages (rootfs.py), for modules not about provisioning;
        *extra* packages come preinstalled too (provisioned only: a tree of its own)."""
        self.suite = suite or default_suite()
        sweep_leftovers_once()
        if extra and not provisioned:
            raise HarnessError("extra packages come with the provisioned tree only")
        base = (provisioned_rootfs(self.suite, extra) if provisioned
                else base_rootfs(self.suite))
        self.name = f"fleet-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir = SERVERS_ROOT / self.name
        self.root = self.dir / "rootfs"
        self.log_path = self.dir / "nspawn.log"
        self.boot_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._init_pid: int | None = None
        self._boot_lock_fh: IO[str] | None = None
        self._destroyed = False
        self.dir.mkdir(parents=True)
        (self.dir / "owner").write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
        _live.add(self)
        try:
            subprocess.run(
                ["cp", "-a", "--reflink=auto", str(base), str(self.root)],
                check=True,
                capture_output=True,
            )
            # A unique machine id per server: a shared one would merge their journals.
            (self.root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
            _fast_packages(self.root)
        except BaseException:
            self.destroy()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def booted(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def init_pid(self) -> int:
        """Host PID of the container's systemd (for nsenter)."""
        if not self.booted or self._init_pid is None:
            raise HarnessError(f"server {self.name} is not booted")
        return self._init_pid

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Boot and wait until systemd reports running or degraded."""
        global _booted
        if self._destroyed:
            raise HarnessError(f"server {self.name} was destroyed")
        if self.booted:
            return
        if not self.shares_host_network:
            try:
                self._start(timeout)
            except BaseException:
                self._stop(timeout=0)
                raise
            return
        with _booted_lock:
            if _booted is not None and _booted is not self:
                raise HarnessError(
                    f"server {_booted.name} is still booted: servers share the host network "
                    "(port 80), so only one may run at a time"
                )
            self._boot_lock_fh = take_host_lock()
            _booted = self
        try:
            self._start(timeout)
        except BaseException:
            self._stop(timeout=0)  # a failed boot gets no clean shutdown: signal at once
            raise

    def _start(self, timeout: float) -> None:
        started = time.monotonic()
        if self.shares_host_network:
            _require_free_port(80)
        apt_cache = cache_dir("apt", self.suite)
        (apt_cache / "partial").mkdir(exist_ok=True)
        pip_cache = cache_dir("pip", self.suite)
        argv = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            f"--bind={apt_cache}:/var/cache/apt/archives",
            f"--bind={pip_cache}:/root/.cache/pip",
            *self._network_args(),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # nspawn: SIGTERM = clean shutdown
                env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"},
            )
        finally:
            log.close()
        self._init_pid = wait_until(
            self._find_init, timeout=timeout, what=f"systemd of {self.name} to start"
        )
        deadline = started + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self._exec(["systemctl", "is-system-running"], timeout=10).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.1)
        else:
            raise HarnessError(
                f"{self.name} did not finish booting within {timeout:.0f}s "
                f"(state {state!r})\n{self.log_tail()}"
            )
        self.boot_seconds = time.monotonic() - started

    def _network_args(self) -> list[str]:
        """Extra nspawn options for the server's network (none: the host's network)."""
        return []

    def _find_init(self) -> int | None:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise HarnessError(
                f"systemd-nspawn exited with {self._proc.returncode} during boot\n{self.log_tail()}"
            )
        for pid in descendants(self._proc.pid):
            if read_comm(pid) == "systemd":
                return pid
        return None

    def poweroff(self, timeout: float = POWEROFF_TIMEOUT) -> None:
        """Clean shutdown via systemctl; escalate to signals if it hangs."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                self._exec(["systemctl", "poweroff"], timeout=10)
        self._stop(timeout)

    def _stop(self, timeout: float = POWEROFF_TIMEOUT) -> None:
        global _booted
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_quietly(proc.pid, signal.SIGTERM)  # nspawn: orderly container shutdown
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    if self._init_pid and pid_alive(self._init_pid):
                        kill_quietly(self._init_pid)  # kills the whole container pid ns
                    kill_quietly(proc.pid, group=True)
                    proc.wait(timeout=10)
        self._proc = None
        self._init_pid = None
        with _booted_lock:
            if _booted is self:
                _booted = None
            if self._boot_lock_fh is not None:
                self._boot_lock_fh.close()
                self._boot_lock_fh = None

    def _kill(self) -> None:
        """SIGKILL the container's systemd, which ends its whole pid namespace, then reap
        nspawn (escalating as _stop does if it lingers).

        The tree is deleted next, so a clean poweroff (stopping every unit: uWSGI, nginx,
        workers with their stop timeouts) would buy nothing; it took 5-18 s a server at the
        end of each module, and up to 100 s for a cluster under load. Tests that need a clean
        shutdown call poweroff() or reboot().
        """
        proc = self._proc
        if proc is not None and proc.poll() is None and self._init_pid is not None:
            kill_quietly(self._init_pid)
        self._stop(timeout=10)

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Power off and boot the same tree (a reboot inside makes nspawn exit anyway)."""
        self.poweroff()
        self.boot(timeout)

    def destroy(self) -> None:
        """Stop the server at once, kill leftovers and delete the copy (in the background);
        safe to call more than once."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            self._kill()
        finally:
            kill_nspawns_for(self.dir)
            _delete_in_background(self.dir)
            shutil.rmtree(PROPAGATE_DIR / self.name, ignore_errors=True)
            _live.discard(self)

    def __enter__(self) -> BareServer:
        if not self.booted:
            self.boot()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def __repr__(self) -> str:
        state = "booted" if self.booted else "down"
        return f"<BareServer {self.name} {self.suite} {state}>"

    # -- commands --------------------------------------------------------------------------

    def run(
        self,
        argv: list[str] | str,
        *,
        check: bool = False,
        input: bytes | str | None = None,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> Completed:
        """Run a command as root inside the server with a clean environment.

        A string is run with ``sh -c``. Output is decoded as UTF-8 (invalid bytes replaced).
        """
        full = ["sh", "-c", argv] if isinstance(argv, str) else list(argv)
        data = input.encode() if isinstance(input, str) else input
        result = self._exec(full, input=data, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise CommandFailed(result)
        return result

    def _exec(
        self,
        argv: list[str],
        *,
        input: bytes | None = None,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> Completed:
        rc, out, err = self._exec_bytes(argv, input=input, timeout=timeout, env=env)
        return Completed(rc, out.decode(errors="replace"), err.decode(errors="replace"), argv)

    def _exec_bytes(
        self,
        argv: list[str],
        *,
        input: bytes | None = None,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        clean = {"PATH": CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "USER": "root"}
        clean.update(env or {})
        cmd = [
            "nsenter", f"--target={self.init_pid}", "--all", "--root", "--wd",
            "env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv,
        ]  # fmt: skip
        # Own process group: on timeout we must kill nsenter's forked child too.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_quietly(proc.pid, group=True)
            proc.communicate()
            raise
        except BaseException:
            kill_quietly(proc.pid, group=True)
            proc.wait()
            raise
        return proc.returncode, out, err

    # -- files -----------------------------------------------------------------------------
    # Through the container while it runs (it sees its own /run and tmpfs /tmp), else
    # through the tree on the host.

    def write_file(self, dest: str, data: bytes | str, mode: int = 0o644) -> None:
        """Write *data* to *dest* (parents created), owned by root, atomically."""
        raw = data.encode() if isinstance(data, str) else data
        if self.booted:
            script = (
                'set -e; mkdir -p "$(dirname "$1")"; tmp="$1.fleet-tmp.$$"; '
                'cat > "$tmp"; chmod "$2" "$tmp"; mv -f "$tmp" "$1"'
            )
            self.run(["sh", "-c", script, "sh", dest, f"{mode:o}"], input=raw, check=True)
            return
        host = self.host_path(dest)
        host.parent.mkdir(parents=True, exist_ok=True)
        tmp = host.with_name(host.name + ".fleet-tmp")
        tmp.write_bytes(raw)
        os.chmod(tmp, mode)
        os.replace(tmp, host)

    def copy_in(self, src: Path, dest: str, mode: int = 0o644) -> None:
        """Copy a host file into the server (a directory is copied recursively, modes kept)."""
        src = Path(src)
        if src.is_dir():
            if self.booted:
                archive = subprocess.run(
                    ["tar", "-C", str(src), "-cf", "-", "."], check=True, capture_output=True
                ).stdout
                self.run(
                    ["sh", "-c", 'mkdir -p "$1" && tar -C "$1" -xf - --no-same-owner',
                     "sh", dest],
                    input=archive,
                    check=True,
                )  # fmt: skip
            else:
                shutil.copytree(src, self.host_path(dest), symlinks=True, dirs_exist_ok=True)
            return
        self.write_file(dest, src.read_bytes(), mode)

    def read_file(self, path: str) -> bytes:
        """Contents of *path* inside the server; FileNotFoundError if it is missing."""
        if self.booted:
            rc, out, err = self._exec_bytes(["cat", "--", path], timeout=60)
            if rc != 0:
                raise FileNotFoundError(errno.ENOENT, err.decode(errors="replace").strip(), path)
            return out
        return self.host_path(path).read_bytes()

    def exists(self, path: str) -> bool:
        if self.booted:
            return self.run(["sh", "-c", 'test -e "$1" || test -L "$1"', "sh", path]).ok
        return self.host_path(path).exists()

    def host_path(self, path: str) -> Path:
        """Host path of *path* in the tree, resolving symlinks as if chrooted.

        Absolute symlinks inside the tree (e.g. /etc/resolv.conf) must resolve against the
        tree, not the host. Only the tree on disk: /run and a tmpfs /tmp are not visible.
        """
        parts = list(PurePosixPath("/", path).parts[1:])
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                target = os.readlink(candidate)
                if target.startswith("/"):
                    resolved = []
                parts = [p for p in PurePosixPath(target).parts if p != "/"] + parts
                continue
            resolved.append(part)
        return self.root.joinpath(*resolved)

    # -- processes, logs -------------------------------------------------------------------

    def _container_procs(self) -> list[tuple[int, str, str, int]]:
        """(pid inside, comm, cmdline, uid) of each process in the server's pid namespace."""
        ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        procs: list[tuple[int, str, str, int]] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
                status = Path(f"/proc/{entry}/status").read_text(errors="replace")
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            inner = int(fields["NSpid"].split()[-1])
            uid = int(fields["Uid"].split()[0])
            comm = fields["Name"].strip()
            cmdline = " ".join(read_cmdline(int(entry)))
            procs.append((inner, comm, cmdline, uid))
        return sorted(procs)

    def pids_of(self, pattern: str) -> list[int]:
        """PIDs (as seen inside) whose comm equals *pattern* or whose cmdline contains it."""
        return [pid for pid, comm, cmd, _ in self._container_procs()
                if comm == pattern or pattern in cmd]  # fmt: skip

    def proc_user(self, pid: int) -> str:
        """User name (from the server's /etc/passwd) owning process *pid* (inside PID)."""
        for inner, _, _, uid in self._container_procs():
            if inner == pid:
                for line in self.read_file("/etc/passwd").decode().splitlines():
                    fields = line.split(":")
                    if len(fields) > 2 and fields[2] == str(uid):
                        return fields[0]
                return str(uid)
        raise ProcessLookupError(f"no process {pid} in {self.name}")

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        """Last *lines* journal lines, of one unit or of everything."""
        argv = ["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self.run(argv).stdout

    def log_tail(self, chars: int = 3000) -> str:
        """End of nspawn's console log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no nspawn log)"
        return "--- nspawn log (tail) ---\n" + text[-chars:]

    # -- http ------------------------------------------------------------------------------

    def http(
        self,
        path: str = "/",
        host: str = "localhost",
        method: str = "GET",
        timeout: float = 10,
        port: int = 80,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """One request to 127.0.0.1:*port* with the given Host header.

        Raises NoResponse when no HTTP answer arrives at all (nothing listening, or nginx's
        ``return 444`` closing the connection), so tests can tell that from an HTTP error.
        """
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
            return HttpResponse(
                resp.status,
                {k.lower(): v for k, v in resp.getheaders()},
                data.decode(errors="replace"),
            )
        except ConnectionRefusedError as exc:
            raise NoResponse("refused", f"127.0.0.1:{port}: {exc}") from exc
        except http.client.RemoteDisconnected as exc:
            raise NoResponse("closed", f"{host}{path}: {exc}") from exc
        except ConnectionResetError as exc:
            raise NoResponse("reset", f"{host}{path}: {exc}") from exc
        except TimeoutError as exc:
            raise NoResponse("timeout", f"{host}{path} after {timeout}s") from exc
        finally:
            conn.close()


def _fast_packages(root: Path) -> None:
    """Make apt and dpkg cheaper in this throwaway server (its copy only: never the cached
    base, never fleet, whose apt-get update and install run as they would anywhere).

    dpkg skips its fsync per unpacked file (force-unsafe-io): installing fleet's base packages
    took 36-47 s with dpkg's safe I/O and 21-37 s without, on a shared 2-core host. The fsyncs
    only protect against a power cut, which a test server never outlives; dpkg's own journal,
    what test_reliability's "killed inside dpkg" cases need, is written as before. apt fetches
    no description translations (Acquire::Languages none): a cold `apt-get update` then fetches
    0.6 MB instead of 7 MB and took 4.7 s instead of 7.3 s.
    """
    dpkg = root / "etc/dpkg/dpkg.cfg.d"
    dpkg.mkdir(parents=True, exist_ok=True)
    (dpkg / "fleet-tests-unsafe-io").write_text(
        "# fleet tests: a throwaway server (tests/harness/server.py)\nforce-unsafe-io\n")
    apt = root / "etc/apt/apt.conf.d"
    apt.mkdir(parents=True, exist_ok=True)
    (apt / "98fleet-tests-no-translations").write_text(
        '// fleet tests: a throwaway server (tests/harness/server.py)\n'
        'Acquire::Languages "none";\n')


def _delete_in_background(path: Path) -> None:
    """Unmount what is left under *path*, rename it aside and let a detached ``rm`` delete it.

    Deleting a server's tree after its apps were built (venvs, build caches, releases) took
    25 s at the end of a module on this shared host, time the next module can use. The
    renamed tree keeps its owner file, so once this session is gone a later one sweeps it
    should the ``rm`` have been cut short (leftovers.py).
    """
    if not os.path.lexists(path):
        return
    unmount_all_under(path)
    doomed = path.with_name(f"{path.name}.deleting")
    try:
        os.rename(path, doomed)
    except OSError:
        safe_rmtree(path)  # the slow way, but deleted
        return
    _deleting.append(subprocess.Popen(
        ["rm", "-rf", "--one-file-system", "--", str(doomed)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


def _require_free_port(port: int) -> None:
    """Fail early if something on the host already listens on *port* (tests would hit it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise HarnessError(
                f"127.0.0.1:{port} is already in use on the host; the test server shares the "
                "host network and needs it free"
            )


@atexit.register
def destroy_all() -> None:
    """Destroy every server this process created (atexit, signal handlers, fixtures)."""
    for server in list(_live):
        try:
            server.destroy()
        except Exception as exc:  # keep cleaning the others
            print(f"[fleet-tests] cleanup of {server.name} failed: {exc}")



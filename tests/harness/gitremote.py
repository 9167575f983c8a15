"""A throw-away git server (``git daemon``) that the test servers clone apps from.

The containers share the host's network, so git://127.0.0.1:PORT/NAME.git reaches this
daemon from inside them. Each repo is bare (served, pushable) with a private work tree next
to it that the tests commit in; the daemon never serves a checked-out branch.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ._util import HarnessError, die_with_parent, kill_quietly, wait_until

DEFAULT_PORT = 9418
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")


class GitRemote:
    """Serve git repositories over git:// on 127.0.0.1 for the duration of a test session."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None,
                 listen: tuple[str, ...] = ("127.0.0.1",)) -> None:
        # Bridged servers (tests/harness/bridged.py) reach the host at the bridge's .1 only.
        self.listen = listen
        self._own_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix="fleet-git-"))
        self.repos = self.dir / "repos"
        self.work = self.dir / "work"
        self.home = self.dir / "home"
        for path in (self.repos, self.work, self.home):
            path.mkdir(parents=True, exist_ok=True)
        self.port = port or _pick_port()
        self._proc: subprocess.Popen[bytes] | None = None
        # A fixed identity and no host/user config: CI hosts have no git identity.
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_AUTHOR_NAME": "Fleet Tests",
            "GIT_AUTHOR_EMAIL": "tests@fleet.invalid",
            "GIT_COMMITTER_NAME": "Fleet Tests",
            "GIT_COMMITTER_EMAIL": "tests@fleet.invalid",
        }

    # -- daemon ----------------------------------------------------------------------------

    def start(self) -> GitRemote:
        if shutil.which("git") is None:
            raise HarnessError("git is not installed on the host (apt-get install git)")
        log = open(self.dir / "daemon.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._proc = subprocess.Popen(
                [
                    "git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
                    "--verbose", f"--base-path={self.repos}",
                    *(f"--listen={address}" for address in self.listen),
                    f"--port={self.port}", "--enable=receive-pack", str(self.repos),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                env=self._env,
            )  # fmt: skip
        finally:
            log.close()
        atexit.register(self.stop)
        wait_until(self._listening, timeout=15, what=f"git daemon on port {self.port}")
        return self

    def _listening(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            log = (self.dir / "daemon.log").read_text(errors="replace")
            raise HarnessError(f"git daemon exited with {self._proc.returncode}:\n{log}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop the daemon (and its per-connection children) and delete the repos."""
        atexit.unregister(self.stop)
        if self._proc is not None:
            kill_quietly(self._proc.pid, signal.SIGTERM, group=True)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_quietly(self._proc.pid, group=True)
                self._proc.wait()
            self._proc = None
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GitRemote:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- repositories ----------------------------------------------------------------------

    @property
    def repos_created(self) -> set[str]:
        """Names of the repos created so far (module fixtures share one session remote)."""
        return {p.name.removesuffix(".git") for p in self.repos.glob("*.git")}

    def url(self, name: str, address: str = "127.0.0.1") -> str:
        """URL of repo *name* as seen from inside a test server (shared network, or the
        bridge's address for a bridged server)."""
        return f"git://{address}:{self.port}/{name}.git"

    def create_repo(
        self, name: str, source: Path | None = None, files: dict[str, str] | None = None,
        links: dict[str, str] | None = None,
    ) -> str:
        """New repo *name* (branch main) holding *source*'s files plus *files*, plus symbolic
        *links* (path in the repo -> target, committed as links); returns its URL."""
        bare = self.repos / f"{name}.git"
        work = self.work / name
        if bare.exists():
            raise HarnessError(f"repo {name!r} already exists")
        self._git(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)])
        self._git(["init", "--quiet", "--initial-branch=main", str(work)])
        self._git(["remote", "add", "origin", str(bare)], cwd=work)
        if source is not None:
            shutil.copytree(source, work, ignore=_IGNORE, dirs_exist_ok=True)
        self._write(work, files or {})
        for rel, target in (links or {}).items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).symlink_to(target)
        self._git(["add", "--all"], cwd=work)
        self._git(["commit", "--quiet", "--allow-empty", "-m", f"Initial {name}"], cwd=work)
        self._git(["push", "--quiet", "origin", "main"], cwd=work)
        return self.url(name)

    def commit(self, name: str, files: dict[str, str | None], message: str = "Update",
               links: dict[str, str] | None = None) -> str:
        """Write (or, for None, delete) *files* in repo *name*, replace paths by symbolic
        *links* (path -> target), commit, push; return the sha."""
        work = self._work(name)
        self._write(work, files)
        for rel, target in (links or {}).items():
            path = work / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            path.unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        self._git(["add", "--all"], cwd=work)
        self._git(["commit", "--quiet", "--allow-empty", "-m", message], cwd=work)
        self._git(["push", "--quiet", "origin", "main"], cwd=work)
        return self.head(name)

    def head(self, name: str) -> str:
        """Full sha of main in the served repo."""
        bare = self.repos / f"{name}.git"
        return self._git(["--git-dir", str(bare), "rev-parse", "refs/heads/main"]).strip()

    def tag(self, name: str, tag: str) -> str:
        """Tag the current main of *name* and push the tag; returns the tagged sha."""
        work = self._work(name)
        self._git(["tag", tag], cwd=work)
        self._git(["push", "--quiet", "origin", f"refs/tags/{tag}"], cwd=work)
        return self.head(name)

    def _work(self, name: str) -> Path:
        work = self.work / name
        if not work.is_dir():
            raise HarnessError(f"no repo named {name!r}")
        return work

    @staticmethod
    def _write(work: Path, files: dict[str, str] | dict[str, str | None]) -> None:
        for rel, content in files.items():
            path = work / rel
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)

    def _git(self, args: list[str], cwd: Path | None = None) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=self._env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise HarnessError(f"git {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout


def _pick_port() -> int:
    """9418 (git's port) when free, else any free port."""
    for port in (DEFAULT_PORT, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise HarnessError("no free TCP port for git daemon")

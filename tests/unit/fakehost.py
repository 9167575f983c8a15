"""An in-memory host for unit tests: a tiny filesystem plus a simulated Debian server.

It knows just enough about the commands fleet runs (dpkg-query, getent, git, systemctl, ...)
to let converge run end to end in memory, so plans and idempotence can be checked quickly.
The real behaviour is proven by the end-to-end tests on a booted Debian.
"""

from __future__ import annotations

import posixpath
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fleet.errors import AnswerTooLarge, CommandError
from fleet.host.layout import BUILD_SCRIPT
from fleet.host.machine import FileState, ProcessInfo, RunResult, Span


def build_parts(argv: Sequence[str]) -> tuple[str, str, str, str, list[str]] | None:
    """A build's contained run (`/bin/sh BUILD_SCRIPT CODE SRC CWD PRIVATE SEED VENV
    INSTALLER...`) as (code, src, cwd, private, installer argv); None for any other command."""
    if list(argv[:2]) != ["/bin/sh", BUILD_SCRIPT]:
        return None
    code, src, cwd, private = argv[2:6]
    return code, src, cwd, private, list(argv[8:])


def build_seed(argv: Sequence[str]) -> tuple[str, str]:
    """A build's (seed, venv): the previous venv it copies in first, "" for none."""
    assert list(argv[:2]) == ["/bin/sh", BUILD_SCRIPT]
    return argv[6], argv[7]


@dataclass
class Entry:
    kind: str
    content: bytes = b""
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    target: str = ""


Handler = Callable[["FakeHost", list[str]], RunResult | None]


@dataclass
class FakeHost:
    files: dict[str, Entry] = field(default_factory=dict)
    packages: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=lambda: {"root", "www-data"})
    comments: dict[str, str] = field(default_factory=lambda: {"www-data": "www-data"})
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> members
    active: set[str] = field(default_factory=set)
    enabled: set[str] = field(default_factory=set)
    commits: dict[str, dict[str, str]] = field(default_factory=dict)  # url -> ref -> sha
    repo_files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> data
    commands: list[list[str]] = field(default_factory=list)
    handlers: list[Handler] = field(default_factory=list)
    nginx_ok: bool = True
    pip_fails: bool = False
    uv_fails: bool = False  # installing uv fails (builds fall back to pip)
    fetched: list[tuple[tuple[str, ...], str, str, str, str]] = field(default_factory=list)
    contained: list[tuple[list[str], str, str, tuple[str, ...]]] = field(default_factory=list)
    procs: list[ProcessInfo] = field(default_factory=list)  # what /proc shows
    sockets: dict[str, bytes] = field(default_factory=dict)  # unix socket -> what it answers
    followed: list[str] = field(default_factory=list)  # lines a followed command prints
    attached: list[tuple[list[str], list[str], dict[str, str], bool]] = field(
        default_factory=list)  # run_attached calls: argv, properties, env, tty
    contained_limits: list[tuple[str, ...]] = field(default_factory=list)
    failed_units: set[str] = field(default_factory=set)  # systemctl show: ActiveState=failed
    restarts: dict[str, int] = field(default_factory=dict)  # systemctl show: NRestarts
    systemd_version: int = 252
    bad_schedules: set[str] = field(default_factory=set)  # systemd-analyze calendar refuses
    inodes: dict[str, int] = field(default_factory=dict)  # read_span: a rotated log's new one

    def __post_init__(self) -> None:
        for d in ("/", "/etc", "/etc/systemd/system", "/etc/tmpfiles.d", "/etc/nginx",
                  "/etc/nginx/conf.d", "/etc/nginx/sites-enabled", "/etc/uwsgi", "/srv",
                  "/run", "/var", "/var/lib"):
            self.files.setdefault(d, Entry("dir", mode=0o755))

    # ------------------------------------------------------------------ Host protocol
    def processes(self) -> list[ProcessInfo]:
        return list(self.procs)

    def ask_socket(self, path: str, *, timeout: float, cap: int) -> bytes:
        if path not in self.sockets:
            raise ConnectionRefusedError(f"nothing listens on {path}")
        if len(self.sockets[path]) > cap:
            raise AnswerTooLarge(cap)
        return self.sockets[path]

    def follow(self, argv: Sequence[str], *, env: Mapping[str, str]) -> Iterator[str]:
        self.commands.append(list(argv))
        yield from self.followed

    def read_tail(self, path: str, lines: int) -> bytes:
        data = self.read(path)
        if data is None:
            raise FileNotFoundError(path)
        return data

    def read_span(self, path: str, start: int, length: int) -> Span | None:
        entry = self.files.get(path)
        if entry is None:
            return None
        if entry.kind != "file":
            raise OSError(f"{path}: not a regular file")
        start = max(0, min(start, len(entry.content)))
        inode = self.inodes.get(path, zlib.crc32(path.encode()))
        return Span(entry.content[start:start + max(0, length)], start, len(entry.content),
                    inode)

    def run(self, argv: Sequence[str], *, check: bool = True, cwd: str | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float | None = None) -> RunResult:
        argv = list(argv)
        self.commands.append(argv)
        result = None
        for handler in self.handlers:
            result = handler(self, argv)
            if result is not None:
                break
        if result is None:
            result = self.simulate(argv)
        if check and not result.ok:
            raise CommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

    def read(self, path: str) -> bytes | None:
        entry = self.files.get(path)
        return entry.content if entry and entry.kind == "file" else None

    def state(self, path: str) -> FileState | None:
        entry = self.files.get(path)
        if entry is None:
            return None
        return FileState(entry.kind, entry.mode, entry.owner, entry.group, entry.target)

    def write(self, path: str, content: bytes, mode: int, owner: str, group: str) -> None:
        if not isinstance(content, bytes):  # the real host writes bytes only
            raise TypeError(f"{path}: content must be bytes, not {type(content).__name__}")
        self._need_parent(path)
        self.files[path] = Entry("file", content, mode, owner, group)

    def mkdir(self, path: str, mode: int, owner: str, group: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            self.files.setdefault("/" + "/".join(parts[:i]), Entry("dir", mode=0o755))
        self.files[path] = Entry("dir", mode=mode, owner=owner, group=group)

    def chown(self, path: str, mode: int, owner: str, group: str) -> None:
        entry = self.files[path]
        entry.mode, entry.owner, entry.group = mode, owner, group

    def symlink(self, path: str, target: str) -> None:
        self._need_parent(path)
        self.files[path] = Entry("link", mode=0o777, target=target)

    def remove(self, path: str) -> None:
        for key in [k for k in self.files if k == path or k.startswith(path + "/")]:
            del self.files[key]

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({k[len(prefix):].split("/")[0] for k in self.files
                       if k.startswith(prefix) and k != prefix})

    def fetch_wheel(self, indexes: tuple[str, ...], project: str, filename: str, sha256: str,
                    member: str, dest: str, tmp: str, cert: str | None,
                    timeout: float) -> None:
        """Recorded in `fetched`; writes `dest` as the real one does (`uv_fails`: a mismatch)."""
        self.fetched.append((indexes, filename, sha256, member, dest))
        if self.uv_fails:
            from fleet.host.fetch import FetchError

            raise FetchError(f"{indexes[0]}{filename}: sha256 0000 is not the pinned {sha256}")
        parent = dest.rsplit("/", 1)[0]
        for part in (parent.rsplit("/", 1)[0], parent):
            if self.state(part) is None:
                self.mkdir(part, 0o755, "root", "root")
        self.write(dest, b"", 0o755, "root", "root")

    def build_venv(self, path: str, python: str, uv: str | None = None) -> None:
        self.mkdir(f"{path}/bin", 0o755, "root", "root")
        self.write(f"{path}/bin/python", b"", 0o755, "root", "root")
        if uv is not None:  # a command, as LocalHost runs it
            self.commands.append([uv, "venv", path])
            for part in ("lib", "lib/python3.11", "lib/python3.11/site-packages"):
                self.mkdir(f"{path}/{part}", 0o755, "root", "root")

    def own_tree(self, path: str, owner: str | None, group: str, modes: str) -> None:
        from fleet.host.machine import private_mode

        for key, entry in self.files.items():
            if key == path or key.startswith(path + "/"):
                entry.owner, entry.group = owner or entry.owner, group
                if modes == "private" and entry.kind != "link":
                    entry.mode = private_mode(entry.mode, entry.kind == "dir")

    def expose_tree(self, home: str, path: str) -> None:
        from fleet.host.machine import exposed_mode

        for key, entry in self.files.items():
            if (key == path or key.startswith(path + "/")) and entry.kind != "link":
                entry.mode = exposed_mode(entry.mode, entry.kind == "dir")
            elif key.startswith(home + "/") and path.startswith(key + "/"):
                entry.mode |= 0o001

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800, limits: Sequence[str] = ()) -> RunResult:
        """Recorded in `contained` and simulated like run() (pip failures, ...)."""
        self.contained.append((list(argv), user, cwd, tuple(writable)))
        self.contained_limits.append(tuple(limits))
        return self.run(argv, cwd=cwd, env=env, timeout=timeout)

    def run_attached(self, argv: Sequence[str], *, properties: Sequence[str],
                     env: Mapping[str, str], tty: bool) -> int:
        """Recorded in `attached`; the exit status comes from run() (a scripted failure)."""
        self.attached.append((list(argv), list(properties), dict(env), tty))
        return self.run(argv, check=False).returncode

    # ------------------------------------------------------------------ helpers
    def _need_parent(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if self.files.get(parent, Entry("none")).kind != "dir":
            raise FileNotFoundError(2, "No such file or directory", path)

    def ran(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.commands if c[: len(prefix)] == list(prefix)]

    def simulate(self, argv: list[str]) -> RunResult:
        ok = RunResult(0, "", "")
        cmd = argv[0]
        if cmd == "dpkg-query":
            names = argv[3:]
            lines = [f"{n} ii " for n in names if n in self.packages]
            return RunResult(0 if len(lines) == len(names) else 1, "\n".join(lines), "")
        if cmd == "apt-get":
            if "install" in argv:
                self.packages.update(a for a in argv[2:] if not a.startswith("-")
                                     and "::" not in a)
            return ok
        if cmd == "getent":
            if len(argv) == 2:  # the whole database, one entry a line
                return RunResult(0, "".join(self.simulate_getent(argv[1], name).stdout
                                            for name in sorted(self.users)), "")
            return self.simulate_getent(argv[1], argv[2])
        if cmd == "useradd":
            self.users.add(argv[-1])
            self.comments[argv[-1]] = argv[argv.index("--comment") + 1]
            return ok
        if cmd == "usermod":
            self.comments[argv[-1]] = argv[argv.index("--comment") + 1]
            return ok
        if cmd == "git":
            return self.simulate_git(argv)
        if cmd == "tar":
            src, dest = argv[3], argv[5]
            sha = self.read(src).decode()  # our fake archive holds just the commit id
            for rel, data in self.repo_files.get(sha, {}).items():
                self.mkdir(posixpath.dirname(f"{dest}/{rel}"), 0o755, "root", "root")
                self.write(f"{dest}/{rel}", data, 0o644, "root", "root")
            return ok
        if cmd == "mv":
            src, dest = argv[2], argv[3]
            for key in [k for k in self.files if k == src or k.startswith(src + "/")]:
                self.files[dest + key[len(src):]] = self.files.pop(key)
            return ok
        if cmd == "systemctl":
            return self.simulate_systemctl(argv)
        if cmd == "systemd-analyze":  # calendar: what systemd would refuse, the test says
            return RunResult(1 if argv[-1] in self.bad_schedules else 0, "", "")
        if cmd == "nginx":
            return ok if self.nginx_ok else RunResult(1, "", "nginx: [emerg] bad config")
        if (parts := build_parts(argv)) is not None:  # the copy, then the installer
            return self.simulate(parts[-1])
        if cmd.endswith("/bin/python"):
            if "pip" in argv[1:4] and self.pip_fails:
                return RunResult(1, "", "ERROR: No matching distribution found")
            return ok
        if cmd.endswith("/bin/uv"):
            if self.pip_fails:
                return RunResult(1, "", "error: No solution found when resolving dependencies")
            return ok
        if cmd == "/usr/bin/python3":
            return RunResult(0, "3.11.2 (main) [GCC 12.2.0]\n", "")
        if cmd == "systemd-tmpfiles":
            for line in (self.read(argv[-1]) or b"").decode().splitlines():
                parts = line.split()
                if parts and parts[0] == "d":
                    self.mkdir(parts[1], int(parts[2], 8), parts[3], parts[4])
            return ok
        return ok  # chown, chmod, ...

    def simulate_getent(self, database: str, name: str) -> RunResult:
        """Accounts as Debian lists them: root and www-data as shipped; others as fleet (or,
        without a comment, an earlier fleet) made them, in a group of their own."""
        if name not in self.users:
            return RunResult(2, "", "")
        uid = {"root": 0, "www-data": 33}.get(name, 1000 + zlib.crc32(name.encode()) % 50000)
        if database == "group":
            return RunResult(0, f"{name}:x:{uid}:{','.join(self.members.get(name, ()))}\n", "")
        home, shell = {"root": ("/root", "/bin/bash"),
                       "www-data": ("/var/www", "/usr/sbin/nologin")}.get(
            name, (f"/srv/fleet/{name}", "/usr/sbin/nologin"))
        comment = self.comments.get(name, "root" if name == "root" else "")
        return RunResult(0, f"{name}:x:{uid}:{uid}:{comment}:{home}:{shell}\n", "")

    def simulate_git(self, argv: list[str]) -> RunResult:
        args = argv[3:]  # past "git -c safe.directory=*"
        repo = None
        if args[0] == "-C":
            repo, args = args[1], args[2:]
        if args[0] == "clone":
            url, dest = args[-2], args[-1]
            if url not in self.commits:
                return RunResult(128, "", f"fatal: repository '{url}' not found")
            self.mkdir(dest, 0o755, "root", "root")
            self.write(f"{dest}/url", url.encode(), 0o644, "root", "root")
            return RunResult(0, "", "")
        url = self.read(f"{repo}/url").decode() if repo and self.read(f"{repo}/url") else ""
        refs = self.commits.get(url, {})
        if args[0] == "config":
            return RunResult(0, url + "\n", "")
        if args[0] == "rev-parse":
            ref = args[-1].removesuffix("^{commit}")
            known = ref in refs.values() or ref in self.repo_files
            sha = refs.get(ref) or (ref if known else None)
            return RunResult(0, sha + "\n", "") if sha else RunResult(1, "", "")
        if args[0] == "archive":
            self.write(args[3], args[4].encode(), 0o644, "root", "root")
            return RunResult(0, "", "")
        if args[0] == "cat-file" and args[-1].endswith("^{commit}"):
            sha = args[-1].removesuffix("^{commit}")  # the mirror has the commit once fetched
            known = sha in refs.values() or sha in self.repo_files
            return RunResult(0, "", "") if known else RunResult(128, "", "fatal: bad object")
        if args[0] in ("show", "cat-file"):
            sha, _, path = args[-1].partition(":")
            path = posixpath.normpath(path)
            data = self.repo_files.get(sha, {}).get(path)
            if data is None:
                return RunResult(128, "", "fatal: path does not exist")
            return RunResult(0, data.decode() if args[0] == "show" else "", "")
        if args[0] == "ls-remote":
            refs = self.commits.get(args[-1], {})
            return RunResult(0, "".join(f"{s}\trefs/heads/{r}\n" if r != "HEAD" else
                                        f"{s}\tHEAD\n" for r, s in refs.items()), "")
        return RunResult(0, "", "")

    def simulate_systemctl(self, argv: list[str]) -> RunResult:
        if argv[1] == "--version":
            return RunResult(0, f"systemd {self.systemd_version} ({self.systemd_version}.1)\n"
                                "+PAM +AUDIT\n", "")
        verb, unit = argv[1], argv[-1]
        units = [a for a in argv[2:] if not a.startswith("-")]
        if verb == "is-active":
            return RunResult(0 if unit in self.active else 3, "", "")
        if verb == "is-enabled":
            return RunResult(0 if unit in self.enabled else 1, "", "")
        if verb == "show":
            def known(names: set[str], unit: str) -> bool:  # "nginx" is "nginx.service"
                return unit in names or unit.removesuffix(".service") in names

            blocks = [f"Id={u}\nActiveState="
                      + ("failed" if known(self.failed_units, u) else
                         "active" if known(self.active, u) else "inactive")
                      + f"\nNRestarts={self.restarts.get(u, 0)}\n"
                      + ("UnitFileState=enabled\n" if known(self.enabled, u) else "")
                      for u in units]
            return RunResult(0, "\n".join(blocks), "")
        if verb in ("start", "restart"):
            self.active.update(units)
        if verb == "stop":
            self.active.difference_update(units)
        if verb == "reset-failed":
            self.failed_units.difference_update(units)
        if verb == "enable":
            self.enabled.add(unit)
        return RunResult(0, "", "")

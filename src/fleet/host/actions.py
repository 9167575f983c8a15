"""Actions are data: what the executor will do, comparable in tests and printable in a plan."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

MASK = "********"


@dataclass(frozen=True, kw_only=True)
class Action:
    """Base of every change fleet can make; `describe` is the plan line."""

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class WriteFile(Action):
    path: str
    content: bytes
    mode: int
    owner: str = "root"
    group: str = "root"
    old: bytes | None = field(default=None, compare=False)
    secret: bool = False  # never show the content (env files)
    why: str = ""

    def describe(self) -> str:
        verb = "create" if self.old is None else "update"
        suffix = f" ({self.why})" if self.why else ""
        return f"{verb} {self.path} [{self.owner}:{self.group} {self.mode:04o}]{suffix}"

    def diff(self) -> str:
        """Unified diff of the change, with secrets masked."""
        if self.secret:
            return f"--- {self.path}\n+++ {self.path}\n(secret content, {MASK})\n"
        old = (self.old or b"").decode(errors="replace").splitlines(keepends=True)
        new = self.content.decode(errors="replace").splitlines(keepends=True)
        before = self.path if self.old is not None else "/dev/null"
        import difflib  # only to show a diff: a no-op never does

        return "".join(difflib.unified_diff(old, new, before, self.path))


@dataclass(frozen=True, kw_only=True)
class SetAttrs(Action):
    """Fix owner/group/mode of an existing path (content already right)."""

    path: str
    mode: int
    owner: str
    group: str

    def describe(self) -> str:
        return f"set {self.path} to {self.owner}:{self.group} {self.mode:04o}"


@dataclass(frozen=True, kw_only=True)
class MakeDir(Action):
    path: str
    mode: int
    owner: str = "root"
    group: str = "root"

    def describe(self) -> str:
        return f"create directory {self.path} [{self.owner}:{self.group} {self.mode:04o}]"


@dataclass(frozen=True, kw_only=True)
class Symlink(Action):
    path: str
    target: str

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"


@dataclass(frozen=True, kw_only=True)
class Remove(Action):
    path: str
    why: str = ""

    def describe(self) -> str:
        return f"remove {self.path}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True, kw_only=True)
class Run(Action):
    argv: tuple[str, ...]
    why: str = ""
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout: float | None = None
    secrets: tuple[str, ...] = field(default=(), compare=False)
    # Retry while the command's error output contains this text (a lock someone else holds),
    # for up to `retry_for` seconds.
    retry_while: str = ""
    retry_for: float = 0.0

    def describe(self) -> str:
        return (self.why + ": " if self.why else "run: ") + self.command_line()

    def command_line(self) -> str:
        text = shlex.join(self.argv)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, MASK)
        return text


@dataclass(frozen=True, kw_only=True)
class ContainedRun(Action):
    """Run app or dependency code (pip, a build backend, `init`) as an unprivileged user in a
    transient systemd unit: read-only system, private /tmp, only `writable` writable, stdin
    /dev/null, a new session, and its whole cgroup killed at `timeout` or when it ends."""

    argv: tuple[str, ...]
    user: str
    why: str = ""
    env: tuple[tuple[str, str], ...] = ()  # reaches the unit through a root-only file
    cwd: str = "/"
    writable: tuple[str, ...] = ()
    timeout: float = 1800
    limits: tuple[str, ...] = ()  # unit settings of the app's limits ("Slice=...")
    secrets: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        text = shlex.join(self.argv)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, MASK)
        return f"{self.why or 'run'} (as {self.user}, contained): {text}"


@dataclass(frozen=True, kw_only=True)
class BuildVenv(Action):
    """Create a virtualenv with the system Python: in-process with `virtualenv` (pip and
    setuptools seeded, for pip to build with), or, when `uv` names its binary, an empty one
    with `uv venv` (uv installs into it from outside: nothing to seed, copy and walk)."""

    path: str
    python: str = "/usr/bin/python3"
    uv: str | None = None

    def describe(self) -> str:
        how = " (uv venv: no pip, setuptools)" if self.uv else ""
        return f"build virtualenv {self.path} with {self.python}{how}"


@dataclass(frozen=True, kw_only=True)
class OwnTree(Action):
    """chown -R (and, for "private", chmod -R u=rwX,g=rX,o=) of a tree that may hold links
    the repo chose: done through file descriptors, never following a link."""

    path: str
    owner: str | None  # None: keep each entry's owner
    group: str
    modes: str = "private"  # "private" or "keep"
    why: str = ""

    def describe(self) -> str:
        what = "make root-owned and readable by the app only" if self.modes == "private" \
            else "set owner"
        return (f"{self.why or what}: {self.path} -> {self.owner or ''}:{self.group} "
                "(links not followed)")


@dataclass(frozen=True, kw_only=True)
class ExposeTree(Action):
    """Let nginx traverse from `home` to a static directory and read it (o+x, o+rX), through
    file descriptors: a link on the way is refused, a link inside is not followed."""

    home: str
    path: str

    def describe(self) -> str:
        return f"let nginx read static files: {self.path} (links not followed)"


@dataclass(frozen=True, kw_only=True)
class Unknown(Action):
    """A step whose actions depend on one that has not run yet (shown by `plan`)."""

    what: str

    def describe(self) -> str:
        return f"{self.what} (decided when the steps before it have run)"


@dataclass(frozen=True, kw_only=True)
class Move(Action):
    """Rename into place: the last step of building something that must appear whole."""

    src: str
    dest: str

    def describe(self) -> str:
        return f"move {self.src} -> {self.dest}"


@dataclass(frozen=True, kw_only=True)
class FetchWheel(Action):
    """Download `filename` of `project` from the first index that lists it, check its sha256
    against the pin and write only its `member` to `dest` (0755): done in fleet's process
    (fleet.host.fetch), so nothing from the index, nor pip, runs. `tmp` holds the download."""

    project: str
    version: str
    filename: str
    sha256: str
    member: str
    dest: str
    tmp: str
    indexes: tuple[str, ...]
    cert: str | None = None
    timeout: float = 600

    def describe(self) -> str:
        from fleet.masking import mask_urls

        where = ", then ".join(mask_urls(i) for i in self.indexes)
        return (f"download {self.project} {self.version} ({self.filename}) from {where}, "
                f"check its sha256 ({self.sha256[:12]}...), unpack only its {self.member} "
                f"-> {self.dest} (no code runs)")

"""Facts gathered once per run: a Host that remembers the answers of the few commands whose
output is the same for every app (the accounts and groups, `nginx -v`, the system Python's
version, `systemctl --version`), so a no-op apply of 100 apps does not run them 100 times;
and the answers of git's reads of a mirror (a ref, a tree, a file), so they can be asked for
every app at once, in parallel, before the app steps read them (converge.prepare.warm_git).

A remembered answer is dropped as soon as anything could have changed it: any change through
the host (a file written, a directory made, ...) and any command that is not a known read
(useradd, apt-get, git fetch, systemctl restart, ...) forget everything. Reads of other kinds
(nginx -t, systemctl show, git ls-remote) pass through uncached and forget nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from fleet.host.machine import FileState, Host, ProcessInfo, RunResult

# Commands that change nothing a remembered fact depends on (accounts, installed versions).
READ_ONLY = {"getent", "dpkg-query", "openssl", "journalctl", "systemd-analyze",
             "systemd-tmpfiles"}
READ_ONLY_VERBS = {"nginx": {"-v", "-t", "-T"},
                   "systemctl": {"show", "is-active", "is-enabled", "--version", "cat"}}
# `getent DATABASE NAME` is answered from one listing of the whole database.
LISTED = ("passwd", "group")
# git subcommands that read a mirror (remembered), and those that change nothing else.
GIT_READS = {"rev-parse", "ls-tree", "show", "cat-file"}
GIT_READ_ONLY = GIT_READS | {"config", "ls-remote", "archive"}


def git_subcommand(argv: Sequence[str]) -> str | None:
    """`git -c X -C REPO SUB ...` -> SUB (None: not git)."""
    if not argv or argv[0] != "git":
        return None
    index = 1
    while index < len(argv) and argv[index] in ("-c", "-C"):
        index += 2
    return argv[index] if index < len(argv) else None


def remembered(argv: Sequence[str]) -> bool:
    """Whether the answer to this command is a fact worth remembering for the run."""
    head = list(argv[:2])
    return (head in (["nginx", "-v"], ["systemctl", "--version"])
            or (head[:1] == ["/usr/bin/python3"] and "-I" in argv)
            or (len(argv) == 3 and argv[0] == "getent" and argv[1] in LISTED)
            or git_subcommand(argv) in GIT_READS)


def reads_only(argv: Sequence[str]) -> bool:
    if not argv:
        return False
    if argv[0] == "git":
        sub = git_subcommand(argv)
        return sub in GIT_READ_ONLY and (sub != "config" or "--get" in argv)
    if argv[0] in READ_ONLY:
        return argv[0] != "systemd-tmpfiles" or "--create" not in argv
    verbs = READ_ONLY_VERBS.get(argv[0])
    return verbs is not None and any(a in verbs for a in argv[1:3])


def entry_of(listing: str, name: str) -> str | None:
    """The line of `getent passwd` (or group) listing for NAME."""
    for line in listing.splitlines():
        if line.split(":", 1)[0] == name:
            return line + "\n"
    return None


class FactsHost:
    """Wraps a Host for one run (apply, plan, deploy): remembers facts, forgets on change."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.facts: dict[tuple[str, ...], RunResult] = {}

    def forget(self) -> None:
        self.facts.clear()

    def run(self, argv: Sequence[str], *, check: bool = True, cwd: str | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float | None = None) -> RunResult:
        key = (*argv, f"cwd={cwd}")
        if not remembered(argv) or env or input is not None:
            if not reads_only(argv):
                self.forget()
            return self.host.run(argv, check=check, cwd=cwd, env=env, input=input,
                                 timeout=timeout)
        if key not in self.facts:
            self.facts[key] = self._ask(tuple(argv), cwd, timeout)
        result = self.facts[key]
        if check and not result.ok:  # raised by the host itself, as without the cache
            return self.host.run(argv, check=True, cwd=cwd, timeout=timeout)
        return result

    def _ask(self, argv: tuple[str, ...], cwd: str | None, timeout: float | None) -> RunResult:
        if argv[0] == "getent":
            listing_key = argv[:2]
            if listing_key not in self.facts:
                self.facts[listing_key] = self.host.run(list(listing_key), check=False,
                                                        timeout=timeout)
            listing = self.facts[listing_key]
            line = entry_of(listing.stdout, argv[2]) if listing.ok else None
            if line is not None:
                return RunResult(0, line, "")
            # Not listed: an account source that does not enumerate (LDAP) may still know it.
        return self.host.run(list(argv), check=False, cwd=cwd, timeout=timeout)

    # Reads pass through.
    def read(self, path: str) -> bytes | None:
        return self.host.read(path)

    def state(self, path: str) -> FileState | None:
        return self.host.state(path)

    def listdir(self, path: str) -> list[str]:
        return self.host.listdir(path)

    def read_tail(self, path: str, lines: int) -> bytes:
        return self.host.read_tail(path, lines)

    def processes(self) -> list[ProcessInfo]:
        return self.host.processes()

    def ask_socket(self, path: str, *, timeout: float, cap: int) -> bytes:
        return self.host.ask_socket(path, timeout=timeout, cap=cap)

    def follow(self, argv: Sequence[str], *, env: Mapping[str, str]) -> Iterator[str]:
        return self.host.follow(argv, env=env)

    # Changes forget every fact first.
    def write(self, path: str, content: bytes, mode: int, owner: str, group: str) -> None:
        self.forget()
        self.host.write(path, content, mode, owner, group)

    def mkdir(self, path: str, mode: int, owner: str, group: str) -> None:
        self.forget()
        self.host.mkdir(path, mode, owner, group)

    def chown(self, path: str, mode: int, owner: str, group: str) -> None:
        self.forget()
        self.host.chown(path, mode, owner, group)

    def symlink(self, path: str, target: str) -> None:
        self.forget()
        self.host.symlink(path, target)

    def remove(self, path: str) -> None:
        self.forget()
        self.host.remove(path)

    def build_venv(self, path: str, python: str, uv: str | None = None) -> None:
        self.forget()
        self.host.build_venv(path, python, uv)

    def own_tree(self, path: str, owner: str | None, group: str, modes: str) -> None:
        self.forget()
        self.host.own_tree(path, owner, group, modes)

    def expose_tree(self, home: str, path: str) -> None:
        self.forget()
        self.host.expose_tree(home, path)

    def run_contained(self, argv: Sequence[str], *, user: str, cwd: str = "/",
                      env: Mapping[str, str] | None = None, writable: Sequence[str] = (),
                      timeout: float = 1800, limits: Sequence[str] = ()) -> RunResult:
        self.forget()
        return self.host.run_contained(argv, user=user, cwd=cwd, env=env, writable=writable,
                                       timeout=timeout, limits=limits)

    def run_attached(self, argv: Sequence[str], *, properties: Sequence[str],
                     env: Mapping[str, str], tty: bool) -> int:
        self.forget()
        return self.host.run_attached(argv, properties=properties, env=env, tty=tty)

"""Facts gathered once per run: a Host that remembers the answers of the few commands whose
output is the same for every app (the accounts and groups, `nginx -v`, the system Python's
version, `systemctl --version`), so a no-op apply of 100 apps does not run them 100 times;
whether the services every run asks about are enabled and active (one `systemctl show` for
all of them, not an is-enabled and an is-active for each); and the answers of git's reads of
a mirror (a ref, a tree, a file), so they can be asked for every app at once, in parallel,
before the app steps read them (converge.prepare.warm_git).

A remembered answer is dropped as soon as anything could have changed it: any change through
the host (a file written, a directory made, ...) and any command that is not a known read
(useradd, apt-get, git fetch, systemctl restart, ...) forget everything. Reads of other kinds
(nginx -t, systemctl show, git ls-remote) pass through uncached and forget nothing. git's
answers about a commit's content never change and are also kept between runs
(fleet.host.git_answers).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence

from fleet.host import git_answers
from fleet.host.layout import EMPEROR_UNIT_NAME
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
# `systemctl is-active|is-enabled --quiet UNIT`: the units every run asks about are shown
# together, with the one asked, the first time one of them is.
SHOWN_UNITS = (EMPEROR_UNIT_NAME, "nginx.service")
SHOW_ARGV = ("systemctl", "show", "--property=Id,ActiveState,UnitFileState", "--")
# The states for which `systemctl is-active` and `is-enabled` exit 0 (systemctl(1)).
ACTIVE_STATES = {"active", "reloading", "refreshing"}
ENABLED_STATES = {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated",
                  "transient"}


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


def unit_query(argv: Sequence[str]) -> tuple[str, str] | None:
    """`systemctl is-active --quiet UNIT` -> ("is-active", "UNIT.service"); None: another
    command. A name without a suffix is a service, as systemctl takes it."""
    if (len(argv) != 4 or argv[0] != "systemctl" or argv[1] not in ("is-active", "is-enabled")
            or argv[2] != "--quiet" or argv[3].startswith("-")):
        return None
    unit = argv[3] if "." in argv[3] else f"{argv[3]}.service"
    return argv[1], unit


def unit_states(units: Sequence[str], output: str) -> dict[str, dict[str, str]] | None:
    """`systemctl show --property=...` of UNITS (one block each, in order) -> each unit's
    properties; None when the blocks do not match the units asked."""
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in output.strip().split("\n\n")] if output.strip() else []
    if len(blocks) != len(units):
        return None
    return dict(zip(units, blocks, strict=True))


def unit_answer(query: tuple[str, str], states: dict[str, str]) -> RunResult:
    """What `systemctl is-active|is-enabled --quiet` would answer, from the unit's shown state
    (exit 3 and 1 are what they return for inactive and disabled)."""
    verb, _ = query
    if verb == "is-active":
        return RunResult(0 if states.get("ActiveState") in ACTIVE_STATES else 3, "", "")
    return RunResult(0 if states.get("UnitFileState") in ENABLED_STATES else 1, "", "")


def runs_binary(path: str) -> bool:
    """Whether this process runs the very file at `path` (same inode, not just the same name:
    a binary replaced on disk since this process started is another file). Then what that
    binary would print about itself (its version) can be answered without starting it."""
    try:
        own, other = os.stat("/proc/self/exe"), os.stat(path)
    except OSError:
        return False
    return (own.st_dev, own.st_ino) == (other.st_dev, other.st_ino)


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
        self.unit_props: dict[str, dict[str, str]] = {}  # units shown since the last change

    def forget(self) -> None:
        self.facts.clear()
        self.unit_props.clear()

    def run(self, argv: Sequence[str], *, check: bool = True, cwd: str | None = None,
            env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float | None = None) -> RunResult:
        key = (*argv, f"cwd={cwd}")
        query = unit_query(argv)
        if query is not None and not env and input is None:
            answer = self._unit(query, timeout)
            if answer is not None and (answer.ok or not check):
                return answer
            # Not shown, or a failure to raise: the command itself, as without the cache.
            return self.host.run(argv, check=check, cwd=cwd, timeout=timeout)
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

    def remember(self, argv: Sequence[str], result: RunResult, cwd: str | None = None) -> None:
        """Take `result` as the answer to a remembered command, known without running it (the
        system Python's version when it is the interpreter running fleet); forgotten, like
        every fact, at the first change."""
        self.facts[(*argv, f"cwd={cwd}")] = result

    def _unit(self, query: tuple[str, str], timeout: float | None) -> RunResult | None:
        if query[1] not in self.unit_props:
            units = list(dict.fromkeys([*SHOWN_UNITS, query[1]]))
            shown = self.host.run([*SHOW_ARGV, *units], check=False, timeout=timeout)
            states = unit_states(units, shown.stdout) if shown.ok else None
            if states is None:
                return None
            self.unit_props.update(states)
        return unit_answer(query, self.unit_props[query[1]])

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
        if git_answers.immutable(argv):  # about a commit's content: kept between runs
            kept = git_answers.current()
            known = kept.get(argv) if kept is not None else None
            if known is not None:
                return known
            result = self.host.run(list(argv), check=False, cwd=cwd, timeout=timeout)
            if kept is not None and (result.ok or self._has_commit(argv, timeout)):
                kept.put(argv, result)
            return result
        return self.host.run(list(argv), check=False, cwd=cwd, timeout=timeout)

    def _has_commit(self, argv: tuple[str, ...], timeout: float | None) -> bool:
        """Whether the mirror `argv` reads holds the commit it names (a failure about it is
        then a fact about its content, not about what was fetched)."""
        commit = git_answers.commit_of(argv)
        sub = argv.index(git_subcommand(argv) or "")  # `git -c X -C REPO` before it
        if "-C" not in argv[:sub] or argv[sub:] == ("cat-file", "-e", f"{commit}^{{commit}}"):
            return False
        return self.run([*argv[:sub], "cat-file", "-e", f"{commit}^{{commit}}"], check=False,
                        timeout=timeout).ok

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

    def fetch_wheel(self, indexes: tuple[str, ...], project: str, filename: str, sha256: str,
                    member: str, dest: str, tmp: str, cert: str | None,
                    timeout: float) -> None:
        self.forget()
        self.host.fetch_wheel(indexes, project, filename, sha256, member, dest, tmp, cert,
                              timeout)

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

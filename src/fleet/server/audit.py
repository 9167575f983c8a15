"""The audit log: one JSON line per command that changed the server, in /var/log/fleet/audit.log.

Who ran it comes from the first of: FLEET_OPERATOR (set by `fleet push` from the operator's
machine), SUDO_USER, the ssh key of the session (its authorized_keys comment, else its
fingerprint), the login name. Lines are appended with one write(2) on an O_APPEND descriptor
under flock, so two fleets at once never interleave; the log is root-only (dir 0700, file 0600)
and rotated by logrotate (the snippet fleet apply writes).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fcntl
import hashlib
import json
import os
import re
import socket
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

from fleet.host import layout
from fleet.host.layout import AppPaths
from fleet.host.machine import Host
from fleet.server.history import History

AUDIT_DIR = "/var/log/fleet"
AUDIT_LOG = f"{AUDIT_DIR}/audit.log"
# For tests only (like bootstrap's FLEET_OS_RELEASE): the unit tests run fleet as root in
# subprocesses, whose lines must not land in the real log of the machine running them.
TEST_LOG_ENV = "FLEET_TEST_AUDIT_LOG"


# logrotate keeps 12 (converge.notify's AUDIT_KEEP): a bound in case an operator keeps more.
ROTATED_MAX = 1000


def log_path() -> str:
    return os.environ.get(TEST_LOG_ENV) or AUDIT_LOG
ROOT_KEYS = "/root/.ssh/authorized_keys"
ACCEPTED = re.compile(r"Accepted publickey for (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+)"
                      r" \S+: (?P<type>\S+) (?P<fp>SHA256:[A-Za-z0-9+/=]+)")


@dataclass(frozen=True)
class Operator:
    who: str
    via: str  # push, sudo, ssh-key, login


@dataclass
class AppMark:
    """An app's live commit and newest failed release when the command began or ended."""

    commit: str | None = None
    release: str | None = None
    failed: str | None = None  # "release: error" of the newest failed release record


@dataclass
class AuditEntry:
    time: str
    unix: float
    host: str
    who: str
    via: str
    command: list[str]
    apps: list[str]
    result: str  # ok, changed, failed
    exit: int
    commits: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def line(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=False, separators=(",", ":")) + "\n").encode()


def key_fingerprint(blob_b64: str) -> str | None:
    """OpenSSH's SHA256:... fingerprint of a base64 public key blob."""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def authorized_comment(text: str, fingerprint: str) -> str | None:
    """The comment of the authorized_keys line whose key has this fingerprint ("" if none)."""
    for line in text.splitlines():
        words = line.split()
        for index, word in enumerate(words):
            if word.startswith(("ssh-", "ecdsa-", "sk-")) and index + 1 < len(words):
                if key_fingerprint(words[index + 1]) == fingerprint:
                    return " ".join(words[index + 2:])
                break
    return None


def session_fingerprint(env: Mapping[str, str], host: Host) -> str | None:
    """The fingerprint of the key this ssh session logged in with: from SSH_USER_AUTH (sshd's
    ExposeAuthInfo), else sshd's journal line for this session's client address and port."""
    auth_file = env.get("SSH_USER_AUTH")
    if auth_file:
        for line in (host.read(auth_file) or b"").decode(errors="replace").splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "publickey":
                return key_fingerprint(words[2])
    client = (env.get("SSH_CONNECTION") or env.get("SSH_CLIENT") or "").split()
    if len(client) < 2:
        return None
    journal = host.run(["journalctl", "--quiet", "--no-pager", "--output=cat", "--lines=2000",
                        "SYSLOG_IDENTIFIER=sshd", "+", "SYSLOG_IDENTIFIER=sshd-session"],
                       check=False, timeout=10)
    for match in reversed(list(ACCEPTED.finditer(journal.stdout if journal.ok else ""))):
        if match["ip"] == client[0] and match["port"] == client[1]:
            return match["fp"]
    return None


def resolve_operator(env: Mapping[str, str], host: Host) -> Operator:
    """Who runs this command, by the first source that knows (module docstring)."""
    if env.get("FLEET_OPERATOR", "").strip():
        return Operator(env["FLEET_OPERATOR"].strip(), "push")
    if env.get("SUDO_USER", "").strip():
        return Operator(env["SUDO_USER"].strip(), "sudo")
    if env.get("SSH_CONNECTION") or env.get("SSH_CLIENT"):
        fingerprint = session_fingerprint(env, host)
        if fingerprint:
            keys = (host.read(ROOT_KEYS) or b"").decode(errors="replace")
            comment = authorized_comment(keys, fingerprint)
            return Operator(comment or fingerprint, "ssh-key")
    login = env.get("LOGNAME") or env.get("USER") or "root"
    return Operator(login, "login")


def known_apps(host: Host) -> list[str]:
    """Apps with a release history (every app fleet ever deployed and not removed)."""
    return sorted(name[:-len(".json")] for name in host.listdir(layout.STATE_APPS)
                  if name.endswith(".json") and not name.startswith("."))


def mark(host: Host, app: str) -> AppMark:
    """What the app serves: none once removed (`remove-app` keeps its files unless --purge)."""
    history = History.load(host, app)
    state = host.state(AppPaths(app).current)
    configured = host.state(AppPaths(app).config_file) is not None
    live = state.target.rsplit("/", 1)[-1] if configured and state and state.kind == "link" \
        else None
    record = history.releases.get(live) if live else None
    failed = [r for r in history.releases.values() if r.failed]
    newest = max(failed, key=lambda r: r.built) if failed else None
    return AppMark(record.commit if record else None, live,
                   f"{newest.id}: {newest.failed}" if newest else None)


def marks(host: Host) -> dict[str, AppMark]:
    return {app: mark(host, app) for app in known_apps(host)}


def now_fields(now: float) -> tuple[str, float]:
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z"), round(now, 3)


def entry(*, now: float, operator: Operator, command: list[str], named: list[str],
          whole_server: bool, before: dict[str, AppMark], after: dict[str, AppMark],
          result: str, code: int) -> AuditEntry:
    """The line for one command: the apps it named (all of them for apply and init) plus
    any whose live commit moved, each with its commit before and after."""
    moved = [a for a in sorted(set(before) | set(after))
             if before.get(a, AppMark()).commit != after.get(a, AppMark()).commit]
    apps = sorted(set(before) | set(after)) if whole_server else list(
        dict.fromkeys([*named, *moved]))
    commits = {a: {"before": before.get(a, AppMark()).commit,
                   "after": after.get(a, AppMark()).commit} for a in apps}
    time_text, unix = now_fields(now)
    return AuditEntry(time=time_text, unix=unix, host=socket.gethostname(), who=operator.who,
                      via=operator.via, command=command, apps=apps, result=result, exit=code,
                      commits=commits)


def append(line: bytes, path: str | None = None) -> None:
    """One write(2) on an O_APPEND descriptor, under an exclusive flock: whole lines even with
    two fleets at once. Never follows a symlink; the directory is made root-only."""
    path = path or log_path()
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)


def log_texts(host: Host, path: str) -> Iterator[bytes]:
    """The log, then each file logrotate made of it, newest first: PATH.1 (delaycompress
    leaves the newest one as it was), PATH.2.gz, ... up to the first one missing. A file that
    does not decompress is skipped (its lines are lost, not the command)."""
    yield host.read(path) or b""
    for number in range(1, ROTATED_MAX + 1):
        plain = host.read(f"{path}.{number}")
        if plain is not None:
            yield plain
            continue
        packed = host.read(f"{path}.{number}.gz")
        if packed is None:
            return
        try:
            import gzip  # only for rotated logs: a run that appends a record never needs it

            yield gzip.decompress(packed)
        except (OSError, EOFError, zlib.error):
            continue


def parse_lines(data: bytes, app: str | None) -> list[dict[str, object]]:
    """One file's lines (of one app), oldest first; damaged lines skipped."""
    found: list[dict[str, object]] = []
    for raw in data.decode(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        apps = line.get("apps")
        if app is None or (isinstance(apps, list) and app in apps):
            found.append(line)
    return found


def read_entries(host: Host, app: str | None = None, limit: int | None = None,
                 path: str | None = None) -> list[dict[str, object]]:
    """The log's lines (of one app), oldest first, the newest `limit` (all without one): the
    rotated files are read, newest first, only as far as the current one falls short."""
    found: list[dict[str, object]] = []
    for data in log_texts(host, path or log_path()):
        found = parse_lines(data, app) + found
        if limit and len(found) >= limit:
            break
    return found[-limit:] if limit else found

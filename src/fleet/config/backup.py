"""[server.backup]: restic's repository, password file, schedule, keep policy and environment.

Apart from parse.py (which calls parse_backup) so the backup keys and their checks read as
one piece. Every problem is one ConfigError naming the file and the dotted key.
"""

from __future__ import annotations

import re

from fleet.config.checker import Checker
from fleet.config.limits import env_line_problem
from fleet.config.settings import KEEP_KEYS, BackupSettings, toml_keys

BACKUP_KEYS = toml_keys(BackupSettings)
DEFAULTS = BackupSettings()
# Repositories restic reaches over the network (or through rclone); anything else is a local
# directory, which must be an absolute path.
REMOTE_SCHEMES = ("sftp:", "s3:", "rest:", "b2:", "azure:", "gs:", "swift:", "rclone:")
PATH_RE = re.compile(r"/[A-Za-z0-9._/@+-]*")
BAD_RE = re.compile(r"[\s\x00-\x1f\x7f]")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by fleet from `repository` and `password_file`: two sources would disagree.
OWN_ENV = ("RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD",
           "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")
KEEP_MAX = 100000


def parse_backup(c: Checker) -> BackupSettings | None:
    """None when there is no [server.backup] table: backups are not used on this server."""
    if "backup" not in c.table:
        return None
    b = c.sub("backup")
    b.check_known(BACKUP_KEYS)
    repository = b.get_str("repository", DEFAULTS.repository)
    if not repository or BAD_RE.search(repository):
        b.fail("repository", "must be a path or URL without whitespace or control characters")
    if not repository.startswith(REMOTE_SCHEMES) and (
            not PATH_RE.fullmatch(repository) or ".." in repository.split("/")):
        b.fail("repository", f"{repository!r} must be an absolute directory (letters, digits "
                             f"and . _ / @ + -) or a {', '.join(REMOTE_SCHEMES)} URL")
    password_file = b.get_str("password_file", DEFAULTS.password_file)
    if not PATH_RE.fullmatch(password_file) or ".." in password_file.split("/") \
            or password_file.endswith("/"):
        b.fail("password_file", f"{password_file!r} must be an absolute file path (letters, "
                                "digits and . _ / @ + -)")
    schedule = b.get_str("schedule")
    if schedule is not None and not schedule.strip():
        b.fail("schedule", "is empty (leave it out for no scheduled backups)")
    return BackupSettings(repository=repository, password_file=password_file,
                          schedule=schedule, keep=parse_keep(b), env=parse_env(b))


def parse_keep(b: Checker) -> tuple[tuple[str, int], ...]:
    keep = b.sub("keep")
    keep.check_known(list(KEEP_KEYS))
    return tuple((key, keep.get_int(key, 0, 1, KEEP_MAX)) for key in KEEP_KEYS
                 if key in keep.table)


def parse_env(b: Checker) -> tuple[tuple[str, str], ...]:
    env = b.sub("env")
    pairs = []
    for key in env.table:
        if not ENV_NAME_RE.fullmatch(str(key)):
            env.fail(str(key), "is not a valid environment variable name")
        if key in OWN_ENV:
            env.fail(key, "is set by fleet from repository and password_file")
        value = env.get_str(key, required=True)
        problem = env_line_problem(key, value)
        if problem:
            env.fail(key, problem)
        pairs.append((key, value))
    return tuple(pairs)

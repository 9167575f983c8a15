"""Credentials inside URLs: split off before git sees the URL, masked wherever text is shown.

A repo URL such as https://user:TOKEN@host/app.git (or https://TOKEN@host/...) carries a
secret. git gets the URL without it (so it is on no command line, in no mirror config) and the
credentials through its environment; every message fleet prints passes through mask_urls.
Kept free of fleet imports so every layer (errors, the session, the config) can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "********"
URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s\"']+@")
# Schemes whose userinfo git hands to a credential helper; for ssh:// the user is a login
# name, not a secret, and stays in the URL.
HTTP_SCHEMES = ("http", "https")


def mask_urls(text: str) -> str:
    """https://user:token@host/... -> https://********@host/... (repo and index URLs)."""
    return URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)


@dataclass(frozen=True)
class RepoUrl:
    """A repo URL split into what may be shown (`url`) and what may not (the credentials)."""

    url: str
    username: str = ""
    password: str = ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.username or self.password)

    def origin(self) -> str:
        """scheme://host[:port]: the credential helper answers for this server only."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"


def split_credentials(url: str) -> RepoUrl:
    """https://user:TOKEN@host/p.git -> (https://host/p.git, user, TOKEN); others unchanged."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in HTTP_SCHEMES or "@" not in parts.netloc:
        return RepoUrl(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return RepoUrl(clean, unquote(user), unquote(password))


# Options whose value is a secret wherever they appear on a command line (the audit log's
# copy of argv): fleet takes secrets from stdin, but an operator may still type one.
SECRET_OPTIONS = ("--password", "--secret", "--token", "--value")
ASSIGNMENT = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)", re.DOTALL)


def mask_argv(argv: list[str]) -> list[str]:
    """A command line fit for a log: URL credentials, KEY=VALUE values and the values of
    secret-looking options (`--password X`, `--token=X`) masked."""
    masked: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        option, eq, _ = word.partition("=")
        if option in SECRET_OPTIONS:
            if eq:
                masked.append(f"{option}={MASK}")
            else:
                masked.append(word)
                hide_next = True
            continue
        assignment = ASSIGNMENT.fullmatch(word)
        if assignment and not word.startswith("-"):
            masked.append(f"{assignment['key']}={MASK}")
            continue
        masked.append(mask_urls(word))
    return masked

"""The compiled methods of fleet's dataclasses, kept between runs (zipapp on a server only).

Every start of fleet creates ~60 frozen dataclasses (settings, actions, history...), and
`@dataclass` compiles the source text of each generated method (__init__, __repr__, __eq__,
__hash__, __setattr__, __delattr__; Python 3.13 compiles them as one text) with `exec`: on
Debian 12's Python 3.11 about 0.7 ms a class, some 35 ms of every start, a tenth of a no-op
apply. The text is the same every run, so its
compiled code is kept: dataclasses' `exec` is routed through `cached_exec`, which compiles a
text only when the cache does not hold it, and runs exactly what `exec(text)` would run
(the same text compiled the same way, `dont_inherit` so this module's __future__ flags stay
out, into the same globals and namespace).

The cache is one marshal file per build and Python (marshal is the format of .pyc files and
as version-bound, hence the key), root-only under /var/cache/fleet/_code; it is loaded only
when root owns it and its directory and nobody else can write them (loading it runs its
code), written atomically at the end of a root run that compiled something new (the command
line calls `save`, as it does the render cache's, and not after bad input: exit 2 leaves the
server untouched). Anything
unexpected (no file, another owner, a corrupt or foreign one) means compiling as Python
would: never an error. A source checkout (no build id) does not use it at all.
"""

from __future__ import annotations

import builtins
import dataclasses
import marshal
import os
import stat
import sys
from pathlib import Path
from types import CodeType

CODE_DIR = "/var/cache/fleet/_code"  # not an app's build cache: app names start [a-z]
FORMAT = 1  # bumped when the file's layout changes


class CodeCache:
    def __init__(self, path: str, key: str) -> None:
        self.path, self.key = path, key
        self.codes: dict[str, CodeType] = {}
        self.added = False

    def load(self) -> None:
        """Read the file when it is trusted and for this build and Python; else nothing."""
        try:
            with open(self.path, "rb") as handle:
                if not (trusted(os.fstat(handle.fileno()))
                        and trusted(os.stat(os.path.dirname(self.path)))):
                    return
                data = marshal.loads(handle.read())
        except (OSError, ValueError, EOFError, TypeError):
            return
        if (isinstance(data, tuple) and len(data) == 3 and data[:2] == (FORMAT, self.key)
                and isinstance(data[2], dict)):
            self.codes = {k: v for k, v in data[2].items()
                          if isinstance(k, str) and isinstance(v, CodeType)}

    def compiled(self, text: str) -> CodeType:
        code = self.codes.get(text)
        if code is None:
            code = compile(text, "<string>", "exec", dont_inherit=True)
            self.codes[text] = code
            self.added = True
        return code

    def save(self) -> None:
        """Write the file (root only), when this run compiled something it lacked."""
        if not self.added or os.geteuid() != 0:
            return
        directory = os.path.dirname(self.path)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            if not trusted(os.stat(directory)):
                return
            for other in os.listdir(directory):  # other builds' and Pythons' files
                if other != os.path.basename(self.path):
                    Path(directory, other).unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(marshal.dumps((FORMAT, self.key, self.codes)))
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


def trusted(st: os.stat_result) -> bool:
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def install(build_id: str, directory: str = CODE_DIR) -> CodeCache:
    """Route dataclasses' `exec` through the cache of this build and Python."""
    tag = f"{sys.implementation.cache_tag}-{sys.version}"
    key = f"{build_id} {tag}"
    cache = CodeCache(f"{directory}/{build_id}-{sys.implementation.cache_tag}.marshal", key)
    cache.load()

    def cached_exec(source: object, /, *args: object, **kwargs: object) -> None:
        if isinstance(source, str):
            source = cache.compiled(source)
        builtins.exec(source, *args, **kwargs)  # type: ignore[arg-type]

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]  # a module global: its `exec`
    INSTALLED[:] = [cache]
    return cache


INSTALLED: list[CodeCache] = []  # this process's, once installed


def save() -> None:
    """Write this process's cache if it compiled something new (the end of a run)."""
    for cache in INSTALLED:
        cache.save()


def install_for_this_build() -> None:
    """In the zipapp only: it carries fleet/_build_id.txt."""
    try:
        build_id = Path(__file__).with_name("_build_id.txt").read_text("ascii").strip()
    except OSError:
        return
    if build_id.isalnum():
        install(build_id)

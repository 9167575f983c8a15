"""What the last runs rendered, so that a run whose renders all match needs no jinja2 (issue 19).

A no-op apply renders every file it compares; importing jinja2, building its environment and
rendering is about 30 ms of it. The output of a template is a function of three things only:
the build (which templates, which filters, which jinja2), the template's name and its
context. `key` turns the last two into a digest, the file holds the build, and a run whose
keys are all known renders nothing.

Why the key is built the way it is: a key that misses a difference serves a stale file, so
`encode` spells out every value itself, by type, and refuses (the caller renders as usual)
anything it was not written for: no repr (an object address, a set's hash order), no object
it cannot see all of. Dataclasses are accepted only from VETTED: frozen, every field shown,
and properties and methods the templates call (`app.url`, `app.owner`...) that compute from
the fields alone (fleet.config.settings; reviewed with that file). The templates read nothing
else: their filters (render.py) are pure, and no global gives them the host or the clock.

Where: root's RENDER_CACHE (host/layout.py), one marshal file read once per run (the first
render) and replaced atomically at the end of the run (fleet.cli.dispatch calls `save`) when
it added entries; never after bad input (exit 2), which leaves the server untouched. A plan
or --check run reads and writes it too: it renders exactly what an apply would. Only a
build has a cache: a source checkout's templates change without a build id, and it is where
fleet is developed and tested, so it always renders. Anything wrong with the file (missing,
truncated, another build's, another Python's, not root's) is a cache without entries.

Bounds: an entry records the day it was last used; on write, entries unused for KEEP_DAYS go,
then the least recently used beyond MAX_ENTRIES. A run that renders only some apps (add-app,
deploy) keeps the others' entries: they are not yet old. A hit refreshes its day at most once
a day, so a healthy server's no-op rewrites the file once a day, not every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import marshal
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path, PosixPath, PurePosixPath
from typing import Any, Generic, TypeVar

from fleet.host import layout

T = TypeVar("T")
FORMAT = 2
KEEP_DAYS = 14
MAX_ENTRIES = 8192
# Templates whose text holds the apps' secrets (their environment): a run that renders one
# drops that template's entries it did not use, so a rotated secret's old text leaves the
# cache with the run that writes the new one, not KEEP_DAYS later. A run that renders only
# some apps' (a deploy) drops the others' too: the next full run renders those once more.
SECRET_TEMPLATES = frozenset({"app.env.j2", "units.env.j2"})

# The dataclasses a context may hold, by module.qualname: reviewed (see the module docstring).
VETTED = frozenset(f"fleet.config.settings.{name}" for name in (
    "PipSettings", "AcmeSettings", "MetricsSettings", "TlsConfig", "NotifySettings",
    "BackupSettings", "ServerConfig", "EmperorConfig", "HealthConfig", "AuthConfig",
    "WorkerConfig", "JobConfig", "AppConfig", "Config", "FrontApp"))


class Unvetted(Exception):
    """A context holds a value `encode` cannot spell out completely."""


def key(template: str, context: dict[str, Any]) -> str | None:
    """A digest of the template's name and its full context; None (do not cache) when the
    context holds anything `encode` refuses."""
    import hashlib  # the apply path has it already (env digests)

    out = [f"s{len(template)}:{template}"]
    try:
        for name in sorted(context):  # keyword order does not change the output
            out.append(f"k{len(name)}:{name}")
            encode(context[name], out)
    except Unvetted:
        return None
    return hashlib.sha256("".join(out).encode("utf-8", "surrogatepass")).hexdigest()


def encode(value: Any, out: list[str]) -> bool:
    """Append an unambiguous spelling of `value` to `out`: every piece says its type, strings
    their length, containers their size, so two different values never spell alike. Returns
    whether `value` holds a list or dict (which can change after it is spelled)."""
    kind = type(value)
    if kind is str:
        out.append(f"s{len(value)}:{value}")
    elif value is None or kind is bool:
        out.append(f"{value};")
    elif kind is int:
        out.append(f"i{value};")
    elif kind is tuple:
        out.append(f"t{len(value)}(")
        mutable = False
        for item in value:
            mutable |= encode(item, out)
        out.append(")")
        return mutable
    elif kind is list:
        out.append(f"l{len(value)}(")
        for item in value:
            encode(item, out)
        out.append(")")
        return True
    elif kind is dict:  # in order: a template iterates a dict in its order
        out.append(f"d{len(value)}{{")
        for item_key, item in value.items():
            encode(item_key, out)
            encode(item, out)
        out.append("}")
        return True
    elif kind is float:
        out.append(f"f{value!r};")  # repr is exact for a float
    elif kind is bytes:
        out.append(f"b{len(value)}:{value.hex()};")
    elif kind is PosixPath or kind is PurePosixPath:
        text = str(value)
        out.append(f"p{kind.__name__}{len(text)}:{text}")
    else:
        return encode_dataclass(value, out)
    return False


# Spelled-out frozen dataclasses holding no list or dict, by id (with the object, so that the
# id is not reused while it is here): an app's settings are in most of its renders, and
# spelling them once per run instead of once per render is most of the key's cost.
_SPELLED: dict[int, tuple[Any, str]] = {}
SPELLED_MAX = 4096


def encode_dataclass(value: Any, out: list[str]) -> bool:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if name not in VETTED:  # sets, enums, any other class: not spelled out, not cached
        raise Unvetted(name)
    fields = vetted_fields(kind)
    extra = getattr(value, "__dict__", None)
    if extra is not None and len(extra) != len(fields):
        raise Unvetted(f"{name} has attributes beyond its fields")
    known = _SPELLED.get(id(value))
    if known is not None and known[0] is value:
        out.append(known[1])
        return False
    spelled = [f"D{name}("]
    mutable = False
    for field in fields:
        spelled.append(f"{field}=")
        mutable |= encode(getattr(value, field), spelled)
    spelled.append(")")
    text = "".join(spelled)
    out.append(text)
    if not mutable:
        if len(_SPELLED) >= SPELLED_MAX:
            _SPELLED.clear()
        _SPELLED[id(value)] = (value, text)
    return mutable


_FIELDS: dict[type, tuple[str, ...]] = {}


def vetted_fields(kind: type) -> tuple[str, ...]:
    """A vetted dataclass's field names; it must be frozen and show every field."""
    names = _FIELDS.get(kind)
    if names is None:
        params = getattr(kind, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise Unvetted(f"{kind.__qualname__} is no frozen dataclass")
        fields = dataclasses.fields(kind)
        if not all(f.repr for f in fields):
            raise Unvetted(f"{kind.__qualname__} hides a field (repr=False)")
        names = _FIELDS[kind] = tuple(f.name for f in fields)
    return names


class RenderCache:
    """One run's view of the cache file: what it held for this build, what the run used and
    added. `save` writes it back when something changed."""

    def __init__(self, path: str, build: str, today: int | None = None) -> None:
        self.path = path
        self.stamp = (FORMAT, build, sys.hexversion)
        self.today = int(time.time() // 86400) if today is None else today
        self.entries: dict[str, list] = {}  # key -> [rendered bytes, day last used, template]
        self.changed = False
        self.used: set[str] = set()  # keys this run rendered or found
        self.templates: set[str] = set()  # templates this run rendered or found

    def load(self) -> RenderCache:
        self.entries = read(self.path, self.stamp)
        return self

    def get(self, digest: str, template: str = "") -> bytes | None:
        entry = self.entries.get(digest)
        if entry is None:
            return None
        self.used.add(digest)
        self.templates.add(template)
        if entry[1] != self.today:
            entry[1] = self.today
            self.changed = True
        return entry[0]

    def put(self, digest: str, content: bytes, template: str = "") -> None:
        self.entries[digest] = [content, self.today, template]
        self.used.add(digest)
        self.templates.add(template)
        self.changed = True

    def drop_superseded(self) -> None:
        """The entries of the secret templates this run rendered that it did not use."""
        rendered = SECRET_TEMPLATES & self.templates
        stale = [k for k, e in self.entries.items() if e[2] in rendered and k not in self.used]
        for digest in stale:
            del self.entries[digest]
        self.changed |= bool(stale)

    def save(self) -> None:
        self.drop_superseded()
        if self.changed:
            write(self.path, self.stamp, bounded(self.entries, self.today))
            self.changed = False


def bounded(entries: dict[str, list], today: int) -> dict[str, list]:
    """Without entries unused for KEEP_DAYS, and at most MAX_ENTRIES, the most recent."""
    kept = {k: e for k, e in entries.items() if today - e[1] < KEEP_DAYS}
    if len(kept) > MAX_ENTRIES:
        recent = sorted(kept, key=lambda k: kept[k][1], reverse=True)[:MAX_ENTRIES]
        kept = {k: kept[k] for k in recent}
    return kept


def read(path: str, stamp: tuple) -> dict[str, list]:
    """The file's entries when it is this build's, root's and well-formed; else none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return {}
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = marshal.loads(f.read())
    except Exception:  # any damage to the file is only a cold cache
        return {}
    finally:
        os.close(fd)
    if type(data) is not tuple or len(data) != 2 or data[0] != stamp or type(data[1]) is not dict:
        return {}
    entries = {}
    for digest, entry in data[1].items():
        if (type(digest) is str and type(entry) is list and len(entry) == 3
                and type(entry[0]) is bytes and type(entry[1]) is int
                and type(entry[2]) is str):
            entries[digest] = entry
    return entries


def write(path: str, stamp: tuple, entries: dict[str, list]) -> None:
    """Replace the file atomically (a new 0600 file renamed over it), in its 0700 directory,
    made here when missing: never in a directory that is not root's alone. The directory
    above it is the apps' build cache root, which the apply makes: without it, no cache yet.
    Failing to write only costs the next run its speed."""
    directory = os.path.dirname(path)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return
        temp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(marshal.dumps((stamp, entries)))
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(f"{path}.{os.getpid()}.tmp")


def build_id() -> str | None:
    """The id build.py baked into this build (fleet/_build_id.txt), None in a checkout: read
    as a file, as the zipapp runs from its extraction (fleet.version reads it through
    importlib.resources, which the apply path does not otherwise import)."""
    try:
        text = (Path(__file__).parents[1] / "_build_id.txt").read_text("ascii").strip()
    except OSError:
        return None
    return text or None


class PerProcess(Generic[T]):
    """A cache's one instance in this process: made by `make` on first use (None: no cache
    here, a source checkout or not root), written back by `save` at the end of the run."""

    def __init__(self, make: Callable[[], T | None]) -> None:
        self.make = make
        self.slot: list[T | None] = []  # empty: not decided yet
        self.lock = threading.Lock()  # the first use may come from several threads

    def current(self) -> T | None:
        if not self.slot:
            with self.lock:
                if not self.slot:
                    self.slot.append(self.make())
        return self.slot[0]

    def use(self, value: T | None) -> None:
        """Make `value` this process's (tests; None: no cache)."""
        self.slot[:] = [value]

    def forget(self) -> None:
        """Decide again on next use (tests)."""
        self.slot.clear()


def start() -> RenderCache | None:
    build = build_id()
    if build is None or os.geteuid() != 0:
        return None
    return RenderCache(layout.RENDER_CACHE, build).load()


PROCESS: PerProcess[RenderCache] = PerProcess(start)
current = PROCESS.current
use = PROCESS.use


def save() -> None:
    """Write this process's cache back if it rendered anything new (the end of a run: the
    command line calls it, fleet.cli.dispatch)."""
    cache = PROCESS.slot[0] if PROCESS.slot else None
    if cache is not None:
        cache.save()

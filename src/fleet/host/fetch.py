"""Download one pinned wheel from a package index and unpack one file of it, in fleet's own
process: what installing uv needs, without running pip (or anything else) as root.

Why not pip: pip spent 1.8-2.0 s of CPU on this (parsing PyPI's 2 MB page for uv, then
hashing and unpacking every member), the one cost a cold uv apply had that pip builds did
not (bench/README.md "Where a cold uv apply's time goes"). Here the index is asked for the
pinned file by its exact name (PEP 691 JSON, else PEP 503 HTML), the file is streamed to a
root-only directory under a size cap and a deadline while its sha256 is computed, and only
when the digest matches the pin is the zip opened, to copy out the single member asked for
by its exact name: no member path is ever used as a path, no other member is written.

Credentials in an index URL go in an Authorization header, sent only to that index's own
scheme://host:port and never across a redirect; every message masks them (mask_urls).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import ssl
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

from fleet.errors import FleetError
from fleet.masking import mask_urls, split_credentials

ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
INDEX_CAP = 64 * 1024 * 1024  # PyPI's page for uv: 2.6 MB of JSON
WHEEL_CAP = 200 * 1024 * 1024  # uv's wheel: about 20 MB
CHUNK = 1024 * 1024


class FetchError(FleetError):
    """The wheel could not be found, downloaded, verified or unpacked; the text is masked."""

    def __init__(self, text: str) -> None:
        super().__init__(mask_urls(text))


@dataclass(frozen=True)
class Index:
    """An index URL without its credentials (`url`, safe to show) and the header they make."""

    url: str
    authorization: str = ""

    @classmethod
    def parse(cls, url: str) -> Index:
        split = split_credentials(url)
        if not split.has_credentials:
            return cls(url)
        token = base64.b64encode(f"{split.username}:{split.password}".encode()).decode()
        return cls(split.url, f"Basic {token}")


def fetch_wheel(indexes: tuple[str, ...], project: str, filename: str, sha256: str,
                member: str, dest: str, tmp: str, *, cert: str | None = None,
                timeout: float = 600, cap: int = WHEEL_CAP) -> None:
    """Find `filename` of `project` on the first of `indexes` that lists it, download it into
    `tmp` (an existing root-only directory), check its sha256 against the pin and write its
    `member` to `dest` (mode 0755). Raises FetchError; the download never outlives the call."""
    context = ssl.create_default_context(cafile=cert) if cert else ssl.create_default_context()
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    deadline = time.monotonic() + timeout
    url, index = find_file(opener, [Index.parse(i) for i in indexes], project, filename,
                           deadline)
    wheel = os.path.join(tmp, filename)
    try:
        digest = download(opener, url, index, wheel, deadline, cap)
        if digest != sha256:
            raise FetchError(f"{url}: sha256 {digest} is not the pinned {sha256}")
        unpack_member(wheel, member, dest, cap)
    finally:
        if os.path.lexists(wheel):
            os.unlink(wheel)


def find_file(opener: urllib.request.OpenerDirector, indexes: list[Index], project: str,
              filename: str, deadline: float) -> tuple[str, Index]:
    """The file's URL (absolute, no #fragment) on the first index that lists it."""
    misses = []
    for index in indexes:
        page = urljoin(index.url.rstrip("/") + "/", f"{project}/")
        try:
            body, content_type = get(opener, page, index, deadline, INDEX_CAP)
        except FetchError as exc:
            misses.append(str(exc))
            continue
        links = json_links(body) if content_type == JSON_TYPE else html_links(body)
        if filename in links:
            return urldefrag(urljoin(page, links[filename]))[0], index
        misses.append(f"{page}: {filename} not listed")
    raise FetchError("; ".join(misses) or "no package index")


def request(url: str, index: Index, accept: str = "") -> urllib.request.Request:
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    if index.authorization and origin(url) == origin(index.url):
        # unredirected: urllib would copy a plain header to wherever a redirect points
        req.add_unredirected_header("Authorization", index.authorization)
    return req


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def get(opener: urllib.request.OpenerDirector, url: str, index: Index, deadline: float,
        cap: int) -> tuple[bytes, str]:
    """An index page, whole: (body, its media type)."""
    chunks: list[bytes] = []
    with open_url(opener, request(url, index, ACCEPT), url, deadline) as response:
        content_type = response.headers.get_content_type()
        read_capped(response, url, deadline, cap, chunks.append)
    return b"".join(chunks), content_type


def open_url(opener: urllib.request.OpenerDirector, req: urllib.request.Request, url: str,
             deadline: float) -> http.client.HTTPResponse:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"{url}: timed out")
    try:
        return opener.open(req, timeout=min(left, 60))
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: {reason}") from None


def read_capped(response: http.client.HTTPResponse, url: str, deadline: float, cap: int,
                sink: Callable[[bytes], None]) -> int:
    """Read the whole body into `sink` in chunks: over `cap` bytes, past the deadline, or
    shorter than its Content-Length is an error naming the URL."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length and length.isdigit() else None
    if expected is not None and expected > cap:
        raise FetchError(f"{url}: {expected} bytes, over the cap of {cap}")
    total = 0
    try:
        while chunk := response.read(CHUNK):
            total += len(chunk)
            if total > cap:
                raise FetchError(f"{url}: over the cap of {cap} bytes")
            if time.monotonic() > deadline:
                raise FetchError(f"{url}: timed out")
            sink(chunk)
    except http.client.HTTPException as exc:  # IncompleteRead: a body cut short
        raise FetchError(f"{url}: truncated ({type(exc).__name__})") from None
    except (OSError, ValueError) as exc:
        raise FetchError(f"{url}: {exc}") from None
    if expected is not None and total != expected:
        raise FetchError(f"{url}: truncated ({total} of {expected} bytes)")
    return total


def download(opener: urllib.request.OpenerDirector, url: str, index: Index, path: str,
             deadline: float, cap: int) -> str:
    """Stream `url` into a new file at `path` (0600); its sha256."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, open_url(opener, request(url, index), url,
                                              deadline) as response:

        def sink(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        read_capped(response, url, deadline, cap, sink)
    return digest.hexdigest()


def unpack_member(wheel: str, member: str, dest: str, cap: int) -> None:
    """Copy exactly `member` of the zip to `dest` (mode 0755), its parents made 0755. Only
    that name is looked up: the archive's other entries, whatever their paths, are never
    written."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise FetchError(f"{os.path.basename(wheel)} has no {member}") from None
            if info.file_size > cap:
                raise FetchError(f"{member}: {info.file_size} bytes, over the cap of {cap}")
            make_dirs(os.path.dirname(dest))
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(info) as source:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                    os.fchmod(out.fileno(), 0o755)
            except BaseException:
                os.unlink(dest)
                raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise FetchError(f"{os.path.basename(wheel)}: {exc}") from None


def make_dirs(path: str) -> None:
    """mkdir -p with 0755 whatever the umask: the binary's directories are read by every app
    user."""
    if os.path.isdir(path):
        return
    make_dirs(os.path.dirname(path))
    os.mkdir(path)
    os.chmod(path, 0o755)


def json_links(body: bytes) -> dict[str, str]:
    """PEP 691: {filename: url} of the project's files."""
    try:
        files = json.loads(body).get("files", [])
        return {f["filename"]: f["url"] for f in files
                if isinstance(f, dict) and isinstance(f.get("filename"), str)
                and isinstance(f.get("url"), str)}
    except (ValueError, AttributeError):
        return {}


def html_links(body: bytes) -> dict[str, str]:
    """PEP 503: {anchor text: href} of the page's anchors."""
    parser = _Anchors()
    parser.feed(body.decode("utf-8", errors="replace"))
    parser.close()
    return parser.links


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.setdefault("".join(self._text).strip(), self._href)
            self._href = None

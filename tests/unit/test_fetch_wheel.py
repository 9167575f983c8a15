"""fleet's own download of uv's wheel (fleet.host.fetch, the FetchWheel action): against a
real local index over HTTP(S) on 127.0.0.1 serving a wheel built here, so the lookup (PEP 691
JSON, PEP 503 HTML, relative URLs, extra indexes), the credentials, the digest, the size cap
and the unpacking of one member are the real code's, not a stand-in's."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fleet.host.actions import FetchWheel
from fleet.host.executor import perform
from fleet.host.fetch import JSON_TYPE, FetchError, fetch_wheel
from fleet.host.machine import LocalHost

NAME = "uv-0.13.9-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
MEMBER = "uv-0.13.9.data/scripts/uv"
BINARY = b"\x7fELF not really uv\n" * 100


def wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


GOOD = wheel({"uv/__init__.py": b"raise SystemExit('never run')\n", MEMBER: BINARY,
              "uv-0.13.9.data/scripts/uvx": b"uvx", "uv-0.13.9.dist-info/RECORD": b""})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Route:
    body: bytes
    content_type: str = "application/octet-stream"
    status: int = 200
    length: int | None = None  # Content-Length to claim; None: the body's; -1: no header


@dataclass
class Index:
    """A tiny package index: path -> Route; every request's path and headers recorded."""

    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def json_page(self, project_path: str, files: dict[str, str]) -> None:
        import json

        body = json.dumps({"meta": {"api-version": "1.0"}, "name": "uv", "files": [
            {"filename": n, "url": u, "hashes": {}} for n, u in files.items()]})
        self.routes[project_path] = Route(body.encode(), JSON_TYPE)

    def html_page(self, project_path: str, files: dict[str, str]) -> None:
        anchors = "".join(f'<a href="{u}" data-requires-python="&gt;=3.8">{n}</a><br/>\n'
                          for n, u in files.items())
        self.routes[project_path] = Route(
            f"<!DOCTYPE html><html><body><h1>uv</h1>{anchors}</body></html>".encode(),
            "text/html")


def serve(index: Index, context: ssl.SSLContext | None = None) -> Iterator[Index]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            index.seen.append((self.path, dict(self.headers)))
            route = index.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.length != -1:  # -1: none, the body ends when the connection closes
                self.send_header("Content-Length", str(route.length if route.length is not None
                                                       else len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    index.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def index() -> Iterator[Index]:
    yield from serve(Index())


@pytest.fixture
def extra() -> Iterator[Index]:
    yield from serve(Index())


@dataclass
class Place:
    tmp: Path
    dest: Path

    def fetch(self, indexes: tuple[str, ...], digest: str = sha(GOOD), **kwargs: object
              ) -> None:
        fetch_wheel(indexes, "uv", NAME, digest, MEMBER, str(self.dest), str(self.tmp),
                    **kwargs)  # type: ignore[arg-type]

    def files(self) -> list[str]:
        """Every entry under the temp dir's parent: what the fetch left."""
        return sorted(str(p.relative_to(self.tmp.parent)) for p in self.tmp.parent.rglob("*"))


@pytest.fixture
def place(tmp_path: Path) -> Place:
    tmp = tmp_path / "root" / ".uv.tmp"
    tmp.mkdir(parents=True, mode=0o700)
    return Place(tmp, tmp / "wheel" / "bin" / "uv")


def installed(place: Place) -> bool:
    assert place.files() == [".uv.tmp", ".uv.tmp/wheel", ".uv.tmp/wheel/bin",
                             ".uv.tmp/wheel/bin/uv"]  # the download is gone, nothing else
    assert place.dest.read_bytes() == BINARY
    return (place.dest.stat().st_mode & 0o7777) == 0o755


def test_a_json_index_with_a_relative_url_and_a_fragment(index: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {"other.whl": "/nope", NAME: f"../../files/{NAME}#sha256=x"})
    index.routes[f"/files/{NAME}"] = Route(GOOD)
    place.fetch((f"{index.url}/simple",))
    assert installed(place)
    (page, headers), (path, _) = index.seen
    assert page == "/simple/uv/" and path == f"/files/{NAME}"  # no fragment sent
    assert headers["Accept"] == "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    assert "Authorization" not in headers


def test_an_html_index(index: Index, place: Place) -> None:
    index.html_page("/pypi/uv/", {NAME: f"{NAME}#sha256={sha(GOOD)}", "uv.tar.gz": "x"})
    index.routes[f"/pypi/uv/{NAME}"] = Route(GOOD)
    place.fetch((f"{index.url}/pypi/",))
    assert installed(place)


def test_an_extra_index_holds_the_file_when_the_index_does_not(
        index: Index, extra: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {"uv-0.1.0.whl": "/x"})  # listed, not our file
    extra.html_page("/simple/uv/", {NAME: f"{extra.url}/f/{NAME}"})  # absolute URL
    extra.routes[f"/f/{NAME}"] = Route(GOOD)
    place.fetch((f"{index.url}/none/", f"{index.url}/simple", f"{extra.url}/simple"))
    assert installed(place)
    assert [p for p, _ in index.seen] == ["/none/uv/", "/simple/uv/"]


def test_no_index_lists_the_file_names_each_and_why(index: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {})
    with pytest.raises(FetchError) as caught:
        place.fetch((f"{index.url}/simple", f"{index.url}/gone"))
    assert f"{index.url}/simple/uv/: {NAME} not listed" in str(caught.value)
    assert f"{index.url}/gone/uv/: HTTP 404" in str(caught.value)
    assert place.files() == [".uv.tmp"]


def test_credentials_go_in_a_header_to_the_index_only_and_are_masked(
        index: Index, extra: Index, place: Place) -> None:
    """The same index's files get the header; another host (files.pythonhosted.org for
    PyPI) never does. No message names the password."""
    secret = f"http://user:s3cret@{index.url.removeprefix('http://')}/simple"
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(GOOD)
    place.fetch((secret,))
    basic = "Basic " + base64.b64encode(b"user:s3cret").decode()
    assert [h.get("Authorization") for _, h in index.seen] == [basic, basic]
    assert "s3cret" not in index.seen[0][0]

    place.dest.unlink()
    index.seen.clear()
    index.json_page("/simple/uv/", {NAME: f"{extra.url}/f/{NAME}"})
    extra.routes[f"/f/{NAME}"] = Route(GOOD + b"x")  # and a digest mismatch
    with pytest.raises(FetchError) as caught:
        place.fetch((secret,))
    assert [h.get("Authorization") for _, h in index.seen] == [basic]
    assert [h.get("Authorization") for _, h in extra.seen] == [None]
    assert "s3cret" not in str(caught.value)


def test_a_digest_mismatch_installs_nothing_and_names_both_digests(
        index: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(GOOD)
    pinned = "0" * 64
    with pytest.raises(FetchError) as caught:
        place.fetch((f"{index.url}/simple",), digest=pinned)
    text = str(caught.value)
    assert f"{index.url}/f/{NAME}" in text and sha(GOOD) in text and pinned in text
    assert place.files() == [".uv.tmp"]  # the download removed, nothing unpacked


def test_a_credential_in_an_error_is_masked_in_the_message(index: Index, place: Place) -> None:
    """The index's URL is shown without its credentials; a file URL the index lists with
    some in it is masked."""
    hostport = index.url.removeprefix("http://")
    with pytest.raises(FetchError) as caught:
        place.fetch((f"http://tok:s3cret@{hostport}/simple",))
    assert str(caught.value) == f"{index.url}/simple/uv/: HTTP 404"
    index.json_page("/simple/uv/", {NAME: f"http://tok:s3cret@{hostport}/gone"})
    with pytest.raises(FetchError) as caught:
        place.fetch((f"{index.url}/simple",))
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith(f"http://********@{hostport}/gone: ")
    assert place.files() == [".uv.tmp"]


def test_a_truncated_body_is_an_error(index: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(GOOD[:100], length=len(GOOD))
    with pytest.raises(FetchError, match="truncated"):
        place.fetch((f"{index.url}/simple",))
    assert place.files() == [".uv.tmp"]


def test_the_size_cap(index: Index, place: Place) -> None:
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(GOOD)
    with pytest.raises(FetchError, match="over the cap of 1000"):
        place.fetch((f"{index.url}/simple",), cap=1000)
    assert place.files() == [".uv.tmp"]
    index.routes[f"/f/{NAME}"] = Route(GOOD, length=-1)  # no length: counted while read
    with pytest.raises(FetchError, match="over the cap of 1000 bytes"):
        place.fetch((f"{index.url}/simple",), cap=1000)
    assert place.files() == [".uv.tmp"]
    place.fetch((f"{index.url}/simple",))  # without a length, under the cap: whole
    assert installed(place)


def test_a_wheel_without_the_binary(index: Index, place: Place) -> None:
    other = wheel({"uv/__init__.py": b"", "uv-0.13.9.data/scripts/uvx": b"uvx"})
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(other)
    with pytest.raises(FetchError, match=f"{NAME} has no {MEMBER}"):
        place.fetch((f"{index.url}/simple",), digest=sha(other))
    assert place.files() == [".uv.tmp"]


def test_a_hostile_wheel_writes_only_the_named_member(index: Index, place: Place) -> None:
    hostile = wheel({"../x": b"escaped", "../../x": b"escaped",
                     str(place.tmp.parent / "abs"): b"absolute", "/etc/evil": b"absolute",
                     "uv-0.13.9.data/scripts/../../../y": b"escaped", MEMBER: BINARY,
                     "uv-0.13.9.data/scripts/uv/../../../../z": b"escaped"})
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(hostile)
    place.fetch((f"{index.url}/simple",), digest=sha(hostile))
    assert installed(place)
    root = place.tmp.parent.parent
    assert sorted(p.name for p in root.iterdir()) == ["root"]  # nothing beside the tree
    assert not Path("/etc/evil").exists()


def test_the_action_through_the_executor_logs_no_credentials(
        index: Index, place: Place) -> None:
    """FetchWheel as apply performs it: LocalHost runs the download in-process and logs it
    like a command, masked."""
    index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
    index.routes[f"/f/{NAME}"] = Route(GOOD)
    logged: list[list[str]] = []
    url = f"http://u:s3cret@{index.url.removeprefix('http://')}/simple"
    action = FetchWheel(project="uv", version="0.13.9", filename=NAME, sha256=sha(GOOD),
                        member=MEMBER, dest=str(place.dest), tmp=str(place.tmp), indexes=(url,))
    perform(LocalHost(logged.append), action)
    assert installed(place)
    assert len(logged) == 1 and logged[0][0] == "fetch-wheel"
    assert "s3cret" not in " ".join(logged[0]) and "s3cret" not in action.describe()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_trusts_the_cert_setting_and_refuses_an_unknown_ca(
        certificate: tuple[Path, Path], place: Place) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for index in serve(Index(), context):
        index.json_page("/simple/uv/", {NAME: f"/f/{NAME}"})
        index.routes[f"/f/{NAME}"] = Route(GOOD)
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            place.fetch((f"{index.url}/simple",))  # the system's trust: not this CA
        place.fetch((f"{index.url}/simple",), cert=str(cert))
        assert installed(place)
        assert os.path.basename(str(place.dest)) == "uv"

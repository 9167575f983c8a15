"""The kept compiled methods of dataclasses (fleet.codecache): each process here is a real
Python start, as a run of the zipapp is, with the cache in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet import codecache

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the cache is written by root only")

# A fresh Python: install the cache, make dataclasses as fleet's modules do, use them, and
# say what it compiled. __future__ annotations here, as in every fleet module.
INSTALL = ('cache = codecache.install("b1d", sys.argv[1])\nloaded = len(cache.codes)\n'
           "import atexit\natexit.register(codecache.save)")  # as the command line's end
PROGRAM = """
from __future__ import annotations
import dataclasses, inspect, json, sys
from fleet import codecache
INSTALL

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()

@dataclasses.dataclass
class Box:
    items: list[Point] = dataclasses.field(default_factory=list)

p = Point(1, tags=("a",))
try:
    p.x = 5
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
box = Box()
box.items.append(p)
print(json.dumps({
    "loaded": loaded,
    "added": cache.added, "repr": repr(p), "eq": p == Point(1, 2, ("a",)),
    "hash": hash(p) == hash(Point(1, 2, ("a",))), "frozen": frozen, "box": repr(box),
    "annotation": repr(inspect.signature(Point.__init__).return_annotation),
    "init_annotations": {k: repr(v) for k, v in Point.__init__.__annotations__.items()},
}))
"""


def start(directory: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", PROGRAM.replace("INSTALL", INSTALL),
                             str(directory)],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(Path(codecache.__file__)
                                                                 .parents[1])})
    return json.loads(result.stdout)


def without_cache() -> dict:
    """The same program with dataclasses as Python ships them."""
    program = PROGRAM.replace("INSTALL", "class cache: codes = {}; added = False\nloaded = 0")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONPATH": str(
                                Path(codecache.__file__).parents[1])})
    return json.loads(result.stdout)


@ROOT_ONLY
def test_the_second_start_compiles_nothing_and_behaves_as_python_does(tmp_path: Path) -> None:
    directory = tmp_path / "code"
    first = start(directory)
    assert first["added"] is True
    files = list(directory.iterdir())
    assert len(files) == 1 and files[0].stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    second = start(directory)
    assert second["added"] is False and second["loaded"] > 0
    plain = without_cache()
    for run in (first, second):
        assert {k: v for k, v in run.items() if k not in ("added", "loaded")} == \
               {k: v for k, v in plain.items() if k not in ("added", "loaded")}
    # compiled without this module's __future__ flags: annotations are objects, as in Python
    assert second["annotation"] == "None" and second["init_annotations"]["x"] == "'int'"


@ROOT_ONLY
@pytest.mark.parametrize("spoil", ["writable", "corrupt", "foreign", "other-owner"])
def test_a_file_that_is_not_trusted_or_not_this_builds_is_ignored_and_replaced(
        tmp_path: Path, spoil: str) -> None:
    directory = tmp_path / "code"
    start(directory)
    (path,) = directory.iterdir()
    if spoil == "writable":
        path.chmod(0o666)
    elif spoil == "corrupt":
        path.write_bytes(path.read_bytes()[:100])
    elif spoil == "foreign":
        cache = codecache.CodeCache(str(path), "another build")
        cache.codes = {"x": compile("x = 1", "<string>", "exec")}
        cache.added = True
        path.unlink()
        cache.save()
    else:
        os.chown(path, 65534, 65534)
    run = start(directory)
    assert run["added"] is True and run["loaded"] == 0  # compiled as Python would
    assert run["eq"] and run["frozen"]
    (path,) = directory.iterdir()  # written anew, root's, trusted
    assert path.stat().st_uid == 0 and path.stat().st_mode & 0o777 == 0o600
    assert start(directory)["added"] is False


@ROOT_ONLY
def test_files_of_other_builds_are_removed_when_it_writes(tmp_path: Path) -> None:
    directory = tmp_path / "code"
    directory.mkdir(mode=0o700)
    (directory / "0123456789ab-cpython-311.marshal").write_bytes(b"old build")
    start(directory)
    assert [p.name for p in directory.iterdir()] == [
        f"b1d-{sys.implementation.cache_tag}.marshal"]


def test_a_source_checkout_uses_no_cache() -> None:
    """Only the zipapp carries fleet/_build_id.txt; here dataclasses' exec is Python's."""
    import dataclasses

    assert not Path(codecache.__file__).with_name("_build_id.txt").exists()
    assert "exec" not in vars(dataclasses)


def test_the_command_line_saves_it_at_the_end_unless_the_input_was_bad(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fleet.cli import dispatch

    saves: list[str] = []

    class Recorded:
        def save(self) -> None:
            saves.append("saved")

    monkeypatch.setattr(codecache, "INSTALLED", [Recorded()])
    assert dispatch.run(["apply", "/nonexistent/fleet.toml"]) == 2
    assert saves == []  # bad input touches nothing, this cache neither
    assert dispatch.run(["init", "-"]) == 0
    assert saves == ["saved"]
    capsys.readouterr()

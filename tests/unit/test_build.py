"""build.py: the pyz is reproducible, pure Python, resolved for 3.10 and runs.

Builds into temporary directories through `build.py --out`, so dist/ is left alone; the pyz
extracts into a temporary SHIV_ROOT, never /var/lib/fleet/shiv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_PY = ROOT / "build.py"


@dataclass(frozen=True)
class Built:
    """One build's output and what build.py printed about it."""

    pyz: Path
    build_id: str
    stdout: str


def run_build(out: Path) -> Built:
    """Run build.py --out OUT and return what it built."""
    proc = subprocess.run(
        [sys.executable, str(BUILD_PY), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, f"build.py failed:\n{proc.stdout}\n{proc.stderr}"
    match = re.search(r"^build id: ([0-9a-f]+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    return Built(out, match.group(1), proc.stdout)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Built, Built]:
    """Two builds of the same sources, into different directories."""
    out = tmp_path_factory.mktemp("dist")
    return run_build(out / "a" / "fleet.pyz"), run_build(out / "b" / "fleet.pyz")


@pytest.fixture(scope="module")
def built(builds: tuple[Built, Built]) -> Built:
    return builds[0]


@pytest.fixture(scope="module")
def names(built: Built) -> list[str]:
    with zipfile.ZipFile(built.pyz) as zf:
        return zf.namelist()


@pytest.fixture(scope="module")
def build_module() -> ModuleType:
    """build.py imported as a module, for its pure functions."""
    spec = importlib.util.spec_from_file_location("fleet_build", BUILD_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fleet_version() -> str:
    text = (ROOT / "src" / "fleet" / "__init__.py").read_text()
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    assert match, "no __version__ in src/fleet/__init__.py"
    return match.group(1)


def run_pyz(pyz: Path, shiv_root: Path, *args: str, python: str = sys.executable, **env: str):
    """Run the pyz with its extraction root under tmp and a HOME nobody can write."""
    environ = dict(os.environ, SHIV_ROOT=str(shiv_root), HOME="/nonexistent", **env)
    return subprocess.run(
        [python, str(pyz), *args], env=environ, capture_output=True, text=True, timeout=120
    )


def test_same_sources_give_the_same_bytes(builds: tuple[Built, Built]) -> None:
    first, second = builds
    assert first.build_id == second.build_id
    assert first.pyz.read_bytes() == second.pyz.read_bytes()


def test_prints_path_size_and_build_id(built: Built) -> None:
    assert str(built.pyz) in built.stdout
    assert re.search(r"^size: \d+ KiB$", built.stdout, re.MULTILINE)
    assert re.fullmatch(r"[0-9a-f]{12}", built.build_id)


def test_zipapp_header_and_shiv_environment(built: Built) -> None:
    assert built.pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(built.pyz, os.X_OK)
    with zipfile.ZipFile(built.pyz) as zf:
        env = json.loads(zf.read("environment.json"))
        baked_id = zf.read("site-packages/fleet/_build_id.txt").decode()
    assert env["build_id"] == built.build_id == baked_id
    assert env["root"] == "/var/lib/fleet/shiv"
    assert env["entry_point"] == "fleet.cli.app:main"
    assert env["reproducible"] is True
    assert env["preamble"] == "fleet_preamble.py"
    assert env["compile_pyc"] is True


def test_pure_python_and_resolved_for_python_310(names: list[str]) -> None:
    assert [n for n in names if n.endswith((".so", ".pyd"))] == []
    # tomli is required only below 3.11: present only if markers were judged for 3.10.
    assert any(n.startswith("site-packages/tomli/") for n in names)
    for package in ("typer", "jinja2", "markupsafe", "rich", "virtualenv"):
        assert any(n.startswith(f"site-packages/{package}/") for n in names), package
    assert not any(n.startswith("site-packages/pydantic") for n in names)
    # No console-script shims: their shebang would name the build machine's venv.
    shims = [n for n in names if n.startswith("site-packages/bin/")]
    assert shims == ["site-packages/bin/fleet_preamble.py"]


def test_templates_and_units_are_packaged(names: list[str]) -> None:
    for top, packaged in (("templates", "templates"), ("systemd", "systemd")):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file():
                rel = path.relative_to(ROOT / top).as_posix()
                assert f"site-packages/fleet/_data/{packaged}/{rel}" in names


def test_templates_are_packaged_compiled(names: list[str]) -> None:
    """Each template also as the module jinja2's ModuleLoader imports (fleet.host.render)."""
    import jinja2

    for top, prefix in (("templates", ""), ("systemd", "systemd/")):
        for path in sorted((ROOT / top).glob("*.j2" if top == "templates" else "*")):
            module = jinja2.ModuleLoader.get_module_filename(prefix + path.name)
            assert f"site-packages/fleet/_data/compiled/{module}" in names, path


def test_version_prints_version_and_build_id(built: Built, tmp_path: Path) -> None:
    proc = run_pyz(built.pyz, tmp_path / "shiv", "--version")
    assert proc.returncode == 0, proc.stderr
    assert fleet_version() in proc.stdout
    assert built.build_id in proc.stdout
    assert (tmp_path / "shiv" / f"fleet.pyz_{built.build_id}" / "site-packages").is_dir()


def test_extraction_is_compiled_once_and_never_written_again(built: Built,
                                                              tmp_path: Path) -> None:
    root = tmp_path / "shiv"
    assert run_pyz(built.pyz, root, "--version").returncode == 0
    site = root / f"fleet.pyz_{built.build_id}" / "site-packages"
    tag = sys.implementation.cache_tag
    for module in ("fleet/cli/app", "fleet/cli/dispatch", "typer/main", "jinja2/environment"):
        path = site / module
        assert (path.parent / "__pycache__" / f"{path.name}.{tag}.pyc").is_file(), module
    # Bytecode that goes missing is not written back, however much a command imports.
    removed = site / "fleet" / "cli" / "__pycache__" / f"inspect.{tag}.pyc"
    removed.unlink()
    before = sorted((p, p.stat().st_mtime_ns) for p in site.rglob("*"))
    proc = run_pyz(built.pyz, root, "status", "--help")
    assert proc.returncode == 0, proc.stderr
    assert sorted((p, p.stat().st_mtime_ns) for p in site.rglob("*")) == before


def imported(proc: subprocess.CompletedProcess) -> set[str]:
    """The modules a run imported (PYTHONPROFILEIMPORTTIME=1 lists them on stderr)."""
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_an_extracted_build_starts_without_shivs_bootstrap(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "shiv"
    first = run_pyz(built.pyz, root, "--version", PYTHONPROFILEIMPORTTIME="1")
    again = run_pyz(built.pyz, root, "--version", PYTHONPROFILEIMPORTTIME="1")
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout == again.stdout and built.build_id in again.stdout
    # The first run extracts through shiv's bootstrap; the next starts from the extraction.
    assert {"_bootstrap", "compileall"} <= imported(first)
    assert not {"_bootstrap", "compileall", "hashlib"} & imported(again)
    # shiv's switches still go to shiv: SHIV_INTERPRETER gives its interpreter.
    proc = run_pyz(built.pyz, root, "-c", "import fleet; print(fleet.__file__)",
                   SHIV_INTERPRETER="1", PYTHONPROFILEIMPORTTIME="1")
    assert proc.returncode == 0 and str(root) in proc.stdout, proc.stderr
    assert "_bootstrap" in imported(proc)


@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="no system python3")
def test_runs_on_the_system_python(built: Built, tmp_path: Path) -> None:
    code = "import fleet, jinja2, rich, typer, virtualenv; print(fleet.__file__)"
    proc = run_pyz(built.pyz, tmp_path, "-c", code, python="/usr/bin/python3", SHIV_INTERPRETER="1")
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path) in proc.stdout


def test_preamble_removes_other_builds_only(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "shiv"
    old, old_tmp = "fleet.pyz_0123456789ab", "fleet.pyz_aaaaaaaaaaaa.tmp"
    old_lock = ".fleet.pyz_0123456789ab_lock"
    recent, other_app, unrelated = "fleet.pyz_bbbbbbbbbbbb", "other.pyz_0123456789ab", "notes"
    for name in (old, old_tmp, recent, other_app):
        (root / name / "site-packages").mkdir(parents=True)
    for name in (old_lock, unrelated):
        (root / name).touch()
    hours_ago = time.time() - 7200
    for name in (old, old_tmp, old_lock, other_app, unrelated):
        os.utime(root / name, (hours_ago, hours_ago))

    proc = run_pyz(built.pyz, root, "-c", "print('ran')", SHIV_INTERPRETER="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ran"
    left = sorted(p.name for p in root.iterdir())
    current = f"fleet.pyz_{built.build_id}"
    assert left == sorted([current, f".{current}_lock", recent, other_app, unrelated])


def test_build_id_follows_every_source_file(
    build_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "repo"
    for name in build_module.SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, copy / name)
    monkeypatch.setattr(build_module, "ROOT", copy)
    wheels = ["typer-0.28.0-py3-none-any.whl"]
    base = build_module.compute_build_id(wheels)
    assert re.fullmatch(r"[0-9a-f]{12}", base)
    assert build_module.compute_build_id(wheels) == base
    (copy / "src" / "fleet" / "__pycache__").mkdir(exist_ok=True)
    (copy / "src" / "fleet" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert build_module.compute_build_id(wheels) == base  # bytecode is not source
    assert build_module.compute_build_id(["typer-0.27.0-py3-none-any.whl"]) != base
    init = copy / "src" / "fleet" / "__init__.py"
    init.write_text(init.read_text() + "# changed\n")
    assert build_module.compute_build_id(wheels) != base


def test_failure_is_one_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [sys.executable, str(BUILD_PY), "--out", str(blocker / "fleet.pyz")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("build.py: error: ")
    assert "Traceback" not in proc.stderr

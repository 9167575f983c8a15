#!/usr/bin/env python3
"""Build dist/fleet.pyz: one self-contained shiv zipapp that runs on any Python >= 3.10.

Run from anywhere as `python3 build.py [--out PATH]` (Python 3.10+).

Why each step is the way it is:

1. A throwaway venv (build/venv) holds pinned shiv and hatchling, so the build needs nothing
   from the running Python but `venv` and the pyz does not change when their latest versions do.
2. Dependencies are resolved for the OLDEST supported Python (3.10): a pyz resolved on 3.11
   can carry wheels too new for 3.10 and lacks 3.10-only deps such as tomli. pip's
   `--python-version` only filters wheels and Requires-Python; it evaluates markers like
   `python_version < "3.11"` against the interpreter running pip, so build.py evaluates
   them for 3.10 itself and names the matching requirements explicitly.
3. The pyz must be pure Python: any compiled module would tie it to one CPython version and
   one CPU. MarkupSafe's optional speedups are dropped (it falls back to pure Python); any
   other compiled file fails the build (see BUILD_CONSTRAINTS).
4. Reproducible: SOURCE_DATE_EPOCH (default: a constant), `shiv --reproducible`, a fixed
   umask, no console-script shims (their shebang names the build venv) and no .pyc.
   Same inputs, same bytes.
5. The build id is sha256 over the sources (src/, templates/, systemd/, pyproject.toml,
   build.py) and the names of the resolved wheels, cut to 12 hex digits. shiv extracts each
   build id once and reuses that directory forever, so the id must change whenever the
   contents do: that is why dependency versions are part of it.
6. shiv extracts to ROOT/NAME_BUILDID and never cleans up. ROOT is baked as
   /var/lib/fleet/shiv (root-owned; a missing or read-only HOME does not matter; non-root
   runs, such as tests, set SHIV_ROOT). A preamble removes the extractions of other builds.
7. Instant start: the zip holds no bytecode (point 4), so shiv compiles every module once,
   when it extracts (`--compile-pyc`, before the directory is moved into place), and the
   preamble sets sys.dont_write_bytecode before fleet is imported: a run never writes into
   the extraction afterwards (another Python version runs from source rather than adding
   its own bytecode to a shared root-owned directory).
8. The zip's __main__.py is fleet's launcher (LAUNCHER), not shiv's: once this build is
   extracted, it starts fleet from the extraction itself, as shiv's bootstrap would, without
   the bootstrap's second read of the zip's directory and its imports (zipfile, compileall,
   hashlib, runpy, subprocess...): about 50 ms of every start. The first run of a build, or
   any SHIV_* variable but SHIV_ROOT, goes to shiv's bootstrap unchanged (it extracts, runs
   the preamble, which also deletes other builds' extractions, and honours those variables).

How fleet reads its build id at runtime: build.py writes it to fleet/_build_id.txt inside
the pyz (absent from a source checkout), which works whatever the pyz file is called and
however it is started. The exact code for fleet:

    from importlib import resources

    def build_id() -> str | None:
        \"\"\"The id build.py baked into the pyz; None when running from a checkout.\"\"\"
        try:
            return resources.files("fleet").joinpath("_build_id.txt").read_text("ascii").strip()
        except OSError:
            return None

shiv's own copy is "build_id" in environment.json at the root of the zip (sys.argv[0]).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUILD_DIR = ROOT / "build"
DEFAULT_OUT = ROOT / "dist" / "fleet.pyz"

TARGET_PYTHON = "3.10"  # oldest Python we support: keep in step with requires-python
SHIV_ROOT = "/var/lib/fleet/shiv"  # where the pyz extracts itself; root-owned on a server
SHEBANG = "/usr/bin/env python3"
CONSOLE_SCRIPT = "fleet"
COMPILED_TEMPLATES = "fleet/_data/compiled"  # fleet.host.render.COMPILED, under _data
BUILD_ID_FILE = "fleet/_build_id.txt"  # relative to site-packages; read by fleet at runtime
SOURCES = ("src", "templates", "systemd", "bootstrap", "pyproject.toml", "build.py")
DEFAULT_EPOCH = 315532800  # 1980-01-01 00:00:00 UTC, the earliest time a zip can hold

# Pinned so that the same sources give the same pyz (shiv's bootstrap code goes into it).
BUILD_TOOLS = ("pip==25.0.1", "shiv==1.0.8", "hatchling==1.33.0", "packaging==26.4")

# Upper bounds applied only while building the pyz, each to keep it pure Python.
BUILD_CONSTRAINTS = (
    "typer<0.29",  # typer 0.29 requires pydantic, whose pydantic-core is compiled per Python
)

# Compiled files that may be deleted: the package falls back to pure Python without them.
OPTIONAL_COMPILED = ("markupsafe/_speedups",)

# Runs in the build venv: requirements that apply on TARGET_PYTHON only through a marker.
MARKER_SCAN = r"""
import email, json, sys, zipfile
from pathlib import Path
from packaging.requirements import Requirement

wheelhouse, version = Path(sys.argv[1]), sys.argv[2]
env = {"python_version": version, "python_full_version": version + ".0", "extra": ""}
found = set()
for wheel in sorted(wheelhouse.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        meta = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        message = email.message_from_bytes(zf.read(meta[0]))
    for line in message.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and req.marker.evaluate(env):
            req.marker = None
            found.add(str(req))
print(json.dumps(sorted(found)))
"""

# shiv runs this (a .py preamble runs in-process, with `env` and `site_packages` set) after
# extracting and before fleet starts. It stops Python writing bytecode (point 7) and deletes
# the extractions of other builds, which shiv leaves behind forever. Best effort: a failure
# must never stop fleet. Directories touched in the last minute are spared, as another build
# may be extracting or starting right now.
PREAMBLE = '''\
"""fleet's shiv preamble: write no bytecode; delete the extractions of other fleet builds."""
import re
import shutil
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # shiv compiled the extraction when it extracted: keep it so


def _clean(current, build_id):
    name = current.name[: -len(build_id) - 1]
    other = re.compile(r"\\.?" + re.escape(name) + r"_[0-9a-f]+(\\.tmp|_lock)?")
    keep = {current.name, "." + current.name + "_lock"}
    for entry in current.parent.iterdir():
        if entry.name in keep or not other.fullmatch(entry.name):
            continue
        try:
            if entry.lstat().st_mtime > time.time() - 60:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            pass


try:
    _clean(Path(site_packages).parent, env.build_id)  # noqa: F821 (set by shiv)
except Exception:
    pass
'''


# The zip's __main__.py (point 8). BUILD_ID, ROOT and ENTRY are filled in from the
# environment.json shiv wrote. The same steps as shiv's bootstrap() for an extraction that
# exists: the same directory (root, the pyz's resolved name and the build id), the same
# site.addsitedir and sys.path order, the preamble's dont_write_bytecode, the entry point.
LAUNCHER = """\
# fleet's launcher (build.py LAUNCHER): start this build from its extraction when there is
# one; anything else is shiv's bootstrap, as before.
import os
import sys


def _site_packages():
    if any(key.startswith("SHIV_") and key != "SHIV_ROOT" for key in os.environ):
        return None  # shiv's switches (SHIV_INTERPRETER, SHIV_FORCE_EXTRACT...): shiv's job
    root = os.path.expanduser(os.environ.get("SHIV_ROOT") or ROOT)
    name = os.path.basename(os.path.realpath(sys.argv[0]))
    path = os.path.join(root, name + "_" + BUILD_ID, "site-packages")
    return path if os.path.isdir(path) else None  # shiv moves it into place when complete


BUILD_ID, ROOT, ENTRY = %r, %r, %r
_site = _site_packages()
if _site is None:
    import _bootstrap

    _bootstrap.bootstrap()
else:
    import site

    sys.dont_write_bytecode = True
    _length = len(sys.path)
    _index = next((i for i, p in enumerate(sys.path)
                   if os.path.basename(p) in ("site-packages", "dist-packages")), None)
    _index = _index or _length
    site.addsitedir(_site)
    sys.path = sys.path[:_index] + sys.path[_length:] + sys.path[_index:_length]
    _module, _name = ENTRY.split(":")
    sys.exit(getattr(__import__(_module, fromlist=[_name]), _name)())
"""


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def run(argv: list[str | Path], env: dict[str, str] | None = None) -> str:
    """Run one command, capture its output, raise BuildError with that output on failure."""
    args = [str(a) for a in argv]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip()
        tail = "\n".join(output.splitlines()[-30:])
        raise BuildError(f"command failed (exit {proc.returncode}): {' '.join(args)}\n{tail}")
    return proc.stdout


def build_venv() -> Path:
    """Return the python of build/venv, (re)creating it when BUILD_TOOLS changed."""
    venv_dir = BUILD_DIR / "venv"
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / "build-tools.json"
    wanted = json.dumps({"python": sys.version, "tools": BUILD_TOOLS})
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(venv_dir, ignore_errors=True)
    try:
        venv.create(venv_dir, with_pip=True, clear=True)
    except Exception as exc:  # Debian without python3-venv raises here
        raise BuildError(f"cannot create {venv_dir} (is python3-venv installed?): {exc}") from exc
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *BUILD_TOOLS])
    stamp.write_text(wanted)
    return python


def source_files() -> list[Path]:
    """The files that make up fleet, sorted; caches and bytecode left out."""
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [
            p
            for p in candidates
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
        ]
    return sorted(files, key=lambda p: p.relative_to(ROOT).as_posix())


def compute_build_id(wheels: list[str]) -> str:
    """sha256 over the sources (path and bytes) and the resolved wheel names, 12 hex digits."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for wheel in sorted(wheels):
        digest.update(wheel.encode() + b"\0")
    return digest.hexdigest()[:12]


def pip_target_args(constraints: Path) -> list[str]:
    """pip options that make pip pick wheels for TARGET_PYTHON whatever Python runs it."""
    return [
        "--python-version", TARGET_PYTHON, "--only-binary=:all:",
        "--constraint", str(constraints), "--disable-pip-version-check",
    ]  # fmt: skip


def build_wheelhouse(python: Path, work: Path) -> tuple[Path, str, list[str]]:
    """Build fleet's wheel and download its dependencies as resolved on TARGET_PYTHON.

    Returns the wheelhouse, fleet's requirement and the marker-only requirements to add.
    """
    wheelhouse = work / "wheelhouse"
    constraints = work / "constraints.txt"
    constraints.write_text("".join(f"{c}\n" for c in BUILD_CONSTRAINTS))
    pip = [python, "-m", "pip"]
    run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheelhouse, ROOT])
    wheels = list(wheelhouse.glob("fleet-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one fleet wheel in {wheelhouse}, found {len(wheels)}")
    fleet_wheel = wheels[0]
    version = fleet_wheel.name.split("-")[1]
    extra: list[str] = []
    while True:
        # The wheel by path, not by name: PyPI has an unrelated project called "fleet".
        run([*pip, "download", "-q", *pip_target_args(constraints), "--dest", wheelhouse,
             "--find-links", wheelhouse, fleet_wheel, *extra])  # fmt: skip
        found = json.loads(run([python, "-c", MARKER_SCAN, wheelhouse, TARGET_PYTHON]))
        if set(found) <= set(extra):
            return wheelhouse, f"fleet=={version}", extra
        extra = sorted(set(extra) | set(found))


def install_site_packages(python: Path, work: Path, fleet_req: str, extra: list[str]) -> Path:
    """Install fleet and its dependencies from the wheelhouse alone into a fresh directory."""
    site_packages = work / "site-packages"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # offline and independent of the user's pip config
    run([python, "-m", "pip", "install", "-q", *pip_target_args(work / "constraints.txt"),
         "--no-index", "--find-links", work / "wheelhouse", "--no-compile",
         "--target", site_packages, fleet_req, *extra], env=env)  # fmt: skip
    return site_packages


def make_pure(site_packages: Path) -> None:
    """Drop console-script shims and optional speedups; refuse any other compiled file."""
    # The shims' shebang names the build venv: drop them and their lines in RECORD.
    shutil.rmtree(site_packages / "bin", ignore_errors=True)
    for record in site_packages.glob("*.dist-info/RECORD"):
        lines = record.read_text().splitlines(keepends=True)
        record.write_text("".join(ln for ln in lines if not ln.startswith("../../bin/")))
    compiled = sorted(
        p for p in site_packages.rglob("*") if p.is_file() and p.suffix in (".so", ".pyd")
    )
    for path in compiled:
        rel = path.relative_to(site_packages).as_posix()
        if rel.startswith(OPTIONAL_COMPILED):
            path.unlink()
        else:
            raise BuildError(
                f"compiled file {rel} would tie fleet.pyz to one Python version and CPU; "
                "keep its package out (BUILD_CONSTRAINTS in build.py)"
            )


def compile_templates(python: Path, site_packages: Path) -> None:
    """fleet's templates compiled into Python modules (fleet/_data/compiled), by the jinja2
    and fleet just installed: a run imports them (shiv byte-compiles them with the rest)
    instead of compiling each template it renders."""
    run([python, "-c", "import sys; from fleet.host.render import compile_templates; "
         "compile_templates(sys.argv[1])", site_packages / COMPILED_TEMPLATES],
        env={**os.environ, "PYTHONPATH": str(site_packages)})


def run_shiv(python: Path, work: Path, site_packages: Path, build_id: str, out: Path) -> None:
    """Pack site-packages into the zipapp at out, atomically."""
    preamble = work / "fleet_preamble.py"
    preamble.write_text(PREAMBLE)
    preamble.chmod(0o644)
    tmp_out = out.with_name(f".{out.name}.tmp")
    shiv = python.parent / "shiv"
    epoch = os.environ.get("SOURCE_DATE_EPOCH", str(DEFAULT_EPOCH))
    env = dict(os.environ, SOURCE_DATE_EPOCH=epoch)
    run([shiv, "--site-packages", site_packages, "--console-script", CONSOLE_SCRIPT,
         "--output-file", tmp_out, "--python", SHEBANG, "--reproducible",
         "--build-id", build_id, "--root", SHIV_ROOT, "--preamble", preamble,
         "--compile-pyc"], env=env)  # fmt: skip
    install_launcher(tmp_out)
    tmp_out.chmod(0o755)
    os.replace(tmp_out, out)


def install_launcher(pyz: Path) -> None:
    """Replace shiv's __main__.py by LAUNCHER (point 8): the zip is written anew, entry by
    entry with the same names, order, dates, modes and compression, so it stays
    reproducible."""
    with zipfile.ZipFile(pyz) as old:
        env = json.loads(old.read("environment.json"))
        launcher = LAUNCHER % (env["build_id"], env["root"], env["entry_point"])
        entries = [(info, launcher.encode() if info.filename == "__main__.py"
                    else old.read(info)) for info in old.infolist()]
    prefix = pyz.read_bytes().split(b"\n", 1)[0] + b"\n"  # the #! line
    if not prefix.startswith(b"#!") or "__main__.py" not in {i.filename for i, _ in entries}:
        raise BuildError(f"{pyz}: not the zipapp shiv writes (no #! line or __main__.py)")
    new = pyz.with_name(pyz.name + ".launcher")
    with new.open("wb") as fd:
        fd.write(prefix)
        with zipfile.ZipFile(fd, "w") as zf:
            for info, data in entries:
                zf.writestr(info, data)
    os.replace(new, pyz)


def build(out: Path) -> str:
    """Build the pyz at out and return its build id."""
    os.umask(0o022)  # file modes go into the zip
    BUILD_DIR.mkdir(exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    python = build_venv()
    work = Path(tempfile.mkdtemp(prefix="pyz-", dir=BUILD_DIR))
    try:
        wheelhouse, fleet_req, extra = build_wheelhouse(python, work)
        build_id = compute_build_id([w.name for w in wheelhouse.glob("*.whl")])
        site_packages = install_site_packages(python, work, fleet_req, extra)
        make_pure(site_packages)
        compile_templates(python, site_packages)
        (site_packages / BUILD_ID_FILE).write_text(build_id)
        run_shiv(python, work, site_packages, build_id, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return build_id


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build, report; a failure is one clear message and exit status 1."""
    parser = argparse.ArgumentParser(description="Build fleet.pyz, a shiv zipapp.")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output path (default: {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    started = time.monotonic()
    try:
        build_id = build(out)
    except (BuildError, OSError) as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    size_kib = out.stat().st_size / 1024
    print(f"built {out}")
    print(f"size: {size_kib:.0f} KiB")
    print(f"build id: {build_id}")
    print(f"took: {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

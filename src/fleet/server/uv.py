"""uv, the builder of the apps' venvs: installed by root as an unpacked, hash-checked wheel,
and run only contained, as each app's user.

Root never runs code from PyPI: pip, the copy bundled with fleet (virtualenv's embedded
wheel, run from the wheel file by the system Python, isolated: -I -S), downloads the pinned
wheel, checks its sha256 (--require-hashes) and unpacks it with --target (a wheel is never
built or executed when unpacked). The binary lands at a root-owned, versioned path; the
directory is renamed into place last, so a killed install leaves only a temporary directory
the next one removes.
"""

from __future__ import annotations

from fleet.config.settings import PipSettings
from fleet.host.actions import Action, BuildVenv, MakeDir, Move, Remove, Run, WriteFile
from fleet.host.layout import LIB_DIR, SYSTEM_PYTHON
from fleet.host.machine import Host
from fleet.host.render import render
from fleet.server.release import pip_env

UV_VERSION = "0.13.9"
# sha256 of the wheels of UV_VERSION pip may pick on a Debian server (glibc, x86_64/aarch64).
UV_SHA256 = (
    "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19",  # manylinux x86_64
    "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe",  # manylinux aarch64
)
UV_DIR = f"{LIB_DIR}/uv-{UV_VERSION}"
UV_BIN = f"{UV_DIR}/bin/uv"
UV_TMP = f"{LIB_DIR}/.uv-{UV_VERSION}.tmp"
BUILDERS = ("uv", "pip")


def installer_env(pip: PipSettings) -> tuple[tuple[str, str], ...]:
    """[server.pip]'s index and certificate reach the download too (a server without PyPI);
    no cache: root's HOME stays untouched."""
    return (*pip_env(pip), ("PIP_NO_CACHE_DIR", "1"))


def bundled_pip(python_minor: str) -> str | None:
    """The pip wheel fleet carries (virtualenv's embedded one, the pip every venv virtualenv
    makes is seeded from) for that Python, as a real file of fleet's extraction; None when
    there is none. pip runs from a wheel file (`python PIP.whl/pip`): no throwaway venv, whose
    making copied pip and setuptools (about 1,000 files) for one download."""
    from virtualenv.seed.wheels.embed import get_embed_wheel

    wheel = get_embed_wheel("pip", python_minor) if python_minor else None
    return str(wheel.path) if wheel is not None and wheel.path.is_file() else None


def plan_uv(host: Host, pip: PipSettings, pip_wheel: str | None = None) -> list[Action]:
    """Nothing when the pinned uv is in place; else download, verify and unpack its wheel,
    with fleet's own pip (`pip_wheel`, see bundled_pip) or, without one, a throwaway venv's."""
    if host.state(UV_BIN) is not None:
        return []
    venv, target, requirements = f"{UV_TMP}/venv", f"{UV_TMP}/wheel", f"{UV_TMP}/requirements.txt"
    actions: list[Action] = [MakeDir(path=LIB_DIR, mode=0o755)]
    if host.state(UV_TMP) is not None:
        actions.append(Remove(path=UV_TMP, why="left by an interrupted install"))
    if host.state(UV_DIR) is not None:
        actions.append(Remove(path=UV_DIR, why="incomplete: no uv binary"))
    actions.append(MakeDir(path=UV_TMP, mode=0o700))
    if pip_wheel is None:
        actions.append(BuildVenv(path=venv, python=SYSTEM_PYTHON))
    pip_cmd = (SYSTEM_PYTHON, "-I", "-S", f"{pip_wheel}/pip") if pip_wheel \
        else (f"{venv}/bin/python", "-I", "-m", "pip")
    actions += [
        WriteFile(path=requirements, mode=0o600,
                  content=render("uv-requirements.txt.j2", version=UV_VERSION,
                                 digests=UV_SHA256)),
        Run(argv=(*pip_cmd, "install", "--no-input", "--no-deps",
                  "--only-binary=:all:", "--require-hashes", "--target", target,
                  "-r", requirements),
            why=f"download uv {UV_VERSION}, check its sha256 and unpack the wheel (no code runs)",
            env=installer_env(pip), cwd="/", timeout=600),
        Move(src=target, dest=UV_DIR),
        Remove(path=UV_TMP, why="the installer's files"),
    ]
    return actions


def cleanup(host: Host) -> list[Action]:
    """After a failed install: no half-built directory stays behind."""
    return [Remove(path=UV_TMP, why="a failed install")] if host.state(UV_TMP) is not None else []

"""uv, the builder of the apps' venvs: installed by root as one file taken from a pinned,
hash-checked wheel, and run only contained, as each app's user.

Root never runs code from PyPI, nor pip: fleet itself (the FetchWheel action, done by
fleet.host.fetch in its own process) asks [server.pip]'s index, then each extra index, for
the pinned wheel file of the server's machine by its exact name, downloads it into a
root-only directory, checks its sha256 against the pin below and copies out only the `uv`
binary. pip did the same before (--require-hashes --target), at 1.8-2.0 s of CPU: most of
the one overhead a cold uv apply had over pip builds (bench/README.md "Builds: uv against
pip"). The binary lands at a root-owned, versioned path; the directory is renamed into place
last, so a killed install leaves only a temporary directory the next one removes.
"""

from __future__ import annotations

from fleet.config.settings import PipSettings
from fleet.errors import FleetError
from fleet.host.actions import Action, FetchWheel, MakeDir, Move, Remove
from fleet.host.layout import LIB_DIR
from fleet.host.machine import Host

UV_VERSION = "0.13.9"
# The wheel of UV_VERSION for each machine (os.uname().machine) of a Debian server (glibc),
# by its exact file name on the index, and its sha256 (from PyPI's simple API).
UV_WHEELS = {
    "x86_64": (f"uv-{UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
               "d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19"),
    "aarch64": (f"uv-{UV_VERSION}-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64"
                ".musllinux_1_1_aarch64.whl",
                "5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe"),
}
UV_MEMBER = f"uv-{UV_VERSION}.data/scripts/uv"  # the binary, in the wheel
UV_DIR = f"{LIB_DIR}/uv-{UV_VERSION}"
UV_BIN = f"{UV_DIR}/bin/uv"
UV_TMP = f"{LIB_DIR}/.uv-{UV_VERSION}.tmp"
PYPI = "https://pypi.org/simple/"
BUILDERS = ("uv", "pip")


class NoWheel(FleetError):
    """No pinned uv wheel for the server's machine: builds use pip."""


def wheel_for(machine: str) -> tuple[str, str]:
    """(file name, sha256) of the pinned wheel for `machine`."""
    try:
        return UV_WHEELS[machine]
    except KeyError:
        raise NoWheel(f"no uv {UV_VERSION} wheel pinned for machine {machine!r} "
                      f"(pinned: {', '.join(sorted(UV_WHEELS))})") from None


def indexes(pip: PipSettings) -> tuple[str, ...]:
    """Where pip would look, in its order: the index, then each extra index."""
    return (pip.index_url or PYPI, *pip.extra_index_urls)


def plan_uv(host: Host, pip: PipSettings, machine: str) -> list[Action]:
    """Nothing when the pinned uv is in place; else download, verify and unpack its binary
    (raises NoWheel for a machine without a pinned wheel)."""
    if host.state(UV_BIN) is not None:
        return []
    filename, sha256 = wheel_for(machine)
    target = f"{UV_TMP}/wheel"
    actions: list[Action] = [MakeDir(path=LIB_DIR, mode=0o755)]
    if host.state(UV_TMP) is not None:
        actions.append(Remove(path=UV_TMP, why="left by an interrupted install"))
    if host.state(UV_DIR) is not None:
        actions.append(Remove(path=UV_DIR, why="incomplete: no uv binary"))
    actions += [
        MakeDir(path=UV_TMP, mode=0o700),
        FetchWheel(project="uv", version=UV_VERSION, filename=filename, sha256=sha256,
                   member=UV_MEMBER, dest=f"{target}/bin/uv", tmp=UV_TMP,
                   indexes=indexes(pip), cert=pip.cert),
        Move(src=target, dest=UV_DIR),
        Remove(path=UV_TMP, why="the installer's files"),
    ]
    return actions


def cleanup(host: Host) -> list[Action]:
    """After a failed install: no half-built directory stays behind."""
    return [Remove(path=UV_TMP, why="a failed install")] if host.state(UV_TMP) is not None else []

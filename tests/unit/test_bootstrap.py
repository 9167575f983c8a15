"""The bootstrap shell script, run by dash in a sandbox of fakes.

Fakes on PATH stand in for `id` (to be root or not), `apt-get` and sometimes `python3`;
FLEET_OS_RELEASE and FLEET_BIN_DIR point the script at files under tmp_path. PATH holds only
the fakes and links to the few tools the script needs, so a test controls whether python3
exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).resolve().parents[2] / "bootstrap"
SHELL = shutil.which("dash") or "/bin/sh"
TOOLS = ("sed", "head", "tr", "dirname", "cmp", "mkdir", "mktemp", "cp", "chmod", "mv", "rm",
         "cat", "grep")

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'

# A stand-in for fleet.pyz: prints its argv as JSON on stdout and chatter on stderr.
FAKE_FLEET = """#!/usr/bin/env python3
import json, sys
print("fake fleet chatter", file=sys.stderr)
print(json.dumps({"argv": sys.argv[1:]}))
"""

LN = shutil.which("ln") or "/bin/ln"

# Pretends to be apt-get: logs its call, is noisy on stdout, "installs" python3 as a link.
FAKE_APT = f"""#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "$APT_LOG"
echo "Reading package lists... (apt noise)"
case " $* " in
    *" install "*)
        [ -n "${{APT_FAIL:-}}" ] && exit 100
        if [ -n "${{APT_LOCKED:-}}" ] && [ ! -e "$APT_LOG.locked" ]; then
            : > "$APT_LOG.locked"
            echo "E: Could not get lock /var/cache/apt/archives/lock. It is held by process 7" >&2
            exit 100
        fi
        {LN} -s {sys.executable} "$FAKES/python3" ;;
esac
exit 0
"""


@dataclass
class Sandbox:
    """Paths and environment for one bootstrap run."""

    root: Path
    fakes: Path
    bin_dir: Path
    os_release: Path
    apt_log: Path
    env: dict[str, str]

    def run(self, *args: str | Path, script: Path = BOOTSTRAP) -> subprocess.CompletedProcess:
        """Run `sh bootstrap ARGS` and capture stdout and stderr apart."""
        return subprocess.run(
            [SHELL, str(script), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def fake(self, name: str, text: str) -> Path:
        """Write an executable fake command onto PATH."""
        path = self.fakes / name
        path.write_text(text)
        path.chmod(0o755)
        return path


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    """Root, on Debian, with python3 available; each test changes what it needs."""
    fakes, tools, bin_dir = tmp_path / "fakes", tmp_path / "tools", tmp_path / "bin"
    fakes.mkdir()
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run bootstrap"
        (tools / tool).symlink_to(found)
    os_release = tmp_path / "os-release"
    os_release.write_text(DEBIAN)
    env = {
        "PATH": f"{fakes}:{tools}",
        "FLEET_OS_RELEASE": str(os_release),
        "FLEET_BIN_DIR": str(bin_dir),
        "APT_LOG": str(tmp_path / "apt.log"),
        "FAKES": str(fakes),
        "HOME": str(tmp_path),
        "LC_ALL": "C",
    }
    box = Sandbox(tmp_path, fakes, bin_dir, os_release, tmp_path / "apt.log", env)
    box.fake("id", '#!/bin/sh\n[ "$1" = -u ] && echo "${FAKE_UID:-0}"\n')
    box.fake("apt-get", FAKE_APT)
    (fakes / "python3").symlink_to(sys.executable)
    return box


@pytest.fixture
def pyz(tmp_path: Path) -> Path:
    """A fake fleet.pyz outside the sandbox's bin dir."""
    path = tmp_path / "dl" / "fleet.pyz"
    path.parent.mkdir()
    path.write_text(FAKE_FLEET)
    path.chmod(0o644)
    return path


def fleet_argv(stdout: str) -> list[str]:
    """The argv the fake fleet saw; fails if stdout holds anything but its one JSON line."""
    return json.loads(stdout)["argv"]


def test_syntax_is_posix_sh() -> None:
    subprocess.run([SHELL, "-n", str(BOOTSTRAP)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_is_clean() -> None:
    subprocess.run(["shellcheck", "-s", "sh", str(BOOTSTRAP)], check=True)


def test_happy_path_installs_and_runs_fleet_with_args(sandbox: Sandbox, pyz: Path) -> None:
    result = sandbox.run(pyz, "apply", "fleet.toml", "--json")
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["apply", "fleet.toml", "--json"]
    assert "bootstrap: installed" in result.stderr
    assert "fake fleet chatter" in result.stderr
    installed = sandbox.bin_dir / "fleet"
    assert installed.read_bytes() == pyz.read_bytes()
    assert installed.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in sandbox.bin_dir.iterdir()) == ["fleet"]  # no temp file left
    assert not sandbox.apt_log.exists()


def test_default_args_are_apply(sandbox: Sandbox, pyz: Path) -> None:
    result = sandbox.run(pyz)
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["apply"]


def test_reinstall_replaces_and_same_file_is_left_alone(sandbox: Sandbox, pyz: Path) -> None:
    sandbox.bin_dir.mkdir()
    (sandbox.bin_dir / "fleet").write_text("#!/bin/sh\necho old fleet\n")
    assert fleet_argv(sandbox.run(pyz, "plan").stdout) == ["plan"]
    again = sandbox.run(pyz, "plan")
    assert again.returncode == 0
    assert "already this zipapp" in again.stderr


def test_uses_fleet_pyz_next_to_the_script(sandbox: Sandbox, pyz: Path) -> None:
    script = pyz.parent / "bootstrap"
    shutil.copy(BOOTSTRAP, script)
    result = sandbox.run("status", script=script)
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["status"]
    assert (sandbox.bin_dir / "fleet").read_bytes() == pyz.read_bytes()


def test_uses_installed_fleet_when_no_pyz(sandbox: Sandbox, pyz: Path) -> None:
    sandbox.bin_dir.mkdir()
    shutil.copy(pyz, sandbox.bin_dir / "fleet")
    (sandbox.bin_dir / "fleet").chmod(0o755)
    result = sandbox.run("plan", "--json")
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["plan", "--json"]
    assert "using the installed" in result.stderr


def test_no_pyz_anywhere_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.run("apply")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "fleet.pyz" in result.stderr


def test_missing_pyz_argument_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    result = sandbox.run(tmp_path / "nope.pyz")
    assert result.returncode == 2
    assert "no such zipapp" in result.stderr


def test_non_root_is_refused(sandbox: Sandbox, pyz: Path) -> None:
    sandbox.env["FAKE_UID"] = "1000"
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "must run as root" in result.stderr
    assert not sandbox.bin_dir.exists()


@pytest.mark.parametrize(
    "os_release",
    [
        'ID=fedora\nID_LIKE="rhel centos fedora"\n',
        "ID=alpine\n",
        "ID=debianish\nID_LIKE=notdebian\n",
    ],
)
def test_other_systems_are_refused(sandbox: Sandbox, pyz: Path, os_release: str) -> None:
    sandbox.os_release.write_text(os_release)
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Debian and Ubuntu only" in result.stderr
    assert not sandbox.bin_dir.exists()


def test_missing_os_release_is_refused(sandbox: Sandbox, pyz: Path) -> None:
    sandbox.os_release.unlink()
    result = sandbox.run(pyz)
    assert result.returncode == 2
    assert "Debian and Ubuntu only" in result.stderr


@pytest.mark.parametrize(
    "os_release",
    [
        "ID=ubuntu\nID_LIKE=debian\n",
        "ID='raspbian'\nID_LIKE='debian'\n",
        'ID=linuxmint\nID_LIKE="ubuntu debian"\n',
    ],
)
def test_debian_family_is_accepted(sandbox: Sandbox, pyz: Path, os_release: str) -> None:
    sandbox.os_release.write_text(os_release)
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["apply"]


def test_missing_python_is_installed_with_apt_output_on_stderr(sandbox: Sandbox, pyz: Path) -> None:
    (sandbox.fakes / "python3").unlink()
    result = sandbox.run(pyz, "apply", "--json")
    assert result.returncode == 0, result.stderr
    assert fleet_argv(result.stdout) == ["apply", "--json"]
    assert "apt noise" in result.stderr
    calls = sandbox.apt_log.read_text().splitlines()
    assert calls == [
        "apt-get update -q DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y -q --no-install-recommends python3 DEBIAN_FRONTEND=noninteractive",
    ]


def test_apt_failure_fails_clearly(sandbox: Sandbox, pyz: Path) -> None:
    (sandbox.fakes / "python3").unlink()
    sandbox.env["APT_FAIL"] = "1"
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "could not install python3" in result.stderr
    assert not sandbox.bin_dir.exists()


def test_a_held_apt_lock_is_waited_for_then_python_installed(sandbox: Sandbox,
                                                              pyz: Path) -> None:
    (sandbox.fakes / "python3").unlink()
    sandbox.env["APT_LOCKED"] = "1"  # the first install finds the archives locked
    sandbox.fake("sleep", f'#!/bin/sh\necho "sleep $*" >> "{sandbox.apt_log}"\n')
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 0, result.stderr
    assert "Could not get lock" in result.stderr and "waiting (0 s so far)" in result.stderr
    install = "apt-get install -y -q --no-install-recommends python3 " \
              "DEBIAN_FRONTEND=noninteractive"
    assert sandbox.apt_log.read_text().splitlines() == [
        "apt-get update -q DEBIAN_FRONTEND=noninteractive", install, "sleep 5", install]


def test_a_lock_never_released_fails_after_the_wait(sandbox: Sandbox, pyz: Path) -> None:
    (sandbox.fakes / "python3").unlink()
    sandbox.fake("apt-get", "#!/bin/sh\necho 'E: Could not get lock /var/lib/dpkg/lock' >&2\n"
                            "exit 100\n")
    sandbox.fake("sleep", "#!/bin/sh\n")
    sandbox.env["FLEET_APT_LOCK_WAIT"] = "10"
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 1
    assert result.stderr.count("Could not get lock") == 3  # at 0, 5 and 10 s
    assert "could not install python3" in result.stderr


def test_old_python_is_refused(sandbox: Sandbox, pyz: Path) -> None:
    (sandbox.fakes / "python3").unlink()
    sandbox.fake("python3", "#!/bin/sh\necho 3.9\nexit 1\n")
    result = sandbox.run(pyz, "apply")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "needs Python 3.10 or newer; python3 here is 3.9" in result.stderr
    assert not sandbox.bin_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the real id(1) reports root")
def test_real_id_as_root_passes_the_root_check(sandbox: Sandbox, pyz: Path) -> None:
    (sandbox.fakes / "id").unlink()
    (sandbox.fakes / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    assert sandbox.run(pyz).returncode == 0

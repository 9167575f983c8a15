"""Build and cache a bare Debian root filesystem per suite, and a "provisioned" layer on it.

debootstrap takes about a minute, so the tree is built once per suite and cached outside the
repository; every test server starts from a copy. The tree is what a freshly installed,
minimal server looks like: systemd, dbus and CA certificates, but no python3, git or nginx.

The provisioned layer (``provisioned_rootfs``) is that tree plus python3 and the OS packages
fleet installs (fleet.host.layout.BASE_PACKAGES), installed once per suite with apt-get in a
chroot: for modules whose claims are not about provisioning a bare server (each says so in its
docstring), it saves the two apt-get updates (5-9 s each here) and the installs (python3, then
fleet's packages: 21-47 s) of every bootstrap, and the waits for the apt archive's lock that
concurrent servers share. Everything about provisioning is proven on bare servers.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fleet.host.layout import BASE_PACKAGES

from ._util import HarnessError, safe_rmtree

CACHE_ROOT = Path(os.environ.get("FLEET_TEST_CACHE", "/var/cache/fleet-tests"))
MIRROR = os.environ.get("FLEET_TEST_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get(
    "FLEET_TEST_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
SUITES = ("bookworm", "trixie")
DEFAULT_SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
HOSTNAME = "fleet-test"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# Bump when the customisation below changes, so stale caches are rebuilt, not reused.
ROOTFS_VERSION = "1"
_MARKER = ".fleet-rootfs-version"

# Units that only cost boot time or fail in a container sharing the host's network.
_MASKED_UNITS = (
    "systemd-networkd-wait-online.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
)

_APT_CONF = """\
// fleet tests: keep downloaded .debs (the archive dir is a cache shared between servers).
APT::Keep-Downloaded-Packages "true";
Binary::apt::APT::Keep-Downloaded-Packages "true";
Acquire::Retries "3";
"""


def default_suite() -> str:
    """Suite chosen by FLEET_TEST_SUITE (default bookworm); fail loudly on a typo."""
    suite = os.environ.get("FLEET_TEST_SUITE", "").strip() or DEFAULT_SUITE
    if suite not in SUITES:
        raise HarnessError(f"FLEET_TEST_SUITE={suite!r}: expected one of {', '.join(SUITES)}")
    return suite


def cache_dir(kind: str, suite: str) -> Path:
    """Per-suite cache directory shared by all servers (apt archives, pip cache)."""
    path = CACHE_ROOT / kind / suite
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_rootfs(suite: str | None = None) -> Path:
    """Return the cached bare rootfs for *suite*, building it first if needed.

    The tree is built in a temporary sibling directory and renamed into place only when
    complete, so an interrupted build is never used; a file lock keeps parallel sessions
    from building the same suite twice.
    """
    suite = suite or default_suite()
    if suite not in SUITES:
        raise HarnessError(f"unknown suite {suite!r}: expected one of {', '.join(SUITES)}")
    parent = CACHE_ROOT / "rootfs"
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / suite
    if _is_current(target):
        return target
    with _file_lock(parent / f".{suite}.lock"):
        if _is_current(target):
            return target
        for stale in parent.glob(f".{suite}.build-*"):
            safe_rmtree(stale)  # Left by a killed build; we hold the lock, so it is dead.
        build = Path(tempfile.mkdtemp(prefix=f".{suite}.build-", dir=parent))
        build.chmod(0o755)  # mkdtemp's 0700 would become the server's "/" (dbus can't start)
        try:
            _debootstrap(suite, build)
            _customise(suite, build)
            (build / _MARKER).write_text(ROOTFS_VERSION + "\n")
            if os.path.lexists(target):
                safe_rmtree(target)  # An outdated version.
            build.rename(target)
        except BaseException:
            safe_rmtree(build)
            raise
    return target


def provisioned_rootfs(suite: str | None = None, extra: tuple[str, ...] = ()) -> Path:
    """Return the cached provisioned rootfs for *suite* (see the module docstring), building it
    from the bare one first if needed; same locking and rename-into-place as base_rootfs.

    Its marker names the bare version and the packages, so a change to fleet's list rebuilds it.
    *extra* packages (e.g. openssh-server, for clusters: installing it in each of 22 servers
    was an apt-get update and install apiece) make a tree of their own, beside the plain one,
    so callers of either never rebuild the other's. OpenSSH's host keys are left out of it:
    each server makes its own (bridged.py install_sshd).
    """
    suite = suite or default_suite()
    base = base_rootfs(suite)
    extra = tuple(sorted(extra))
    parent = CACHE_ROOT / ("rootfs-provisioned" + "".join(f"+{p}" for p in extra))
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / suite
    version = _provisioned_version(extra)
    if _is_current(target, version):
        return target
    with _file_lock(parent / f".{suite}.lock"):
        if _is_current(target, version):
            return target
        for stale in parent.glob(f".{suite}.build-*"):
            safe_rmtree(stale)
        build = Path(tempfile.mkdtemp(prefix=f".{suite}.build-", dir=parent))
        safe_rmtree(build)  # cp makes it, as a copy of the bare tree
        try:
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(build)], check=True,
                           capture_output=True)
            _install_packages(suite, build, (*PROVISIONED_PACKAGES, *extra))
            _unshare_host_keys(build)
            (build / _MARKER).write_text(version + "\n")
            if os.path.lexists(target):
                safe_rmtree(target)
            build.rename(target)
        except BaseException:
            safe_rmtree(build)
            raise
    return target


# What `bootstrap` installs (python3), then what fleet's packages step installs.
PROVISIONED_PACKAGES = ("python3", *BASE_PACKAGES)
# Keeps package scripts from starting daemons in the chroot (which shares the host's network).
_POLICY_RC = "/usr/sbin/policy-rc.d"


def _provisioned_version(extra: tuple[str, ...] = ()) -> str:
    return f"{ROOTFS_VERSION} provisioned {' '.join(sorted((*PROVISIONED_PACKAGES, *extra)))}"


def _unshare_host_keys(root: Path) -> None:
    """No OpenSSH host keys (nor ssh enabled at boot, where it would fail without them) in a
    shared tree: every server copied from it would have the same ones."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/systemd/system/multi-user.target.wants/ssh.service").unlink(missing_ok=True)


def _install_packages(suite: str, root: Path, packages: tuple[str, ...]) -> None:
    """apt-get update and install *packages* in a chroot of *root*, no daemon started.

    The .debs go to and come from the shared apt archive; apt does not wait for that cache's
    lock, so a run while another server holds it is retried.
    """
    policy = root / _POLICY_RC.lstrip("/")
    policy.write_text("#!/bin/sh\n# fleet tests: no daemons while building the tree\nexit 101\n")
    policy.chmod(0o755)
    mounts = [(Path("/proc"), root / "proc"), (Path("/dev"), root / "dev"),
              (cache_dir("apt", suite), root / "var/cache/apt/archives")]
    started = time.monotonic()
    try:
        for source, point in mounts:
            subprocess.run(["mount", "--bind", str(source), str(point)], check=True,
                           capture_output=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive"}
        script = ("apt-get -o Acquire::Languages=none update -q && "
                  "apt-get install -y -q --no-install-recommends "
                  "-o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-unsafe-io "
                  + " ".join(packages))
        for _ in range(60):
            proc = subprocess.run(["chroot", str(root), "sh", "-c", script], capture_output=True,
                                  text=True, check=False, env=env, timeout=1800)
            if proc.returncode == 0 or "Could not get lock" not in proc.stderr:
                break
            time.sleep(5)
        if proc.returncode != 0:
            raise HarnessError(f"installing {' '.join(packages)} in {root} failed:\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    finally:
        for _, point in reversed(mounts):
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
        policy.unlink(missing_ok=True)
    print(f"[fleet-tests] provisioned {suite}: {time.monotonic() - started:.1f}s")


def _is_current(path: Path, version: str = ROOTFS_VERSION) -> bool:
    try:
        return (path / _MARKER).read_text().strip() == version
    except OSError:
        return False


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _debootstrap(suite: str, target: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap is not installed (apt-get install debootstrap)")
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        suite,
        str(target),
        MIRROR,
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else proc.stderr[-3000:]
        raise HarnessError(f"debootstrap {suite} failed ({proc.returncode}):\n{detail}")
    print(f"[fleet-tests] debootstrap {suite}: {time.monotonic() - started:.1f}s")


def _customise(suite: str, root: Path) -> None:
    """Turn a debootstrap tree into something that boots like a fresh server."""
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    # No shared machine id: each server copy gets its own (server.py), which also keeps
    # systemd from treating its boots as first boots.
    (root / "etc/machine-id").write_text("")
    (root / "etc/apt/sources.list").write_text(_sources_list(suite))
    (root / "etc/apt/apt.conf.d/99fleet-tests").write_text(_APT_CONF)
    for name in ("docker-clean", "docker-gzip-indexes"):  # would delete the shared .debs
        (root / "etc/apt/apt.conf.d" / name).unlink(missing_ok=True)
    for unit in _MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    _install_host_cas(root)
    # debootstrap leaves its .debs and logs behind in some versions; keep the cache small.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _sources_list(suite: str) -> str:
    return (
        f"deb {MIRROR} {suite} main\n"
        f"deb {MIRROR} {suite}-updates main\n"
        f"deb {SECURITY_MIRROR} {suite}-security main\n"
    )


def _install_host_cas(root: Path) -> None:
    """Trust the host's local CAs: outbound HTTPS here is re-signed by them, so pip needs them."""
    dest = root / "usr/local/share/ca-certificates"
    dest.mkdir(parents=True, exist_ok=True)
    for crt in sorted(HOST_CA_DIR.glob("*.crt")):
        shutil.copy2(crt, dest / crt.name)
    proc = subprocess.run(
        ["chroot", str(root), "update-ca-certificates", "--fresh"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    if proc.returncode != 0:
        raise HarnessError(f"update-ca-certificates in {root} failed:\n{proc.stdout}{proc.stderr}")

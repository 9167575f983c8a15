# fleet backup: copy an app's persist directories into a staging directory, run as the APP's
# user (contained), never as root. Each SQLite database (found by its 16-byte header, not by
# its name) is copied with SQLite's online backup API, consistent while the app writes (WAL
# included); its -wal, -shm and -journal files are then left out. Other files are copied as
# they are; symbolic links are stored as links, never followed. Prints the list as JSON.
# argv: SHARED_DIR STAGING_DATA_DIR TOP...
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import sys

HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-shm", "-journal")


def is_sqlite(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.read(fd, 16) == HEADER
    finally:
        os.close(fd)


def digest(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def copy_sqlite(source, dest):
    src = sqlite3.connect(source, timeout=60)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    for suffix in SIDE_FILES:
        if os.path.lexists(dest + suffix):
            os.unlink(dest + suffix)


def main():
    shared, staging, tops = sys.argv[1], sys.argv[2], sys.argv[3:]
    files, links, dirs = [], [], []
    for top in tops:
        root = os.path.join(shared, top)
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue  # a link or file where fleet made a directory: not followed
        for current, subdirs, names in os.walk(root, followlinks=False):
            rel = os.path.relpath(current, shared)
            os.makedirs(os.path.join(staging, rel), exist_ok=True)
            os.chmod(os.path.join(staging, rel), os.lstat(current).st_mode & 0o7777)
            dirs.append(rel)
            names = names + [d for d in subdirs if os.path.islink(os.path.join(current, d))]
            subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(current, d))]
            databases = {n for n in names if is_sqlite(os.path.join(current, n))}
            for name in sorted(names):
                source = os.path.join(current, name)
                dest = os.path.join(staging, rel, name)
                st = os.lstat(source)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(source), dest)
                    links.append({"path": os.path.join(rel, name), "target": os.readlink(source)})
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # sockets, fifos: nothing to keep
                if any(name == db + s for db in databases for s in SIDE_FILES):
                    continue  # part of a database the backup API copied whole
                sqlite = name in databases
                if sqlite:
                    copy_sqlite(source, dest)
                else:
                    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
                    with os.fdopen(fd, "rb") as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                os.chmod(dest, st.st_mode & 0o7777)
                files.append({"path": os.path.join(rel, name), "sha256": digest(dest),
                              "size": os.path.getsize(dest), "sqlite": sqlite})
    json.dump({"files": files, "links": links, "dirs": dirs}, sys.stdout)


main()

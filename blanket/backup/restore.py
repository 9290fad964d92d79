"""`blanket restore FILE`: a backup unpacked into a new data dir, never into one in use.

The data dir must not exist or be empty. Everything is unpacked into a temporary sibling
folder (mode 0700, on the same file system), checked (the store's integrity and schema
level, against the manifest), then renamed into place: a failed restore leaves nothing
behind, and a server never sees half a data dir. Nothing in the archive is trusted: each
member must be a plain file or folder at a name inside the allowed entries (no `..`, no
absolute path, no link, no device), and each file is created anew (O_EXCL, O_NOFOLLOW)
with mode 0600 in folders of mode 0700 that the restore itself made.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from blanket.backup.archive import (
    MANIFEST,
    STORE_MEMBER,
    BadBackup,
    Manifest,
    copy_member,
    members,
    open_backup,
    sync_folder,
)
from blanket.store.snapshot import BadStoreCopy, check_sqlite, schema_level


@dataclass(frozen=True)
class Restored:
    data_dir: Path
    manifest: Manifest
    files: int


def check_target(data_dir: Path) -> None:
    """Refuse a data dir that holds anything (or is not a folder)."""
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        raise BadBackup(f"{data_dir} is not a folder: restore into a new data dir "
                        "(--data-dir NEW)")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise BadBackup(f"{data_dir} is not empty: a restore never mixes with a data dir in "
                        "use; restore into a new one (--data-dir NEW), or stop its server "
                        "and move it away first")


def restore_backup(source: Path, data_dir: Path) -> Restored:
    """Unpack the backup at `source` as the data dir `data_dir` (absent or empty)."""
    data_dir = Path(os.path.abspath(data_dir))
    check_target(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}.restore-"))
    try:
        os.chmod(staging, 0o700)
        manifest, files = _unpack(source, staging)
        check_target(data_dir)  # still empty: nothing arrived meanwhile
        # rename() replaces an empty folder at once; the data dir appears whole.
        try:
            os.rename(staging, data_dir)
        except OSError as e:
            raise BadBackup(f"cannot put the restored data dir at {data_dir} ({e.strerror}): "
                            "did something write there meanwhile?") from None
        sync_folder(data_dir.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Restored(data_dir, manifest, files)


KEEP_FREE = 64 * 2**20  # bytes a restore leaves free on its disk


def _free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def _unpack(source: Path, staging: Path) -> tuple[Manifest, int]:
    with open_backup(source) as (tar, manifest):
        if manifest.database_included:
            known = schema_level("sqlite")
            if manifest.schema is None or manifest.schema > known:
                raise BadBackup(f"{source} holds a store of schema level {manifest.schema}, "
                                f"newer than this blanket's ({known}): restore it with blanket "
                                f"{manifest.blanket} or newer")
        files = 0
        room = _free_bytes(staging) - KEEP_FREE
        for member, name in members(tar, source):
            room -= member.size
            if room < 0:  # the disk would fill up: the data dir's live neighbours need it
                raise BadBackup(f"{source} unpacks to more than the free space on "
                                f"{staging.parent} (less {KEEP_FREE // 2**20} MiB kept free): "
                                "make room, or restore elsewhere")
            if name == STORE_MEMBER and not manifest.database_included:
                raise BadBackup(f"{source} holds a store its {MANIFEST} does not mention: "
                                "refused")
            target = staging / name
            if member.isdir():
                _folders(staging, target)
                continue
            _folders(staging, target.parent)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                copy_member(tar, member, out)
            files += 1
    if manifest.database_included:
        store = staging / STORE_MEMBER
        if not store.is_file():
            raise BadBackup(f"{source}: its {MANIFEST} says it holds the store, but it does not")
        try:
            facts = check_sqlite(store)
        except BadStoreCopy as e:
            raise BadBackup(f"{source}: the store in it fails its check ({e})") from None
        if facts.schema != manifest.schema or facts.tasks != manifest.tasks:
            raise BadBackup(f"{source}: the store in it does not match its {MANIFEST}")
    # Everything on disk before the rename makes it live: one sync of the file system costs
    # less than a sync per file (a backup with every task's folder holds many).
    _sync_file_system(staging)
    return manifest, files


def _folders(staging: Path, folder: Path) -> None:
    """Make `folder` (inside `staging`) and its parents, mode 0700, each a real folder."""
    relative = folder.relative_to(staging)
    at = staging
    for part in relative.parts:
        at = at / part
        try:
            os.mkdir(at, 0o700)
        except FileExistsError:
            if at.is_symlink() or not at.is_dir():
                raise BadBackup(f"{at.relative_to(staging)} is both a file and a folder in "
                                "the backup: refused") from None


def _sync_file_system(path: Path) -> None:
    """syncfs(2) of the file system holding `path` (Linux); else sync(2) of all of them."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)

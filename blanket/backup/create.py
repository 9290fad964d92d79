"""`blanket backup FILE`: a consistent copy of a server's data dir, made while it runs.

The SQLite store is copied first, with SQLite's online backup API (one read transaction:
the store as of one commit; the server goes on writing meanwhile), then checked (`PRAGMA
integrity_check`). The versions are copied after it: a version's bundle is written before
the store records it and never changes, so every version the copy names is there. Then the
folders of the tasks the copy holds that have not ended (their uploaded inputs, which a
restored server needs to run them), or of every task with `with_tasks`, and `tls/`.

Left out: `admin.token` (a working admin credential in clear; the restored server makes a
new one at its first start, and the store's tokens, kept as hashes, come back as they
were), `server-id` and `admin.servers` (this machine's), `log/`, `tmp/`, the reserve file, a
worker's `bundles/`, `outputs/` and `running/`. With PostgreSQL the database is pg_dump's
to copy; the backup then holds the files only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from blanket.backup.archive import (
    MANIFEST,
    STORE_MEMBER,
    ArchiveWriter,
    BadBackup,
    Manifest,
    members,
    open_backup,
)
from blanket.store.snapshot import (
    BadStoreCopy,
    StoreFacts,
    check_sqlite,
    copy_sqlite,
    postgres_facts,
)
from blanket.taskdir import PRIVATE_NAMES, DataDir


@dataclass(frozen=True)
class Made:
    path: Path
    manifest: Manifest
    files: int  # files in it besides the manifest
    size: int  # bytes
    seconds: float


def sqlite_path(database_url: str) -> Path | None:
    """The SQLite file a database URL names; None for PostgreSQL."""
    if database_url.startswith("sqlite:///"):
        return Path(database_url.removeprefix("sqlite:///"))
    return None


def make_backup(data_dir: Path, database_url: str, dest: Path,
                with_tasks: bool = False) -> Made:
    """Write the backup of `data_dir` (and its SQLite store) to `dest`, a new file."""
    started = time.monotonic()
    layout = DataDir(data_dir)
    if not data_dir.is_dir():
        raise BadBackup(f"{data_dir} is not a data dir (no such folder): give the server's "
                        "--data-dir (or its settings with --settings)")
    if not dest.parent.is_dir():
        raise BadBackup(f"{dest.parent}: no such folder to write the backup in")
    if dest.exists() or dest.is_symlink():
        raise BadBackup(f"{dest} exists: name a new file (a backup never overwrites one)")
    database = sqlite_path(database_url)
    # The store's copy waits beside the backup, in a folder only its owner can read.
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            if database is not None:
                facts = copy_sqlite(database, work / STORE_MEMBER, with_tasks)
            else:
                facts = postgres_facts(database_url, with_tasks)
        except BadStoreCopy as e:
            raise BadBackup(str(e)) from None
        versions = sorted(p for p in layout.versions.glob("*.tar.gz")
                          if not p.name.startswith(".")) if layout.versions.is_dir() else []
        folders = task_folders(layout.tasks, set(facts.folders))
        manifest = _manifest(facts, database is not None, with_tasks, len(versions),
                             len(folders))
        writer = ArchiveWriter(dest)
        checked: list[int] = []  # the files the backup holds, as read back before its rename
        try:
            writer.begin(manifest)
            if database is not None and not writer.add_file(work / STORE_MEMBER, STORE_MEMBER):
                raise BadBackup(f"the store's copy in {work} vanished while the backup was "
                                "written")
            for bundle in versions:
                writer.add_file(bundle, f"versions/{bundle.name}")
            for name, path in folders:
                writer.add_tree(path, name, skip=PRIVATE_NAMES)
            if layout.tls.is_dir() and not layout.tls.is_symlink():
                writer.add_tree(layout.tls, "tls")
            writer.commit(check=lambda partial: checked.append(verify_backup(partial)))
        except BaseException as e:
            writer.abort()
            if isinstance(e, OSError):  # a full disk, a folder it may not read...
                raise BadBackup(f"the backup failed, and nothing is left at {dest}: "
                                f"{e.strerror or e}"
                                + (f" ({e.filename})" if e.filename else "")) from None
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Made(dest, manifest, checked[0], dest.stat().st_size, time.monotonic() - started)


def task_folders(tasks: Path, wanted: set[tuple[str, int]]) -> list[tuple[str, Path]]:
    """(name in the backup, path) of the folders under tasks/TYPE/ID of the `wanted` tasks
    that are there (real folders, not links): one look at each folder that exists, rather
    than one per task the store holds."""
    found = []
    for kind in _folders_in(tasks):
        for entry in _folders_in(Path(kind.path)):
            if entry.name.isdigit() and (kind.name, int(entry.name)) in wanted:
                found.append((int(entry.name), f"tasks/{kind.name}/{entry.name}",
                              Path(entry.path)))
    return [(name, path) for _, name, path in sorted(found)]


def _folders_in(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _manifest(facts: StoreFacts, with_database: bool, with_tasks: bool, versions: int,
              folders: int) -> Manifest:
    return Manifest(
        blanket=version("blanket"),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        store="sqlite" if with_database else "postgresql", schema=facts.schema,
        database_included=with_database, with_tasks=with_tasks, tasks=facts.tasks,
        versions=versions, task_dirs=folders)


def verify_backup(path: Path) -> int:
    """Read the backup at `path` back whole (every member's name, kind and the archive's
    checksums), and check its store's copy (integrity check, the manifest's counts).
    Returns how many files it holds besides the manifest."""
    with open_backup(path) as (tar, manifest):
        files = 0
        work = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.check."))
        try:
            for member, name in members(tar, path):
                if not member.isfile():
                    continue
                files += 1
                reader = tar.extractfile(member)
                assert reader is not None
                if name == STORE_MEMBER:
                    with open(work / STORE_MEMBER, "wb") as out:
                        shutil.copyfileobj(reader, out, 1024 * 1024)
                else:
                    while reader.read(1024 * 1024):
                        pass
            if manifest.database_included:
                try:
                    facts = check_sqlite(work / STORE_MEMBER)
                except BadStoreCopy as e:
                    raise BadBackup(f"{path}: the store in it fails its check ({e})") from None
                if facts.tasks != manifest.tasks or facts.schema != manifest.schema:
                    raise BadBackup(f"{path}: the store in it does not match its {MANIFEST}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return files

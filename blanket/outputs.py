"""What a task printed and made, carried from a worker on another machine to the server.

A worker that shares the server's data directory writes its task directories where the
server reads them. One on another machine packs the task directory (logs, task.json, files
the command made; not the uploaded inputs, which the server has) into a tar.gz when the
task ends and posts it before its end report; the server unpacks it into its own copy of
the task directory, so `blanket logs`, `/task/ID/files` and the web page show remote runs
too. Whether the two share a directory is told by a marker file holding the server's id.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from blanket.config.bundles import escapes
from blanket.errors import is_disk_full
from blanket.taskdir import SERVER_ID_FILE, DataDir

MAX_PACKED = 1024 * 1024 * 1024  # bytes of tar.gz a server takes for one task
MAX_UNPACKED = 4 * MAX_PACKED  # bytes of files it keeps for one task, outputs sent again too
MAX_MEMBERS = 100_000  # entries (files and folders) of one outputs archive
MAX_KEPT_FILES = 100_000  # files it keeps in one task's folder once outputs are unpacked


class BadOutputs(Exception):
    """An outputs archive the server will not unpack; the message says why."""


def server_id(data_dir: Path) -> str:
    """This data directory's id, made on first use: a worker finding the same id in its own
    data directory shares the server's files."""
    path = DataDir(data_dir).server_id
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=data_dir, prefix=f".{SERVER_ID_FILE}.")
    with os.fdopen(fd, "w") as out:
        out.write(uuid.uuid4().hex + "\n")
    try:
        os.link(temp, path)  # the first server to start wins; others read its id
    except FileExistsError:
        pass
    finally:
        os.unlink(temp)
    return path.read_text().strip()


def shares_data_dir(data_dir: Path, id_of_server: str) -> bool:
    try:
        return DataDir(data_dir).server_id.read_text().strip() == id_of_server
    except OSError:
        return False


def pack(work_dir: Path, skip: Iterable[str], out: BinaryIO) -> int:
    """Write the task directory's regular files, but the names in `skip` (at its top), as a
    tar.gz to `out`; links and special files stay behind. Returns how many files it packed."""
    skipped = set(skip)
    count = 0
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
        for directory, dirnames, filenames in os.walk(work_dir):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(directory, name)
                relative = path.relative_to(work_dir).as_posix()
                if relative in skipped or path.is_symlink() or not path.is_file():
                    continue
                tar.add(path, arcname=relative, recursive=False)
                count += 1
    return count


def showable(name: str) -> bool:
    """Whether a file name can be listed, sent in JSON and asked for in a URL: UTF-8 text
    (no lone surrogates, which undecodable bytes become) without control characters."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in name)


def _files_below(folder: Path) -> Iterator[os.DirEntry]:
    """The entries below `folder` that are not folders (links are not followed)."""
    todo = [str(folder)]
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    todo.append(entry.path)
                else:
                    yield entry


def unpack(archive: Path, task_dir: Path, staging_root: Path,
           max_unpacked: int = MAX_UNPACKED, keep: Iterable[str] = (),
           max_members: int = MAX_MEMBERS, max_files: int = MAX_KEPT_FILES) -> list[str]:
    """Unpack an outputs archive into `task_dir`, replacing files of the same name but those
    in `keep` (the task's uploaded inputs, which a rerun gets again); nothing is written
    unless every member is a plain file inside it, with a name a path can show, and the
    folder stays within `max_unpacked` bytes and `max_files` files (what an earlier archive
    left counts too). Files are unpacked under `staging_root` first (on the same file
    system). Returns the paths written."""
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=staging_root, prefix=f"outputs-{task_dir.name}-"))
    kept = frozenset(keep)
    try:
        total = members = 0

        def member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
            nonlocal total, members
            name = member.name
            members += 1
            if members > max_members:
                raise BadOutputs(f"the archive has more than {max_members} entries")
            if escapes(name):
                raise BadOutputs(f"member {name!r} would be written outside the task directory")
            if not showable(name):
                raise BadOutputs(f"member {name!r} has a name that is not UTF-8 text without "
                                 "control characters")
            if Path(name).as_posix() in kept:
                raise BadOutputs(f"member {name!r} is one of the task's uploaded inputs, which "
                                 "outputs may not replace")
            if member.isdir():
                return tarfile.data_filter(member, dest)
            if not member.isfile():
                raise BadOutputs(f"member {name!r} is not a plain file")
            total += member.size
            if total > max_unpacked:
                raise BadOutputs(f"the files come to more than {max_unpacked} bytes")
            return tarfile.data_filter(member, dest)

        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, filter=member_filter)
        except (tarfile.TarError, EOFError, OSError) as e:
            if is_disk_full(e):
                raise  # not the archive's fault: the caller says the disk is full
            raise BadOutputs(f"not a readable tar.gz: {e}") from None
        moves = [(source, task_dir / source.relative_to(staging))
                 for source in sorted(staging.rglob("*")) if source.is_file()]
        for _, target in moves:  # all checked before anything moves
            for place in (target, *target.parents):
                if place == task_dir:
                    break
                if place.is_symlink() or (place != target and place.is_file()):
                    raise BadOutputs(f"{target.relative_to(task_dir).as_posix()!r} would "
                                     "replace a link or go through a file")
            if target.is_dir() and not target.is_symlink():
                raise BadOutputs(f"{target.relative_to(task_dir).as_posix()!r} is a folder here")
        replaced = {target for _, target in moves}
        files, size = len(moves), total
        for entry in _files_below(task_dir):
            if Path(entry.path) not in replaced:
                files, size = files + 1, size + entry.stat(follow_symlinks=False).st_size
        if files > max_files:
            raise BadOutputs(f"the task's folder would hold {files} files; it keeps at most "
                             f"{max_files}")
        if size > max_unpacked:
            raise BadOutputs(f"the task's folder would hold {size} bytes; it keeps at most "
                             f"{max_unpacked}")
        for source, target in moves:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        return [target.relative_to(task_dir).as_posix() for _, target in moves]
    finally:
        shutil.rmtree(staging, ignore_errors=True)

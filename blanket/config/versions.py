"""A type's version: the sha256 of its name, its TOML bytes and every file it selects."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from blanket.config.problems import ConfigReads, open_regular_file
from blanket.config.selection import SelectedFile
from blanket.config.tasktype import TaskType

# filesystem clock tick without its (size, mtime) changing, so it is not trusted as cached.
RACY_WINDOW_NS = 50_000_000



class HashCache:
    """sha256 of files, remembered by (size, mtime_ns) so unchanged files are not re-read."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path, reads: ConfigReads | None = None) -> str:
        """The hex sha256 of `path`'s content. With `reads`, the size and mtime the file had
        when hashed are noted there: the bundle and the scan's fingerprint hold it to them."""
        before = os.stat(path)
        size, mtime = before.st_size, before.st_mtime_ns
        with self._lock:
            entry = self._entries.get(path)
        if entry and entry[:2] == (size, mtime):
            digest = entry[2]
        else:
            digest, size, mtime = _file_sha256(path)
            if mtime < time.time_ns() - RACY_WINDOW_NS:
                with self._lock:
                    self._entries[path] = (size, mtime, digest)
        if reads is not None:
            reads.note(path, size, mtime)
        return digest


def _file_sha256(path: Path) -> tuple[str, int, int]:
    """The sha256 of `path` and the size and mtime it had when opened (a save while it is
    read changes the mtime, so that one is never taken for what was read)."""
    digest = hashlib.sha256()
    with open_regular_file(path) as handle:
        info = os.fstat(handle.fileno())
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest(), info.st_size, info.st_mtime_ns


def version_hash(
    type_path: Path, task_type: TaskType, selected: list[SelectedFile] | tuple[SelectedFile, ...],
    cache: HashCache, reads: ConfigReads | None = None,
) -> str:
    """The version of a type: sha256 over its name, TOML bytes, its bases' TOML bytes (so
    editing a base gives every type that extends it a new version) and every selected file.

    Pass the `reads` the type was parsed with: the version is then of the very bytes the
    definition came from, even if a file was saved again since."""
    reads = ConfigReads() if reads is None else reads
    digest = hashlib.sha256()
    digest.update(f"blanket-version 1\0{task_type.name}\0".encode())
    digest.update(reads.data(Path(type_path)))
    for base in base_paths(type_path, task_type):
        digest.update(f"\0base\0{base.stem}\0".encode())
        digest.update(reads.data(base))
    for item in sorted(selected, key=lambda f: (f.section, f.relpath)):
        hashed = cache.sha256(item.abspath, reads)
        digest.update(f"\0{item.section}\0{item.relpath}\0{hashed}".encode())
    return digest.hexdigest()


def base_paths(type_path: Path, task_type: TaskType) -> list[Path]:
    """The files of the types `task_type` extends, nearest first (beside its own file)."""
    return [Path(type_path).parent / f"{name}.toml" for name in task_type.bases]

"""Which files a type's version covers, its content hash, and its bundle (HASH.tar.gz)."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import struct
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pathspec

from blanket.ignorefile import read_ignore_file
from blanket.problems import ConfigInvalid, ConfigProblem
from blanket.tasktype import FileSection, TaskType
from blanket.templating import TEMPLATEIGNORE
from blanket.typefile import compile_patterns, resolve_src

IGNORE_FILE = ".blanketignore"
NOT_UTF8_NAME = "the name is not UTF-8; rename it (or exclude it in .blanketignore)"
# A file changed within this window of being read may change again within the same
# filesystem clock tick without its (size, mtime) changing, so it is not trusted as cached.
RACY_WINDOW_NS = 50_000_000


class UnsafeBundle(Exception):
    """A bundle holds a member that could write outside its destination."""


@dataclass(frozen=True)
class SelectedFile:
    """One file a `[[files]]` section selects; `relpath` is relative to the section's base."""

    section: int
    relpath: str
    abspath: Path


@dataclass(frozen=True)
class Selection:
    """Selected files plus every path whose change could change the selection."""

    files: tuple[SelectedFile, ...]
    inputs: tuple[Path, ...]


def default_root(type_path: Path) -> Path:
    """The config root for a type file: the folder holding `types/`, else the file's folder."""
    folder = type_path.parent
    return folder.parent if folder.name == "types" else folder


def select_files(
    type_path: Path, task_type: TaskType, root: Path | None = None
) -> list[SelectedFile]:
    """Every file the type's `[[files]]` sections select, in section then path order."""
    return list(select_files_with_inputs(type_path, task_type, root).files)


def select_files_with_inputs(
    type_path: Path, task_type: TaskType, root: Path | None = None
) -> Selection:
    """Like `select_files`, also naming the folders and ignore files the selection read."""
    root = Path(os.path.abspath(root if root is not None else default_root(type_path)))
    rules = _IgnoreRules()
    base_dir = Path(os.path.abspath(type_path.parent))
    files: list[SelectedFile] = []
    for index, section in enumerate(task_type.files):
        files.extend(_select_section(index, section, base_dir, root, rules))
    inputs = tuple(Path(p) for p in sorted(rules.folders | rules.ignore_files))
    selection = Selection(tuple(files), inputs)
    _check_selection(task_type, selection)
    return selection


def _check_selection(task_type: TaskType, selection: Selection) -> None:
    """Refuse names a bundle cannot carry, and `.templateignore` files that would fail the
    worker, each as a problem of its own file."""
    problems: list[ConfigProblem] = []
    for item in selection.files:
        if not is_utf8(item.relpath):
            problems.append(ConfigProblem(str(item.abspath), NOT_UTF8_NAME))
        elif item.relpath == TEMPLATEIGNORE and task_type.files[item.section].render:
            try:
                read_ignore_file(item.abspath)
            except ConfigInvalid as invalid:
                problems.extend(invalid.problems)
    if problems:
        raise ConfigInvalid(problems)


def is_utf8(name: str) -> bool:
    """Whether a file name (decoded with surrogateescape) is UTF-8 text."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _select_section(
    index: int, section: FileSection, base_dir: Path, root: Path, rules: _IgnoreRules
) -> list[SelectedFile]:
    full = str(resolve_src(base_dir, section.src))
    if glob.has_magic(section.src):
        base = _glob_base(full)
        loops = rules.walk_folders(base, _top(base, root))
        if loops and "**" in section.src:
            raise ConfigInvalid([ConfigProblem(link, f"this link points to its own folder or "
                                               f"one above: the glob {section.src!r} would "
                                               "follow it without end; remove the link or "
                                               "write the glob without **") for link in loops])
        found = _glob_matches(full, base, _top(base, root), rules)
    elif os.path.isdir(full):
        base = full.rstrip(os.sep)
        found = rules.walk_files(base, _top(base, root))
    else:
        base = os.path.dirname(full)
        top = _top(base, root)
        rules.note_chain(base, top)
        found = {} if rules.ignored(full, top, False) else {os.path.basename(full): full}
    keep = _section_filter(section)
    return [SelectedFile(index, rel, Path(found[rel])) for rel in sorted(found) if keep(rel)]


def _top(base: str, root: Path) -> str:
    """Where ignore files start to apply: the config root, or the base when outside it."""
    top = str(root)
    return top if base == top or base.startswith(top + os.sep) else base


def _glob_base(pattern: str) -> str:
    """The leading folders of a glob pattern that hold no wildcard."""
    plain: list[str] = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        plain.append(part)
    return os.path.join(*plain) if plain else "."


def _glob_matches(pattern: str, base: str, top: str, rules: _IgnoreRules) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in glob.glob(pattern, recursive=True):
        if os.path.isdir(match):
            for path in rules.walk_files(match.rstrip(os.sep), top).values():
                found[_rel(path, base)] = path
        elif (
            os.path.isfile(match)
            and os.path.basename(match) != IGNORE_FILE
            and not rules.ignored(match, top, False)
        ):
            found[_rel(match, base)] = match
    return found


def _rel(path: str, base: str) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def _section_filter(section: FileSection) -> Callable[[str], bool]:
    include = compile_patterns(section.include) if section.include else None
    exclude = compile_patterns(section.exclude) if section.exclude else None

    def keep(rel: str) -> bool:
        if include is not None and not include.match_file(rel):
            return False
        return exclude is None or not exclude.match_file(rel)

    return keep


class _IgnoreRules:
    """`.blanketignore` files read as git reads `.gitignore`: each applies to its subtree."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._folder_ignored: dict[tuple[str, str], bool] = {}
        self._active_specs: dict[tuple[str, str], list[tuple[str, pathspec.GitIgnoreSpec]]] = {}
        self.folders: set[str] = set()
        self.ignore_files: set[str] = set()

    def _spec(self, folder: str) -> pathspec.GitIgnoreSpec | None:
        if folder not in self._specs:
            path = os.path.join(folder, IGNORE_FILE)
            self.ignore_files.add(path)
            self._specs[folder] = read_ignore_file(Path(path))
        return self._specs[folder]

    def _chain(self, folder: str, top: str) -> list[str]:
        """Folders from `top` down to `folder`, both included."""
        chain = [folder]
        while folder != top:
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            chain.append(parent)
            folder = parent
        return chain[::-1]

    def note_chain(self, folder: str, top: str) -> None:
        """Record the ignore files that apply in `folder`, so editing one is noticed."""
        for each in self._chain(folder, top):
            self._spec(each)

    def ignored(self, path: str, top: str, is_dir: bool) -> bool:
        """Whether `path` is ignored by the ignore files from `top` down to its folder."""
        parent = os.path.dirname(path)
        if parent != top and len(parent) > len(top) and self.folder_ignored(parent, top):
            return True
        result = False
        suffix = "/" if is_dir else ""
        for folder, spec in self._active(parent, top):
            rel = path[len(folder) + 1:].replace(os.sep, "/") + suffix
            verdict = spec.check_file(rel).include
            if verdict is not None:
                result = verdict
        return result

    def _active(self, folder: str, top: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
        """The ignore files that apply inside `folder`, outermost first."""
        key = (folder, top)
        if key not in self._active_specs:
            chain = ((each, self._spec(each)) for each in self._chain(folder, top))
            self._active_specs[key] = [(each, spec) for each, spec in chain if spec is not None]
        return self._active_specs[key]

    def folder_ignored(self, folder: str, top: str) -> bool:
        key = (folder, top)
        if key not in self._folder_ignored:
            self._folder_ignored[key] = self.ignored(folder, top, True)
        return self._folder_ignored[key]

    def walk_files(self, base: str, top: str) -> dict[str, str]:
        """Files under `base` not ignored, keyed by path relative to `base`."""
        found: dict[str, str] = {}
        if base != top and len(base) > len(top) and self.folder_ignored(base, top):
            return found
        self.note_chain(base, top)
        for folder, dirs, names in os.walk(base):
            self.folders.add(folder)
            self._spec(folder)
            dirs[:] = sorted(d for d in dirs
                             if not self.folder_ignored(os.path.join(folder, d), top))
            for name in names:
                path = os.path.join(folder, name)
                if name != IGNORE_FILE and not self.ignored(path, top, False):
                    found[path[len(base) + 1:].replace(os.sep, "/")] = path
        return found

    def walk_folders(self, base: str, top: str) -> list[str]:
        """Note every folder under `base`, so a new match under any of them is noticed.
        Returns the links to folders that hold them (which `**` would follow forever)."""
        self.note_chain(base, top)
        loops = []
        for folder, dirs, _names in os.walk(base):
            self.folders.add(folder)
            self._spec(folder)
            real = os.path.realpath(folder)
            for name in dirs:
                link = os.path.join(folder, name)
                if os.path.islink(link):
                    target = os.path.realpath(link)
                    if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
                        loops.append(link)
        return loops


class HashCache:
    """sha256 of files, remembered by (size, mtime_ns) so unchanged files are not re-read."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        """The hex sha256 of `path`'s content."""
        before = os.stat(path)
        with self._lock:
            entry = self._entries.get(path)
        if entry and entry[:2] == (before.st_size, before.st_mtime_ns):
            return entry[2]
        digest = _file_sha256(path)
        if before.st_mtime_ns < time.time_ns() - RACY_WINDOW_NS:
            with self._lock:
                self._entries[path] = (before.st_size, before.st_mtime_ns, digest)
        return digest


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def version_hash(
    type_path: Path, task_type: TaskType, selected: list[SelectedFile] | tuple[SelectedFile, ...],
    cache: HashCache,
) -> str:
    """The version of a type: sha256 over its name, TOML bytes and every selected file."""
    digest = hashlib.sha256()
    digest.update(f"blanket-version 1\0{task_type.name}\0".encode())
    digest.update(Path(type_path).read_bytes())
    for item in sorted(selected, key=lambda f: (f.section, f.relpath)):
        digest.update(f"\0{item.section}\0{item.relpath}\0{cache.sha256(item.abspath)}".encode())
    return digest.hexdigest()


def bundle_path(versions_dir: Path, version: str) -> Path:
    """Where the bundle of `version` lives."""
    return Path(versions_dir) / f"{version}.tar.gz"


def write_bundle(
    versions_dir: Path, hash: str, type_path: Path,
    selected: list[SelectedFile] | tuple[SelectedFile, ...],
) -> Path:
    """Write `versions_dir/HASH.tar.gz` once, atomically.

    Inside: `type.toml` and `files/<section index>/<relpath>` for each selected file.
    """
    target = bundle_path(versions_dir, hash)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{hash}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_tar_gz(raw, [("type.toml", Path(type_path))] + [
                (f"files/{item.section}/{item.relpath}", item.abspath) for item in selected
            ])
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def _write_tar_gz(raw: BinaryIO, members: list[tuple[str, Path]]) -> None:
    """A tar.gz of regular files, framed with tarfile's own headers.

    Writing headers and data through one buffer is several times faster than
    TarFile.addfile for many small files, which matters on a cold catalog load.
    """
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as packed, \
            io.BufferedWriter(packed, 1 << 16) as out:  # type: ignore[arg-type]
        for name, path in members:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                mode = 0o755 if stat.st_mode & 0o111 else 0o644
                out.write(tar_header(name, stat.st_size, int(stat.st_mtime), mode))
                copied = _copy(handle, out)
            if copied != stat.st_size:
                raise OSError(f"{path} changed size while being bundled; the next scan retries")
            out.write(bytes(-copied % tarfile.BLOCKSIZE))
        out.write(bytes(2 * tarfile.BLOCKSIZE))


_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s6s2s32s32s8s8s155s12x")


def tar_header(name: str, size: int, mtime: int, mode: int) -> bytes:
    """The tar header of a regular file, byte for byte what tarfile writes in USTAR format.

    tarfile builds headers generically at about 20 microseconds each; packing them here
    takes a few, which is most of a cold load's bundle time.
    """
    encoded = name.encode("utf-8")
    if len(encoded) > 100 or size >= 8**11 or not name.isascii():
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, mode
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    header = _USTAR.pack(
        encoded, b"%07o\0" % mode, b"%07o\0" % 0, b"%07o\0" % 0, b"%011o\0" % size,
        b"%011o\0" % mtime, b" " * 8, tarfile.REGTYPE, b"", tarfile.POSIX_MAGIC[:6],
        tarfile.POSIX_MAGIC[6:], b"", b"", b"", b"", b"",
    )
    return header[:148] + b"%06o\0 " % sum(header) + header[156:]


def _copy(source: BinaryIO, out: io.BufferedWriter) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        out.write(chunk)
        copied += len(chunk)
    return copied


def extract_bundle(bundle: Path, dest: Path) -> None:
    """Unpack a bundle into `dest`, refusing absolute paths, `..` and links."""
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(dest, filter=_strict_member)


def escapes(name: str) -> bool:
    """Whether an archive member's name would be written outside the folder it unpacks in."""
    return name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in PurePosixPath(name).parts


def _strict_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    name = member.name
    if escapes(name):
        raise UnsafeBundle(f"bundle member {name!r} would be written outside {dest}")
    if member.issym() or member.islnk():
        raise UnsafeBundle(f"bundle member {name!r} is a link; bundles hold plain files only")
    return tarfile.data_filter(member, dest)

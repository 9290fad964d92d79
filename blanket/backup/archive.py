"""The backup file: one tar.gz holding a manifest (`blanket-backup.json`, first), the store's
copy (`blanket.db`, SQLite only), `versions/HASH.tar.gz`, `tasks/TYPE/ID/...` and `tls/`.

It holds secret values and token hashes, so it is made mode 0600 from its first byte, as
FILE.partial (never an existing file), synced, then renamed: a crash never leaves a half
backup under its final name. Reading one back trusts nothing in it: only plain files and
folders, at names inside the allowed top-level entries, are ever written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from blanket.errors import BlanketError

FORMAT = "blanket-backup"
FORMAT_VERSION = 1
MANIFEST = "blanket-backup.json"
MAX_MANIFEST = 1024 * 1024
STORE_MEMBER = "blanket.db"
# What a backup may hold at its top level; anything else in an archive is refused.
TOP_FILES = frozenset({MANIFEST, STORE_MEMBER})
TOP_FOLDERS = frozenset({"versions", "tasks", "tls"})


class BadBackup(BlanketError):
    """A backup that cannot be made or restored, or a file that is not a blanket backup this
    version can restore; the message says why and what to do."""

    code = "bad_backup"


@dataclass
class Manifest:
    blanket: str  # the version that made it
    created: str  # ISO 8601, UTC
    store: str  # sqlite or postgresql
    schema: int | None  # the store's migration level (None: the database is not inside)
    database_included: bool
    with_tasks: bool  # every task's folder (else only those of tasks not yet ended)
    tasks: dict[str, int] = field(default_factory=dict)  # by state, in the copied store
    versions: int = 0
    task_dirs: int = 0
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, source: Path) -> Manifest:
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadBackup(f"{source}: its manifest is not JSON") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BadBackup(f"{source} is not a blanket backup (its manifest says another "
                            "format)")
        if data.get("format_version") != FORMAT_VERSION:
            raise BadBackup(f"{source} is a blanket backup of format "
                            f"{data.get('format_version')!r}; this blanket reads format "
                            f"{FORMAT_VERSION}: restore it with the blanket that made it "
                            f"({data.get('blanket', 'unknown')}) or a newer one")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise BadBackup(f"{source}: its manifest lacks a field ({e})") from None


class ArchiveWriter:
    """Writes a tar.gz (a backup, an export's files) to `path` through `path.partial`;
    `commit` makes it final (synced, renamed); `abort` removes the partial file."""

    def __init__(self, path: Path):
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        if path.exists() or path.is_symlink():
            raise BadBackup(f"{path} exists: name a new file (it is never overwritten)")
        # O_EXCL with mode 0600: the file is never readable by others, not even for a moment
        # and whatever the umask, and never a file (or link) someone put there before.
        try:
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
        except FileExistsError:
            raise BadBackup(f"{self.partial} exists: left by a run that did not finish, or "
                            "one still running; remove it if none is") from None
        self._raw = os.fdopen(fd, "wb")
        self.tar = tarfile.open(  # noqa: SIM115 (closed by commit or abort)
            fileobj=self._raw, mode="w:gz", compresslevel=6)
        self.count = 0  # files added, besides the manifest
        self._done = False

    def begin(self, manifest: Manifest) -> None:
        """The manifest, first, so that a reader knows what it has before anything else."""
        self.add_bytes(MANIFEST, manifest.to_bytes())

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
        self.tar.addfile(info, _Exactly(_BytesReader(data), len(data)))

    def add_file(self, path: Path, name: str) -> bool:
        """Add the regular file at `path` as `name` (links and special files are left out;
        a file that vanished meanwhile too). A file that grows while it is read is taken at
        the size it had when opened; one that shrinks is padded with NULs."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as e:
            if e.errno == errno.ELOOP:  # a link: links stay behind
                return False
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return False
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o600
            self.tar.addfile(info, _Exactly(f, st.st_size))
        self.count += 1
        return True

    def add_tree(self, root: Path, prefix: str, skip: frozenset[str] = frozenset()) -> int:
        """Every regular file under `root` (links not followed), as PREFIX/relative path;
        names in `skip` at its top are left out. Returns how many it added."""
        added = 0
        for folder, dirs, names in os.walk(root, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if folder == str(root) and name in skip:
                    continue
                relative = Path(folder, name).relative_to(root).as_posix()
                added += self.add_file(Path(folder, name), f"{prefix}/{relative}")
        return added

    def commit(self, check: Callable[[Path], object] | None = None) -> None:
        """End the archive, sync it, let `check` read it back (it raises if it is wrong), and
        only then give it its final name."""
        self.tar.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        if check is not None:
            check(self.partial)
        os.rename(self.partial, self.path)
        sync_folder(self.path.parent)
        self._done = True

    def abort(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):
                self.tar.close()
            with contextlib.suppress(Exception):
                self._raw.close()
            self.partial.unlink(missing_ok=True)
            self._done = True


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at:end], min(end, len(self.data))
        return chunk


class _Exactly:
    """`size` bytes of a file: what it holds up to there, NULs past its end (a log being
    truncated while it is copied must not break the archive)."""

    def __init__(self, f: Any, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= n
        return data + b"\0" * (n - len(data))


def sync_folder(folder: Path) -> None:
    """fsync a folder: the names made or renamed in it are on disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def safe_name(name: str) -> str:
    """The member name, checked: relative, no `..`, `.` or empty parts, under one of the
    allowed top-level entries. Raises BadBackup naming the member otherwise."""
    if not name or "\0" in name or name.startswith("/") or os.path.isabs(name):
        raise BadBackup(f"member {name!r} has an absolute or odd name: refused")
    name = name.rstrip("/")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadBackup(f"member {name!r} would be written outside the data dir: refused")
    if name not in TOP_FILES and parts[0] not in TOP_FOLDERS:
        raise BadBackup(f"member {name!r} is not part of a blanket backup: refused")
    return name


@contextlib.contextmanager
def open_backup(path: Path) -> Iterator[tuple[tarfile.TarFile, Manifest]]:
    """The backup at `path`, opened, with its manifest (its first member)."""
    try:
        tar = tarfile.open(path, "r:gz")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise BadBackup(f"{path}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BadBackup(f"{path} is not a blanket backup (not a readable tar.gz: {e})") from None
    with tar:
        try:
            first = tar.next()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BadBackup(f"{path} is not a blanket backup (not a readable tar.gz: {e})") \
                from None
        if first is None or first.name != MANIFEST or not first.isfile() \
                or first.size > MAX_MANIFEST:
            raise BadBackup(f"{path} is not a blanket backup (it does not begin with "
                            f"{MANIFEST})")
        reader = tar.extractfile(first)
        assert reader is not None
        yield tar, Manifest.from_bytes(reader.read(), path)


def members(tar: tarfile.TarFile, source: Path) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Each member after the manifest with its checked name; plain files and folders only."""
    seen: set[str] = set()
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BadBackup(f"{source} is damaged: {e}") from None
        if member is None:
            return
        name = safe_name(member.name)
        if member.issparse():  # a few bytes that unpack to any size: no backup makes one
            raise BadBackup(f"member {member.name!r} is a sparse file; a backup holds plain "
                            "files only: refused")
        if not (member.isfile() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "a special file"
            raise BadBackup(f"member {member.name!r} is {kind}; a backup holds plain files "
                            "only: refused")
        if name in seen or name == MANIFEST:
            raise BadBackup(f"member {member.name!r} comes twice: refused")
        seen.add(name)
        yield member, name


def copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, out: IO[bytes]) -> None:
    reader = tar.extractfile(member)
    assert reader is not None
    while chunk := reader.read(1024 * 1024):
        out.write(chunk)

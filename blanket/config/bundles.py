"""A version's bundle, HASH.tar.gz: written once by the server, fetched and unpacked by the
workers that run the version's tasks."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from blanket.config.problems import open_regular_file
from blanket.config.selection import SelectedFile


class UnsafeBundle(Exception):
    """A bundle holds a member that could write outside its destination."""



def bundle_path(versions_dir: Path, version: str) -> Path:
    """Where the bundle of `version` lives."""
    return Path(versions_dir) / f"{version}.tar.gz"


def write_bundle(
    versions_dir: Path, hash: str, type_toml: Path | bytes,
    selected: list[SelectedFile] | tuple[SelectedFile, ...],
    bases: Sequence[Path | tuple[str, bytes]] = (),
    as_hashed: Callable[[Path], tuple[int, int] | None] = lambda _: None,
) -> Path:
    """Write `versions_dir/HASH.tar.gz` once, atomically.

    Inside: `type.toml` (the file, or the bytes the version was hashed from when the
    caller holds them: the file may have changed or gone since), `bases/NAME.toml` for
    each type it extends (a file, or its file name and the bytes hashed), and
    `files/<section index>/<relpath>` for each selected file. A file whose size and mtime
    are no longer those `as_hashed` gives (when it was hashed) is OSError: the version would
    not be of what the bundle holds; the next scan builds it again.
    """
    target = bundle_path(versions_dir, hash)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{hash}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_tar_gz(raw, [("type.toml", type_toml if isinstance(type_toml, bytes)
                                 else Path(type_toml))] + [
                (f"bases/{base.name}", base) if isinstance(base, Path) else
                (f"bases/{base[0]}", base[1]) for base in bases] + [
                (f"files/{item.section}/{item.relpath}", item.abspath) for item in selected
            ], as_hashed)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return target


def _write_tar_gz(raw: BinaryIO, members: list[tuple[str, Path | bytes]],
                  as_hashed: Callable[[Path], tuple[int, int] | None] = lambda _: None) -> None:
    """A tar.gz of regular files (read from a path, or given as bytes), framed with
    tarfile's own headers.

    Writing headers and data through one buffer is several times faster than
    TarFile.addfile for many small files, which matters on a cold catalog load.
    """
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as packed, \
            io.BufferedWriter(packed, 1 << 16) as out:  # type: ignore[arg-type]
        for name, path in members:
            if isinstance(path, bytes):
                out.write(tar_header(name, len(path), int(time.time()), 0o644))
                out.write(path)
                out.write(bytes(-len(path) % tarfile.BLOCKSIZE))
                continue
            with open_regular_file(path) as handle:
                stat = os.fstat(handle.fileno())
                hashed = as_hashed(path)
                if hashed is not None and hashed != (stat.st_size, stat.st_mtime_ns):
                    raise OSError(f"{path} changed after its version was worked out; the "
                                  "next scan builds it again")
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

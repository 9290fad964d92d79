"""Problems found in configuration files, reported with file, line and what to change."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in one file. `line` is None when the parser cannot tell."""

    file: str
    message: str
    line: int | None = None

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 reaches Python as lone surrogates, which no terminal
        # or JSON reader takes: show its bytes as \xNN escapes instead.
        object.__setattr__(self, "file", printable(self.file))
        object.__setattr__(self, "message", printable(self.message))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


class ConfigInvalid(Exception):
    """Raised by a config parser with every problem it found."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def printable(text: str) -> str:
    """`text` with the undecodable bytes of a file name (lone surrogates) as \\xNN."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace").encode("utf-8", "replace").decode()
    return text


MAX_CONFIG_BYTES = 4 << 20  # a config file is a page of TOML; anything this big is a mistake


class ConfigReads:
    """The bytes of each config file one build reads, each read once, with the size and
    mtime it had then: the parse, the version hash and the bundle all see the same bytes
    even if the file is saved again meanwhile (and the next scan sees that it was)."""

    def __init__(self) -> None:
        # Keyed by the path as text: many thousands of look-ups in a cold scan, and a
        # PurePath's hash is slow.
        self._files: dict[str, tuple[bytes, int, int]] = {}
        self._noted: dict[str, tuple[int, int]] = {}  # files hashed, not kept

    def data(self, path: Path) -> bytes:
        """The bytes of `path` as first read; OSError if it cannot be read as a regular
        file of at most MAX_CONFIG_BYTES."""
        key = os.fspath(path)
        found = self._files.get(key)
        if found is None:
            found = self._files[key] = _read_regular(Path(key))
        return found[0]

    def text(self, path: Path) -> str:
        """The UTF-8 text of `path` as first read; ConfigInvalid says why it cannot be."""
        try:
            data = self.data(path)
        except OSError as exc:
            if exc.errno == errno.EFBIG:
                message = f"{exc.strerror}; keep large content in files the type selects"
            elif exc.errno == errno.EINVAL:
                message = "not a regular file (a FIFO, a device or a folder); config files " \
                          "must be regular files"
            else:
                message = f"cannot read the file: {exc.strerror or exc}; check that it is a " \
                          "readable file"
            raise ConfigInvalid([ConfigProblem(str(path), message)]) from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigInvalid([ConfigProblem(
                str(path), f"byte {data[exc.start:exc.start + 1]!r} is not UTF-8 text; save "
                           "the file as UTF-8", line)]) from exc

    def note(self, path: Path, size: int, mtime_ns: int) -> None:
        """Note the size and mtime a file had when it was read by someone else (hashed)."""
        self._noted[os.fspath(path)] = (size, mtime_ns)

    def stat(self, path: Path) -> tuple[int, int] | None:
        """(size, mtime_ns) of `path` when it was read (or noted), or None if it was not."""
        key = os.fspath(path)
        found = self._files.get(key)
        return found[1:] if found is not None else self._noted.get(key)


def open_regular_file(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file (a link followed); OSError if it is
    a FIFO, socket or device, which would hang a read or never end. Opened without blocking,
    so a FIFO's open does not wait for a writer (a regular file's reads never block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, socket or device)",
                          str(path))
        return open(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_regular(path: Path) -> tuple[bytes, int, int]:
    with open_regular_file(path) as handle:
        info = os.fstat(handle.fileno())
        if info.st_size > MAX_CONFIG_BYTES:
            raise OSError(errno.EFBIG, f"the file has {info.st_size} bytes, more than the "
                                       f"{MAX_CONFIG_BYTES} a config file may have")
        data = handle.read(MAX_CONFIG_BYTES + 1)  # it may have grown since
    if len(data) > MAX_CONFIG_BYTES:
        raise OSError(errno.EFBIG, f"the file has more than the {MAX_CONFIG_BYTES} bytes a "
                                   "config file may have")
    return data, info.st_size, info.st_mtime_ns


def read_config_text(path: Path, reads: ConfigReads | None = None) -> str:
    """The UTF-8 text of a config file; ConfigInvalid (caused by the OSError or the decode
    error) says why it cannot be read, with the line of a byte that is not UTF-8. With
    `reads`, a file read before in the same build gives the same text."""
    return (reads or ConfigReads()).text(path)

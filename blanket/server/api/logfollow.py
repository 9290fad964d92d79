"""Reading a task's log as it grows, for a followed log (`GET /task/ID/log/STREAM?follow`).

The log lives in the task's directory, where the task itself writes: it may swap the log for
a symlink to any file the server can read, or make it gigabytes long (a sparse file costs no
disk) with no newline. So the log is opened as any task file is (what was opened is checked,
not the path), kept open, and never opened again through a symlink; it is read a bounded
chunk at a time, and a line longer than LINE_LIMIT is sent in parts."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from blanket.errors import InvalidInput, NotFound
from blanket.server.api.taskfiles import Masker, open_task_file

READ_LIMIT = 1024 * 1024  # bytes of the log read at a time
LINE_LIMIT = 1024 * 1024  # bytes of one line sent as one event; a longer one goes in parts


class LogReader:
    """The log at `path` (in its task's directory), read from where the last read ended.
    The file it opened stays open; the path is opened again only when it names another
    regular file (the log made anew), never when it became a symlink or something else."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._file: BinaryIO | None = None
        self._identity: tuple[int, int] | None = None

    def read(self, most: int = READ_LIMIT) -> bytes:
        """Up to `most` bytes written since the last read; b"" when none (or no log yet)."""
        self._reopen_if_replaced()
        if self._file is None:
            return b""
        if os.fstat(self._file.fileno()).st_size < self.offset:
            self.offset = 0  # cut short in place (an attempt starting again): read it anew
        self._file.seek(self.offset)
        chunk = self._file.read(most)
        self.offset += len(chunk)
        return chunk

    def _reopen_if_replaced(self) -> None:
        try:
            info = os.lstat(self.path)
        except OSError:  # not there (yet, or any more): read on what is open
            return
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) == self._identity:
            return
        try:
            opened, opened_info = open_task_file(self.path.parent, self.path.name)
        except (NotFound, InvalidInput):  # swapped for something else meanwhile
            return
        self.close()
        self._file, self._identity = opened, (opened_info.st_dev, opened_info.st_ino)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LineSplitter:
    """Bytes of a log in, its lines out (masked, without their newline); a line longer than
    `limit` comes out in parts, so what is held back never grows past `limit` plus a secret
    and a read. A secret the cut would split goes whole into the part before it."""

    def __init__(self, masker: Masker, limit: int = LINE_LIMIT):
        self.masker = masker
        self.limit = limit
        self.partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        out = [self.masker.mask(line) for line in lines]
        while len(self.partial) >= self.limit + self.masker.longest:
            cut = self._cut(self.partial)
            out.append(self.masker.mask(self.partial[:cut]))
            self.partial = self.partial[cut:]
        return out

    def rest(self) -> bytes | None:
        """What is left once the log ended (a last line without its newline), masked."""
        rest, self.partial = self.partial, b""
        return self.masker.mask(rest) if rest else None

    def _cut(self, data: bytes) -> int:
        """Where to end a part: at `limit`, or after a secret that spans it. `data` holds at
        least `limit + longest` bytes, so such a secret is whole in it."""
        cut = self.limit
        if self.masker.pattern is not None:
            for found in self.masker.pattern.finditer(data):
                if found.start() >= cut:
                    break
                cut = max(cut, found.end())
        return cut

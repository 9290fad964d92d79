"""Serving the files of a task's directory safely.

A task's files are made by whoever submitted or ran it, so they are served so that none can
run in the browser on the server's origin (text as text/plain, a few image types as
themselves, anything else as a download, never sniffed, always sandboxed), and no symlink
is followed out of the task's directory, even one swapped in while the file is opened.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Iterable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import bottle

from blanket.errors import InvalidInput, NotFound
from blanket.models import Task
from blanket.outputs import showable
from blanket.taskdir import PRIVATE_NAMES

MASK = b"***"
MIN_MASKED = 3  # shorter secret values are not hunted for in text: they would mask everything
CHUNK = 1024 * 1024
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "text/x-python",
                        "text/x-sh", "application/x-sh", "application/json", "application/toml",
                        "application/yaml", "text/yaml", "text/tab-separated-values"})


class Masker:
    """Replaces a task's secret values (and its attempt token) with *** in text served from
    its directory, its logs above all: what a task prints is shown, its secrets are not."""

    def __init__(self, values: Iterable[str]):
        found = sorted({v.encode() for v in values if len(v.encode()) >= MIN_MASKED},
                       key=len, reverse=True)
        self.pattern = re.compile(b"|".join(map(re.escape, found))) if found else None
        self.longest = len(found[0]) if found else 0

    @classmethod
    def of(cls, task: Task) -> Masker:
        values = [task.environment[n] for n in task.secrets if n in task.environment]
        return cls([*values, *([task.token] if task.token else [])])

    def __bool__(self) -> bool:
        return self.pattern is not None

    def mask(self, data: bytes) -> bytes:
        return self.pattern.sub(MASK, data) if self.pattern else data

    def mask_from(self, data: bytes, cut: int) -> bytes:
        """`data[cut:]` masked, matching secrets in the whole of `data`: one that starts
        before `cut` and ends after it is masked whole, not shown from `cut` on."""
        if not self.pattern:
            return data[cut:]
        out, position = [], cut
        for found in self.pattern.finditer(data):
            if found.end() <= cut:
                continue
            out += [data[position:max(position, found.start())], MASK]
            position = found.end()
        out.append(data[position:])
        return b"".join(out)

    def stream(self, source: BinaryIO) -> Iterator[bytes]:
        """`source` read in chunks, masked; a value cut in two by a chunk's end is held back
        until the next chunk completes it."""
        assert self.pattern is not None
        carry = b""
        with source:
            while chunk := source.read(CHUNK):
                buffer = carry + chunk
                out, position = [], 0
                for found in self.pattern.finditer(buffer):
                    out += [buffer[position:found.start()], MASK]
                    position = found.end()
                tail = buffer[position:]
                cut = max(0, len(tail) - (self.longest - 1))
                out.append(tail[:cut])
                carry = tail[cut:]
                yield b"".join(out)
        yield self.mask(carry)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _real_root(root: Path) -> str:
    """Where the task directory really is. Its own name is not resolved: a task that swaps
    its directory for a symlink to elsewhere does not move the root there."""
    return os.path.join(os.path.realpath(root.parent), root.name)


def list_task_files(root: Path) -> list[dict]:
    """The regular files below `root` (symlinks only where they stay inside it), but those
    whose path is not UTF-8 text without control characters: no URL asks for them, and a
    page building one would fail on them (outputs with such names are refused)."""
    if root.is_symlink() or not root.is_dir():
        return []
    real_root = _real_root(root)
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            if folder == str(root) and name in PRIVATE_NAMES:
                continue
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if not _inside(real, real_root) or not os.path.isfile(real):
                continue
            relative = Path(path).relative_to(root).as_posix()
            if showable(relative):
                found.append({"path": relative, "size": os.stat(real).st_size})
    return found


def open_task_file(root: Path, relative: str) -> tuple[BinaryIO, os.stat_result]:
    """One regular file of the task directory `root`, opened: never through a link that
    leads outside it, even one a task swaps in while it is opened (what was opened is
    checked, not the path); never a private name."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or "\x00" in relative:
        raise InvalidInput(f"{relative!r} is outside the task directory")
    if len(parts) == 1 and parts[0] in PRIVATE_NAMES:  # parts: `./NAME` is NAME too
        raise NotFound(f"{parts[0]!r} stays with the worker (it may hold secret values)")
    real_root = _real_root(root)
    try:
        fd = os.open(root / relative, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(f"the task has no file {relative!r}") from None
    except OSError as e:
        raise NotFound(f"the task's file {relative!r} cannot be read: {e.strerror}") from None
    try:
        # what was really opened, links resolved (named "... (deleted)" once it is removed)
        opened = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
        info = os.fstat(fd)
        if not _inside(opened, real_root):
            raise InvalidInput(f"{relative!r} leads outside the task directory")
        if os.path.dirname(opened) == real_root and os.path.basename(opened) in PRIVATE_NAMES:
            raise NotFound(f"{relative!r} stays with the worker (it may hold secret values)")
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"{relative!r} is not a file; list the files with /task/ID/files/")
        return os.fdopen(fd, "rb"), info
    except BaseException:
        os.close(fd)
        raise


def serve_task_file(root: Path, relative: str,
                    masker: Masker | None = None) -> bottle.HTTPResponse:
    """One file of the task directory `root`, as a response that is safe to open; text has
    the task's secrets masked."""
    body, info = open_task_file(root, relative)
    headers = {"Last-Modified": formatdate(info.st_mtime, usegmt=True),
               "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox; default-src 'none'",
               **_presentation(Path(relative).name)}
    if masker and headers["Content-Type"].startswith("text/"):
        return bottle.HTTPResponse(masker.stream(body), status=200, headers=headers)
    headers["Content-Length"] = str(info.st_size)
    return bottle.HTTPResponse(body, status=200, headers=headers)


def read_tail(root: Path, relative: str, masker: Masker, limit: int) -> tuple[bytes, int]:
    """The last `limit` bytes of a file of the task directory (opened as `open_task_file`
    does) with the task's secrets masked, and the file's size. A secret cut by where the
    tail starts is masked whole: the bytes before are read too, for the match, then dropped."""
    body, info = open_task_file(root, relative)
    with body:
        start = max(0, info.st_size - limit)
        read_from = max(0, start - max(0, masker.longest - 1))
        body.seek(read_from)
        data = body.read(info.st_size - read_from)
    return masker.mask_from(data, start - read_from), info.st_size


def _presentation(name: str) -> dict[str, str]:
    """Content-Type, and Content-Disposition for what is downloaded rather than shown."""
    guessed = mimetypes.guess_type(name)[0]
    if guessed is None or guessed in TEXT_TYPES:
        return {"Content-Type": "text/plain; charset=utf-8"}
    if guessed in INLINE_IMAGES:
        return {"Content-Type": guessed}
    return {"Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}

"""Serving the files of a task's directory safely.

A task's files are made by whoever submitted or ran it, so they are served so that none can
run in the browser on the server's origin (text as text/plain, a few image types as
themselves, anything else as a download, never sniffed, always sandboxed), and no symlink
is followed out of the task's directory, even one swapped in while the file is opened.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

import bottle

from blanket.errors import InvalidInput, NotFound

INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
TEXT_TYPES = frozenset({"text/plain", "text/csv", "text/markdown", "text/x-python",
                        "text/x-sh", "application/x-sh", "application/json", "application/toml",
                        "application/yaml", "text/yaml", "text/tab-separated-values"})


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _real_root(root: Path) -> str:
    """Where the task directory really is. Its own name is not resolved: a task that swaps
    its directory for a symlink to elsewhere does not move the root there."""
    return os.path.join(os.path.realpath(root.parent), root.name)


def list_task_files(root: Path) -> list[dict]:
    """The regular files below `root` (symlinks only where they stay inside it)."""
    if root.is_symlink() or not root.is_dir():
        return []
    real_root = _real_root(root)
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if not _inside(real, real_root) or not os.path.isfile(real):
                continue
            found.append({"path": Path(path).relative_to(root).as_posix(),
                          "size": os.stat(real).st_size})
    return found


def serve_task_file(root: Path, relative: str) -> bottle.HTTPResponse:
    """One file of the task directory `root`, as a response that is safe to open."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or "\x00" in relative:
        raise InvalidInput(f"{relative!r} is outside the task directory")
    real_root = _real_root(root)
    try:
        fd = os.open(root / relative, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(f"the task has no file {relative!r}") from None
    except OSError as e:
        raise NotFound(f"the task's file {relative!r} cannot be read: {e.strerror}") from None
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")  # what was really opened, links resolved
        info = os.fstat(fd)
        if not _inside(opened, real_root):
            raise InvalidInput(f"{relative!r} leads outside the task directory")
        if not stat.S_ISREG(info.st_mode):
            raise NotFound(f"{relative!r} is not a file; list the files with /task/ID/files/")
        body = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    headers = {"Content-Length": str(info.st_size),
               "Last-Modified": formatdate(info.st_mtime, usegmt=True),
               "X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "sandbox; default-src 'none'"}
    headers.update(_presentation(Path(relative).name))
    return bottle.HTTPResponse(body, status=200, headers=headers)


def _presentation(name: str) -> dict[str, str]:
    """Content-Type, and Content-Disposition for what is downloaded rather than shown."""
    guessed = mimetypes.guess_type(name)[0]
    if guessed is None or guessed in TEXT_TYPES:
        return {"Content-Type": "text/plain; charset=utf-8"}
    if guessed in INLINE_IMAGES:
        return {"Content-Type": guessed}
    return {"Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}

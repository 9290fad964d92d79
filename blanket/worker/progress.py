"""A task's progress: what it writes to its `.progress` file (a percentage, then an optional
message), read whenever the file changes."""

from __future__ import annotations

import re
from pathlib import Path

_PROGRESS = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*%?\s*(.*)")


def parse_progress(text: str) -> tuple[int, str | None] | None:
    """(percent clamped to 0-100, message or None) from a .progress file, or None if unreadable."""
    lines = text.splitlines()
    match = _PROGRESS.fullmatch(lines[0]) if lines else None
    if match is None:
        return None
    value = max(0, min(100, int(float(match[1]))))
    message = match[2].strip() or (lines[1].strip() if len(lines) > 1 else "")
    return value, message or None


class ProgressWatcher:
    """Notices changes to a task's `.progress` file by its inode, mtime and size."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._last: tuple[int, str | None] | None = None

    def poll(self) -> tuple[int, str | None] | None:
        """The progress if it changed since the last poll, else None."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            progress = parse_progress(self.path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None
        if progress is None or progress == self._last:
            return None
        self._last = progress
        return progress

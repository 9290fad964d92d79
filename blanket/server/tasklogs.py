"""The logs a task writes in its folder (stdout, stderr, output), and the server's copy of a
remote worker's: appended chunk by chunk, each from the offset the worker says."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from blanket.errors import BlanketError, NotFound
from blanket.models import Task
from blanket.outputs import MAX_UNPACKED
from blanket.taskdir import LOG_FILES, log_file

MAX_LOG_COPY = MAX_UNPACKED  # bytes of live logs a remote worker sends: what outputs may be


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class TaskLogs:
    """Where each task's logs are. `task_dir` gives a task's folder (type name, id)."""

    def __init__(self, task_dir: Callable[[str, int], Path]):
        self.task_dir = task_dir
        self._appending = threading.Lock()  # one append at a time: size check and write go together

    def path(self, task: Task, stream: str) -> Path:
        """The file of one of the task's logs; NotFound for a stream that is no log."""
        name = log_file(stream)
        if name is None:
            raise NotFound(f"no log {stream!r}; use stdout, stderr or output")
        return self.task_dir(task.type, task.id) / name

    def append(self, path: Path, start: int, data: bytes, most: int = MAX_LOG_COPY) -> int:
        """Add the bytes of `data` (which starts at `start` of the log) that the copy at
        `path` lacks: a resent chunk is harmless, a chunk beyond the end is refused (409:
        send again from 0), and so is one past `most` bytes (413: the rest stays with the
        worker, and comes with the outputs). Gives the copy's length, where the next chunk
        starts."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._appending, open(path, "ab") as log:
            size = log.tell()
            if start > size:
                raise BlanketError(f"the server has {size} bytes of this log, not {start}; "
                                   "send it again from offset 0", code="gap", status=409)
            others = sum(_size(path.with_name(name)) for name in LOG_FILES if name != path.name)
            if start + len(data) > size and others + start + len(data) > most:
                raise BlanketError(f"the server keeps at most {most} bytes of a task's live "
                                   "logs together; the rest stays with the worker",
                                   code="too_large", status=413)
            if start + len(data) > size:
                log.write(data[size - start:])
                size = start + len(data)
        return size

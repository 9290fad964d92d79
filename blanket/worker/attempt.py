"""One claimed attempt of one task as the worker holds it, and how its failures are worded
for the server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from blanket import protocol as P
from blanket.config.bundles import UnsafeBundle
from blanket.config.tasktype import TaskType
from blanket.errors import BlanketError
from blanket.models import Task
from blanket.worker.runner import TaskRun

log = structlog.get_logger("blanket.worker")


class Attempt:
    """One claimed attempt of one task as the worker sees it."""

    def __init__(self, task: Task, task_type: TaskType):
        self.task = task
        self.task_type = task_type
        self.run: TaskRun | None = None
        self.handback = False
        self.superseded: str | None = None
        self.ended = threading.Event()
        self.ran = False  # the command has ended: its result stands, it is never handed back
        self.unreported_start: P.LateStart | None = None

    @property
    def token(self) -> str:
        return self.task.token or ""

    def started(self, pid: int, directory: Path) -> None:
        """The process started: kept to send with the end report, unless the task runs long
        enough to be reported on its own (ReportQueue.started)."""
        self.unreported_start = P.LateStart(pid=pid, directory=str(directory), at=time.time())

    def stop(self, *, handback: bool = False, at_once: bool = False) -> None:
        """End the run early; with `handback`, report it so the server queues it again;
        `at_once` kills its processes without their grace time."""
        if handback and not self.superseded and not self.ran:
            self.handback = True
        if self.run is not None:
            self.run.stop(at_once=at_once)

    def supersede(self, reason: str) -> None:
        """The server moved on (the task was lost and retried, or removed): stop, report nothing."""
        if self.superseded is None:
            self.superseded = reason
            log.warning("attempt superseded; killing it and dropping its result",
                        task=self.task.id, attempt=self.task.attempt, reason=reason)
        # Another attempt may run already: this one's processes must not run beside it.
        self.stop(at_once=True)


def as_utf8(text: str | None) -> str | None:
    """`text` with anything UTF-8 cannot encode (lone surrogates) escaped, so a report
    carrying it is never refused."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def explain(exc: BaseException) -> str:
    """What went wrong, in words for the task's error."""
    message = str(exc) or type(exc).__name__
    return as_utf8(message if isinstance(exc, BlanketError | OSError | UnsafeBundle)
                   else f"{type(exc).__name__}: {message}") or ""

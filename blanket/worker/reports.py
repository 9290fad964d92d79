"""The worker's reports on a running attempt (its start, its progress, claims it gives
back), sent in order off the runner's thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import structlog

from blanket import protocol as P
from blanket.errors import BlanketError
from blanket.worker.attempt import Attempt
from blanket.worker.client import GaveUp, Superseded, WorkerClient

log = structlog.get_logger("blanket.worker")
PROGRESS_PATIENCE = 5.0  # a progress report that cannot go soon is overtaken by the next


class ReportQueue(threading.Thread):
    """Sends started and progress reports in order, off the runner's thread."""

    def __init__(self, server: WorkerClient):
        super().__init__(name="reports", daemon=True)
        self.server = server
        self.items: queue.Queue[Callable[[], None]] = queue.Queue()

    def started(self, attempt: Attempt) -> None:
        """Report the start of a task that did not end at once (a short task's start rides
        on its end report: no hand-off between threads for it)."""
        start, attempt.unreported_start = attempt.unreported_start, None
        if start is not None:
            report = P.Started(token=attempt.token, pid=start.pid, directory=start.directory,
                               at=start.at)
            self._put(attempt, "started", lambda: self.server.started(attempt.task.id, report))

    def progress(self, attempt: Attempt, value: float, message: str | None) -> None:
        report = P.Progress(token=attempt.token, progress=value, message=message)
        self._put(attempt, "progress", lambda: self.server.progress(attempt.task.id, report,
                                                                     PROGRESS_PATIENCE))

    def call(self, send: Callable[[], None]) -> None:
        """Run `send` in turn with the reports (it handles its own errors)."""
        self.items.put(send)

    def _put(self, attempt: Attempt, what: str, send: Callable[[], None]) -> None:
        self.items.put(lambda: self._send(attempt, what, send))

    def _send(self, attempt: Attempt, what: str, send: Callable[[], None]) -> None:
        if attempt.superseded:
            return
        try:
            send()
        except Superseded as e:
            attempt.supersede(f"{what} report refused: {e}")
        except (GaveUp, BlanketError, ValueError) as e:  # ValueError: text JSON cannot carry
            log.warning("report not delivered", task=attempt.task.id, report=what,
                        problem=str(e))

    def run(self) -> None:
        while True:
            send = self.items.get()
            try:
                send()
            except Exception:  # a bug: the reports behind it must still go
                log.exception("report failed")
            finally:
                self.items.task_done()

    def flush(self) -> None:
        """Wait until every queued report was sent (or given up)."""
        self.items.join()

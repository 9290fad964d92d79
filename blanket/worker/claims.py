"""The claims a worker slot holds beside the task it runs, and the end reports that bring
them: with a reserve in hand, a task's end report waits until the reserve's process has
started, then goes out on the slot's own thread while the reserve runs, and asks for the
next reserve; without one, it goes at once and its answer brings the next task and a
reserve. No thread is handed anything per task."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

import msgspec
import structlog

from blanket import protocol as P
from blanket.errors import BlanketError
from blanket.worker.attempt import Attempt, as_utf8
from blanket.worker.client import GaveUp, Superseded, WorkerClient
from blanket.worker.exchanger import Exchanger
from blanket.worker.reports import ReportQueue
from blanket.worker.runner import RunResult
from blanket.worker.shipping import OUTPUT_PATIENCE

log = structlog.get_logger("blanket.worker")


class Claims:
    """Claimed tasks in hand (the next one an end report brought, a reserve to start the
    moment the current task ends) and the end report on its way."""

    def __init__(self, server: WorkerClient, reports: ReportQueue, stopping: threading.Event,
                 exchanger: Exchanger, worker_id: Callable[[], str]):
        self.server = server
        self.exchanger = exchanger
        self.worker_id = worker_id  # the slot's id, known once it registered
        self.reports = reports
        self.stopping = stopping
        self._held: deque[P.Claimed] = deque()
        self._lock = threading.Lock()
        self._long = False  # the current task outlived the runner's first poll
        # An end report held until the reserve it names has started.
        self._pending: tuple[Attempt, RunResult, P.Finished] | None = None

    def take(self) -> P.Claimed | None:
        """A task in hand, else one the end report on its way brings."""
        with self._lock:
            if self._held:
                return self._held.popleft()
        self.send_pending()
        with self._lock:
            return self._held.popleft() if self._held else None

    def running_long(self, long: bool) -> None:
        """Whether the current task outlived the runner's first poll: a reserve must then
        not wait behind it while another worker could run it."""
        with self._lock:
            self._long = long
        if long:
            self.release_all()

    def hold(self, claims: list[P.Claimed]) -> None:
        """Keep claimed tasks for later; give them straight back while the current task
        runs long or when this worker is stopping."""
        with self._lock:
            if not (self._long or self.stopping.is_set()):
                self._held.extend(claims)
                return
        for claim in claims:
            self.release(claim)

    def release_all(self) -> None:
        with self._lock:
            claims, self._held = list(self._held), deque()
        for claim in claims:
            self.release(claim)

    def release(self, claim: P.Claimed) -> None:
        """Give a claim back to the queue, in turn with the reports."""
        task = claim.task

        def send() -> None:
            try:
                self.server.release(task.id, task.token or "", OUTPUT_PATIENCE)
                log.info("reserve given back", task=task.id)
            except Superseded as e:  # it was stopped or removed meanwhile
                log.info("reserve already gone", task=task.id, reason=str(e))
            except (GaveUp, BlanketError) as e:  # the reaper queues it again in time
                log.warning("reserve not given back", task=task.id, problem=str(e))

        self.reports.call(send)

    def send_pending(self) -> None:
        """Send the end report held for the moment the reserve started (now, or it will not
        start: the answer then brings what is next)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        attempt, result, report = pending
        if self.stopping.is_set():  # the reserve will not run: ask for nothing
            report = msgspec.structs.replace(report, claim_next=0, running=None)
        self._report_end(attempt, result, report)

    def finish(self, attempt: Attempt, result: RunResult) -> None:
        """Report the end; see the module's docstring."""
        task = attempt.task
        self.send_pending()  # an earlier report first: its answer may bring our reserve
        if attempt.superseded:
            log.warning("result dropped", task=task.id, attempt=task.attempt,
                        state=result.state.value, reason=attempt.superseded)
            return
        report = P.Finished(token=attempt.token, state=result.state.value,
                            exit_code=result.exit_code, error=as_utf8(result.error),
                            handback=attempt.handback, started=attempt.unreported_start)
        if self.stopping.is_set() or attempt.handback:
            self.release_all()
            self._report_end(attempt, result, report)
            return
        with self._lock:
            reserve = self._held[0].task.id if self._held else None
        if reserve is not None:  # sent by send_pending once the reserve runs
            self._pending = (attempt, result,
                             msgspec.structs.replace(report, claim_next=1, running=reserve))
        else:
            self._report_end(attempt, result, msgspec.structs.replace(report, claim_next=2))

    def _report_end(self, attempt: Attempt, result: RunResult, report: P.Finished) -> None:
        task = attempt.task
        try:
            ended = self.exchanger.finish(self.worker_id(), task.id, report)
        except Superseded as e:
            log.warning("result refused; the attempt was superseded", task=task.id,
                        attempt=task.attempt, state=result.state.value, reason=str(e))
        except (GaveUp, BlanketError, ValueError) as e:
            log.error("result not delivered", task=task.id, state=result.state.value,
                      problem=str(e))
        else:
            self.hold([claim for claim in (ended.next, ended.reserve) if claim])
            log.debug("task ended", task=task.id, state=ended.state,
                     reported=result.state.value, handback=attempt.handback)

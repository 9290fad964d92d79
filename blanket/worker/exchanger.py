"""A worker process's end reports, sent together: a report never waits for a timer; one that
becomes ready while as many exchanges as the process may have at once are on their way
leaves with the next one, together with every other report ready by then (a group commit:
one request and one transaction for what several slots finished at about the same time)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import msgspec

from blanket import protocol as P
from blanket.client import ClientError
from blanket.worker.client import REPORT_PATIENCE, Superseded, WorkerClient

MAX_BATCH_BYTES = 512 * 1024  # of reports in one exchange: well under the server's body limit
# Exchanges one worker process has on their way at once. One report waiting behind another
# slot's exchange costs its slot up to two round trips; two on their way let two slots
# report without waiting for each other, and beyond that reports leave in batches.
IN_FLIGHT = 2


@dataclass(eq=False)
class _Report:
    message: P.SlotReport
    patience: float
    size: int = 0  # bytes of its JSON
    ready: threading.Event = field(default_factory=threading.Event)
    batch: list[_Report] | None = None  # the reports it is to send, itself first
    answer: P.SlotEnded | None = None
    error: BaseException | None = None


class Exchanger:
    """Sends the slots' end reports (POST /exchange). A slot whose report finds fewer than
    `in_flight` exchanges on their way sends it at once, on its own thread; reports that
    come meanwhile wait, and when an exchange is answered the first of them sends them all
    (up to MAX_EXCHANGE reports and MAX_BATCH_BYTES; the rest in the next)."""

    def __init__(self, server: WorkerClient, in_flight: int = IN_FLIGHT):
        self.server = server
        self.in_flight = max(1, in_flight)
        self._lock = threading.Lock()
        self._waiting: list[_Report] = []
        self._flying = 0  # exchanges on their way
        self.sent = 0  # exchanges sent, and the reports they carried (for tests and figures)
        self.carried = 0

    def finish(self, worker_id: str, task_id: int, report: P.Finished,
               patience: float = REPORT_PATIENCE) -> P.Ended:
        """Report an attempt's end for slot `worker_id`; the answer brings the claims the
        report asked for. Superseded when the server refused it (404, 409, 410), ClientError
        for another refusal, GaveUp when the server stayed away past `patience`."""
        fields = msgspec.structs.asdict(report)
        message = P.SlotReport(**fields, task=task_id, worker=worker_id)
        item = _Report(message, patience, len(message.to_json()))
        with self._lock:
            # Nothing waits while fewer exchanges than allowed are on their way.
            if self._flying < self.in_flight:
                self._flying += 1
                item.batch = [item]
            else:
                self._waiting.append(item)
        if item.batch is None:
            item.ready.wait()  # answered, or handed the next exchange to send
        if item.batch is not None:
            batch, item.batch = item.batch, None
            item.ready.clear()
            self._send(batch)
            item.ready.wait()
        if item.error is not None:
            raise item.error
        assert item.answer is not None
        return _ended(item.answer)

    def _send(self, batch: list[_Report]) -> None:
        """Send a batch of reports, answer each, and hand the next exchange to the first
        report that came meanwhile, with the batch it carries (or count one exchange fewer
        on its way)."""
        try:
            answered = self.server.exchange(
                P.Exchange(reports=tuple(item.message for item in batch)),
                patience=max(item.patience for item in batch))
            if len(answered.ended) != len(batch):
                raise ValueError(f"the server answered {len(answered.ended)} of "
                                 f"{len(batch)} reports")
            for item, answer in zip(batch, answered.ended, strict=True):
                item.answer = answer
        except BaseException as e:  # every report of the batch shares its fate
            for item in batch:
                item.error = e
        with self._lock:
            self.sent += 1
            self.carried += len(batch)
            following = self._next_batch()
            if following:
                following[0].batch = following
                following[0].ready.set()
            else:
                self._flying -= 1
        for item in batch:
            item.ready.set()

    def _next_batch(self) -> list[_Report]:
        """Take the reports waiting, up to MAX_EXCHANGE and MAX_BATCH_BYTES (under the lock)."""
        count, size = 0, 0
        for item in self._waiting[:P.MAX_EXCHANGE]:
            if count and size + item.size > MAX_BATCH_BYTES:
                break  # the rest go in the next exchange
            count, size = count + 1, size + item.size
        batch, self._waiting = self._waiting[:count], self._waiting[count:]
        return batch


def _ended(answer: P.SlotEnded) -> P.Ended:
    """One report's answer, as the single end report's route would give it."""
    if answer.refused is not None:
        if answer.status in (404, 409, 410):
            raise Superseded(answer.refused)
        raise ClientError(answer.refused, code="refused", status=answer.status)
    return P.Ended(task={"id": answer.task, "state": answer.state}, next=answer.next,
                   reserve=answer.reserve)

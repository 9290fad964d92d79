"""The worker's side of the protocol (blanket/protocol.py): one method per route, messages
in and out. Reports keep trying while the server is away (say, restarting), for as long as
their patience lasts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import msgspec
import structlog

from blanket import protocol as P
from blanket.client import Client, ClientError, ServerUnreachable
from blanket.worker.backoff import Backoff

REPORT_PATIENCE = 300.0  # how long reports keep retrying while the server is away
CLAIM_WAIT = 30.0

T = TypeVar("T")
log = structlog.get_logger("blanket.worker")


class Superseded(Exception):
    """The server refused a report: this attempt is no longer the task's current one."""


class GaveUp(Exception):
    """The server stayed away longer than a report's patience."""


class Forgotten(Exception):
    """The server does not know this worker (say, a new database): register again."""


class WorkerClient:
    """The routes a worker calls, over one shared Client."""

    def __init__(self, client: Client):
        self.client = client

    def persist(self, call: Callable[[], T], patience: float = REPORT_PATIENCE,
                giving_up: threading.Event | None = None, *, server_errors: bool = True) -> T:
        """call() until it gets an answer, while the server is unreachable (or, with
        `server_errors`, answers 5xx); Superseded on 404/409/410, GaveUp once `patience`
        seconds pass or `giving_up` is set."""
        backoff = Backoff(patience=patience, until=giving_up)
        while True:
            try:
                return call()
            except ClientError as e:
                if e.status in (404, 409, 410):
                    raise Superseded(e.message) from None
                if e.status < 500 or not server_errors:
                    raise
                problem = e.message
            except ServerUnreachable as e:
                problem = e.message
            if not backoff.pause():
                raise GaveUp(problem)
            log.debug("server away, retrying", problem=problem, delay=backoff.delay)

    def register(self, request: P.Register, giving_up: threading.Event) -> P.Registered:
        """Join the server; tries until it answers or `giving_up` is set."""
        return self.persist(lambda: P.Registered.from_json(
            self._post(P.REGISTER.path(), request)), giving_up=giving_up)

    def claim(self, worker_id: str, wait: float = CLAIM_WAIT, key: str | None = None,
              patience: float = 15.0) -> P.Claimed | P.Leave | None:
        """Long poll for a task: the claim, None when none came within `wait`, Leave when
        the worker was asked to stop; Forgotten when the server does not know it. A claim
        asked again with the `key` of one whose answer never came gets that one's task.
        `patience`: seconds past `wait` to wait for the answer."""
        keyed = f"&key={key}" if key else ""
        status, raw = self.client.send(
            "POST", f"{P.CLAIM.path(worker_id=worker_id)}?wait={wait:g}{keyed}", b"{}",
            timeout=wait + patience, ok=(404, 410))
        if status == 404:
            raise Forgotten(worker_id)
        if status == 410:
            return P.Leave.from_json(raw)
        return P.Claimed.from_json(raw) if status == 200 else None

    def started(self, task_id: int, report: P.Started, patience: float = REPORT_PATIENCE) -> None:
        self.persist(lambda: self._post(P.STARTED.path(task_id=task_id), report), patience)

    def progress(self, task_id: int, report: P.Progress, patience: float) -> None:
        self.persist(lambda: self._post(P.PROGRESS.path(task_id=task_id), report), patience)

    def heartbeat(self, task_id: int, token: str, wait: float) -> P.Orders:
        """One heartbeat, held up to `wait` seconds until the attempt must stop."""
        path = f"{P.HEARTBEAT.path(task_id=task_id)}?wait={wait}"
        return P.Orders.from_json(self._post(path, P.AttemptReport(token=token),
                                             timeout=wait + 15))

    def finish(self, task_id: int, report: P.Finished,
               patience: float = REPORT_PATIENCE) -> P.Ended:
        """The end report; its answer brings what it asked for (`claim_next`)."""
        raw = self.persist(lambda: self._post(P.FINISHED.path(task_id=task_id), report),
                           patience)
        return P.Ended.from_json(raw) if report.wants else P.Ended(task=msgspec.json.decode(raw))

    def exchange(self, request: P.Exchange, patience: float = REPORT_PATIENCE) -> P.Exchanged:
        """Several slots' end reports in one request; each is answered alone."""
        return P.Exchanged.from_json(self.persist(
            lambda: self._post(P.EXCHANGE.path(), request), patience))

    def release(self, task_id: int, token: str, patience: float) -> None:
        """Give a claimed task that has not started back to the queue."""
        self.persist(lambda: self._post(P.RELEASE.path(task_id=task_id),
                                        P.AttemptReport(token=token)), patience)

    def send_log(self, task_id: int, stream: str, offset: int, chunk: bytes,
                 token: str) -> int:
        """Send a chunk of a running task's log from `offset`; how much the server has."""
        answer = self.client.upload_raw(
            f"{P.LOG.path(task_id=task_id, stream=stream)}?offset={offset}", chunk,
            {P.TOKEN_HEADER: token}, timeout=30.0, content_type="application/octet-stream")
        return P.LogTaken.from_json(answer).size

    def send_outputs(self, task_id: int, archive: str, token: str, patience: float,
                     giving_up: threading.Event) -> None:
        """Post the task directory's tar.gz; retried only while the server is unreachable."""
        self.persist(lambda: self.client.upload_raw(P.OUTPUTS.path(task_id=task_id), archive,
                                                    {P.TOKEN_HEADER: token}),
                     patience, giving_up, server_errors=False)

    def fetch_input(self, task_id: int, name: str, dest: str) -> None:
        self.client.download(P.INPUT.path(task_id=task_id, name=name), dest)

    def fetch_bundle(self, path: str, dest: str) -> None:
        """The bundle at `path` (a claim's `bundle`) into the file `dest`."""
        self.client.download(path, dest)

    def leave(self, worker_id: str, mode: str) -> None:
        """Mark this worker stopping, which also ends its pending claim at once."""
        self.client.delete(f"{P.LEAVE.path(worker_id=worker_id)}?mode={mode}", timeout=5)

    def _post(self, path: str, message: P.Request, timeout: float | None = None) -> bytes:
        return self.client.send("POST", path, message.to_json(), timeout=timeout)[1]

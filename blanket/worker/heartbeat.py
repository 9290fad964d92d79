"""The heartbeat of the attempt a worker runs: a long poll that also brings the server's
orders (stop it, hand it back)."""

from __future__ import annotations

import threading

from blanket.client import ClientError, ServerUnreachable
from blanket.protocol import BadMessage
from blanket.worker.attempt import Attempt
from blanket.worker.backoff import Backoff
from blanket.worker.client import WorkerClient

# A task this short ends before its first heartbeat: the claim and the started report
# already show the worker is alive, and a stop is still noticed well within a second.
FIRST_HEARTBEAT = 0.2


class Heartbeat(threading.Thread):
    """Long-polls the current attempt's heartbeat; stops the run when the server asks."""

    def __init__(self, server: WorkerClient, interval: float):
        super().__init__(name="heartbeat", daemon=True)
        self.server = server
        self.interval = interval
        self._cond = threading.Condition()
        self._current: Attempt | None = None

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            self._current = attempt
            self._cond.notify_all()

    def run(self) -> None:
        while True:
            attempt = self._next_attempt()
            if not attempt.ended.wait(FIRST_HEARTBEAT):
                self._beat_until_ended(attempt)
            attempt.ended.wait()

    def _next_attempt(self) -> Attempt:
        with self._cond:
            self._cond.wait_for(lambda: self._current is not None)
            attempt = self._current
            self._current = None
        assert attempt is not None
        return attempt

    def _beat_until_ended(self, attempt: Attempt) -> None:
        backoff = Backoff(until=attempt.ended)
        while not attempt.ended.is_set() and not attempt.superseded:
            try:
                orders = self.server.heartbeat(attempt.task.id, attempt.token, self.interval)
            except ClientError as e:
                if e.status in (404, 409) and not attempt.ended.is_set():
                    attempt.supersede(f"heartbeat refused: {e.message}")
                    return
                backoff.pause()
                continue
            except (ServerUnreachable, BadMessage):
                backoff.pause()
                continue
            backoff.reset()
            if orders.stop:
                attempt.stop(handback=orders.handback)
                attempt.ended.wait(self.interval)  # keep beating while it ends, without spinning
            elif orders.state not in ("CLAIMED", "RUNNING") and not attempt.ended.is_set():
                attempt.supersede(f"the server says the task is {orders.state}")

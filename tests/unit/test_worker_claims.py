"""A slot's claims: what it tells the server it still holds when it asks for its next task
(protocol.ClaimRequest.holding) is the tasks whose end report it could not deliver."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from blanket.models import TaskState
from blanket.worker.claims import Claims
from blanket.worker.client import GaveUp
from blanket.worker.runner import RunResult


class Exchanger:
    def __init__(self, failure: Exception | None):
        self.failure = failure

    def finish(self, worker_id, task_id, report):
        if self.failure is not None:
            raise self.failure
        return SimpleNamespace(next=None, reserve=None, state="SUCCESS")


def _ended(claims: Claims, task_id: int) -> None:
    attempt = SimpleNamespace(task=SimpleNamespace(id=task_id, attempt=1), token="t",
                              superseded=None, handback=False, unreported_start=None)
    claims.finish(attempt, RunResult(TaskState.SUCCESS, 0, None))


def _claims(exchanger: Exchanger) -> Claims:
    return Claims(server=None, reports=None, stopping=threading.Event(),  # type: ignore[arg-type]
                  exchanger=exchanger, worker_id=lambda: "slot-1")  # type: ignore[arg-type]


def test_a_task_whose_end_report_was_not_delivered_is_held():
    claims = _claims(Exchanger(GaveUp("the server stayed away")))
    assert claims.holding() == ()
    _ended(claims, 7)
    _ended(claims, 9)
    assert claims.holding() == (7, 9)


def test_a_task_whose_end_report_arrived_is_not_held():
    claims = _claims(Exchanger(None))
    _ended(claims, 7)
    assert claims.holding() == ()

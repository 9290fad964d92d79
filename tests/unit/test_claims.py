"""A slot's claims in hand and its end reports: with its next task in hand a slot sends the
report of the task that ended off its own thread and starts the next at once; it starts the
one after only once that report was answered, and with nothing in hand it waits for the
answer, which brings what it runs next. It keeps two reserves. A report that cannot be
delivered gives back what is in hand, unstarted."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from blanket import protocol as P
from blanket.models import TaskState
from blanket.worker.claims import Claims
from blanket.worker.client import GaveUp
from blanket.worker.reports import ReportQueue
from blanket.worker.runner import RunResult

DONE = RunResult(TaskState.SUCCESS, 0, None)


def claimed(task_id: int) -> SimpleNamespace:
    return SimpleNamespace(task=SimpleNamespace(id=task_id, token=f"t{task_id}"))


def attempt(task_id: int) -> SimpleNamespace:
    return SimpleNamespace(task=SimpleNamespace(id=task_id, attempt=1), superseded=None,
                           token=f"t{task_id}", handback=False, unreported_start=None)


class Exchanger:
    """Answers each end report with the claims the test queued, once the test lets it."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, int, int | None]] = []  # task, claim_next, running
        self.arrived = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.answers: list[list[SimpleNamespace]] = []
        self.answered = 0
        self.fail: BaseException | None = None

    def finish(self, worker_id: str, task_id: int, report: P.Finished) -> P.Ended:
        self.reports.append((task_id, report.wants, report.running))
        self.arrived.release()
        assert self.go.acquire(timeout=10)
        if self.fail is not None:
            raise self.fail
        found = self.answers.pop(0) if self.answers else []
        self.answered += 1
        return P.Ended(task={"id": task_id, "state": report.state},
                       next=found[0] if found else None,  # type: ignore[arg-type]
                       reserve=found[1] if len(found) > 1 else None)  # type: ignore[arg-type]


class Server:
    """Records the claims given back."""

    def __init__(self) -> None:
        self.released: list[int] = []

    def release(self, task_id: int, token: str, patience: float) -> None:
        self.released.append(task_id)


def slot_claims(server: Server | None = None) -> tuple[Claims, Exchanger]:
    exchanger = Exchanger()
    reports = ReportQueue(None)  # type: ignore[arg-type]
    reports.start()
    claims = Claims(server, reports, threading.Event(), exchanger,  # type: ignore[arg-type]
                    lambda: "w-1")
    return claims, exchanger


def test_with_its_next_task_in_hand_a_slot_does_not_wait_for_the_answer():
    claims, exchanger = slot_claims()
    claims.hold([claimed(2), claimed(3)])  # type: ignore[list-item]
    claims.finish(attempt(1), DONE)  # type: ignore[arg-type]  # held until 2 starts
    assert exchanger.reports == []
    assert claims.take().task.id == 2  # type: ignore[union-attr]
    exchanger.answers.append([claimed(4)])
    claims.send_pending()  # 2 runs: task 1's report leaves, and this returns at once
    assert exchanger.arrived.acquire(timeout=10)
    assert exchanger.reports == [(1, 1, 2)]  # one new reserve: 3 is still in hand
    assert exchanger.answered == 0  # 2 runs while the answer is on its way
    # 3 starts only once the server knows 2 runs: a lost worker's later reserves surely
    # never started (Queue.reap_lost_tasks)
    taken: list[tuple[int, int]] = []
    taking = threading.Thread(target=lambda: taken.append(
        (claims.take().task.id, exchanger.answered)))  # type: ignore[union-attr]
    taking.start()
    exchanger.go.release()
    taking.join(10)
    assert taken == [(3, 1)]
    assert claims.take().task.id == 4  # type: ignore[union-attr]
    assert [r[0] for r in exchanger.reports] == [1]  # it asked nobody else meanwhile


def test_with_nothing_in_hand_a_slot_waits_for_what_the_answer_brings():
    claims, exchanger = slot_claims()
    claims.hold([claimed(2)])  # type: ignore[list-item]
    claims.finish(attempt(1), DONE)  # type: ignore[arg-type]
    assert claims.take().task.id == 2  # type: ignore[union-attr]
    exchanger.answers.append([claimed(3), claimed(4)])
    exchanger.go.release()
    claims.send_pending()  # nothing left in hand: sent on this thread
    assert exchanger.reports == [(1, 2, 2)]  # two new reserves, to keep two in hand
    assert [claims.take().task.id for _ in range(2)] == [3, 4]  # type: ignore[union-attr]


def test_a_report_that_cannot_be_delivered_gives_back_what_is_in_hand_unstarted():
    server = Server()
    claims, exchanger = slot_claims(server)
    claims.hold([claimed(2), claimed(3)])  # type: ignore[list-item]
    claims.finish(attempt(1), DONE)  # type: ignore[arg-type]
    assert claims.take().task.id == 2  # type: ignore[union-attr]
    exchanger.fail = GaveUp("the server stayed away")
    claims.send_pending()  # off the thread: 3 is in hand
    exchanger.go.release()
    # the server never heard that 2 runs: 3 goes back, and nothing else is started
    assert claims.take() is None
    claims.reports.flush()
    assert server.released == [3]


def test_a_report_failing_unexpectedly_off_the_thread_leaves_the_slot_able_to_report():
    """An end report sent on the report thread that fails with an exception nobody expected
    (a bug) must not end that thread: the reports queued after it would never go, and the
    slot would wait for them for good, its reserves held."""
    claims, exchanger = slot_claims()
    finish = exchanger.finish

    def failing(worker_id: str, task_id: int, report: P.Finished) -> P.Ended:
        answer = finish(worker_id, task_id, report)
        if task_id == 1:
            raise RuntimeError("a bug")
        return answer

    exchanger.finish = failing  # type: ignore[method-assign]
    claims.hold([claimed(2), claimed(3), claimed(4)])  # type: ignore[list-item]
    claims.finish(attempt(1), DONE)  # type: ignore[arg-type]
    assert claims.take().task.id == 2  # type: ignore[union-attr]
    exchanger.go.release()
    claims.send_pending()  # task 1's report, off the thread: it fails
    claims.settle()
    claims.finish(attempt(2), DONE)  # type: ignore[arg-type]
    assert claims.take().task.id == 3  # type: ignore[union-attr]
    exchanger.go.release()
    claims.send_pending()  # task 2's report, off the thread: 4 is in hand
    assert claims.take().task.id == 4  # type: ignore[union-attr]
    exchanger.go.release()
    reporting = threading.Thread(target=claims.finish, args=(attempt(4), DONE), daemon=True)
    reporting.start()  # nothing in hand: waits for task 2's answer, then reports on its own
    reporting.join(10)
    assert not reporting.is_alive()
    assert [r[0] for r in exchanger.reports] == [1, 2, 4]

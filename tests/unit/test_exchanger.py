"""The slots' end reports: sent at once while fewer exchanges than allowed are on their way,
else together with every report that became ready meanwhile (a group commit)."""

from __future__ import annotations

import threading
import time

import pytest

from blanket import protocol as P
from blanket.client import ClientError, ServerUnreachable
from blanket.worker.client import Superseded
from blanket.worker.exchanger import Exchanger


class Server:
    """Answers each exchange once the test lets it; records what each carried."""

    def __init__(self, hold_first: bool = False, hold: int = 1):
        self.batches: list[list[int]] = []
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()
        self.hold_first = hold_first
        self.hold = hold  # how many of the first exchanges wait for release
        self._count = threading.Lock()
        self.refuse: dict[int, tuple[int, str]] = {}
        self.fail: BaseException | None = None

    def exchange(self, request: P.Exchange, patience: float) -> P.Exchanged:
        with self._count:
            self.batches.append([r.task for r in request.reports])
            number = len(self.batches)
        self.arrived.release()
        if self.hold_first and number <= self.hold:
            assert self.release.wait(10)
        if self.fail is not None:
            raise self.fail
        ended = []
        for report in request.reports:
            if report.task in self.refuse:
                status, why = self.refuse[report.task]
                ended.append(P.SlotEnded(task=report.task, refused=why, status=status))
            else:
                ended.append(P.SlotEnded(task=report.task, state=report.state))
        return P.Exchanged(ended=ended)


def report(state: str = "SUCCESS") -> P.Finished:
    return P.Finished(token="t", state=state)  # type: ignore[arg-type]


def test_a_report_with_nothing_on_its_way_goes_at_once_alone():
    server = Server()
    ended = Exchanger(server).finish("w-1", 7, report())  # type: ignore[arg-type]
    assert server.batches == [[7]] and ended.state == "SUCCESS"


def test_reports_ready_while_an_exchange_is_on_its_way_leave_together_in_the_next():
    server = Server(hold_first=True)
    exchanger = Exchanger(server, in_flight=1)  # type: ignore[arg-type]
    answers: dict[int, str] = {}

    def finish(task: int) -> None:
        answers[task] = exchanger.finish(f"w-{task}", task, report()).state

    first = threading.Thread(target=finish, args=(1,))
    first.start()
    assert server.arrived.acquire(timeout=10)  # the first exchange is on its way
    others = [threading.Thread(target=finish, args=(n,)) for n in (2, 3, 4)]
    for thread in others:
        thread.start()
    # the three wait for the first exchange's answer (they cannot be sent before it)
    deadline = time.monotonic() + 10
    while len(exchanger._waiting) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(server.batches) == 1
    server.release.set()
    for thread in (first, *others):
        thread.join(10)
    assert server.batches[0] == [1] and sorted(server.batches[1]) == [2, 3, 4]
    assert len(server.batches) == 2 and answers == {n: "SUCCESS" for n in (1, 2, 3, 4)}
    assert (exchanger.sent, exchanger.carried) == (2, 4)


def test_a_refused_report_raises_for_its_slot_alone():
    server = Server()
    server.refuse = {5: (409, "no longer held"), 6: (403, "another token")}
    exchanger = Exchanger(server)  # type: ignore[arg-type]
    with pytest.raises(Superseded, match="no longer held"):
        exchanger.finish("w-1", 5, report())
    with pytest.raises(ClientError, match="another token") as refused:
        exchanger.finish("w-1", 6, report())
    assert refused.value.status == 403


def test_a_failed_exchange_fails_every_report_it_carried_and_the_next_goes_on():
    server = Server()
    server.fail = ServerUnreachable("away")
    exchanger = Exchanger(server)  # type: ignore[arg-type]
    with pytest.raises(ServerUnreachable):
        exchanger.finish("w-1", 1, report())
    server.fail = None
    assert exchanger.finish("w-1", 2, report()).state == "SUCCESS"


def test_reports_beyond_the_size_of_one_exchange_go_in_the_next():
    server = Server(hold_first=True)
    exchanger = Exchanger(server, in_flight=1)  # type: ignore[arg-type]
    long_error = "x" * 60_000  # ten of these are over MAX_BATCH_BYTES

    def finish(task: int) -> None:
        exchanger.finish(f"w-{task}", task, P.Finished(token="t", state="FAILED",
                                                       error=long_error))

    first = threading.Thread(target=finish, args=(0,))
    first.start()
    assert server.arrived.acquire(timeout=10)
    others = [threading.Thread(target=finish, args=(n,)) for n in range(1, 13)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(exchanger._waiting) < 12 and time.monotonic() < deadline:
        time.sleep(0.001)
    server.release.set()
    for thread in (first, *others):
        thread.join(10)
    sizes = [len(batch) for batch in server.batches]
    assert sizes[0] == 1 and sum(sizes) == 13 and max(sizes[1:]) <= 8 and len(sizes) >= 3


def test_two_reports_go_at_once_and_the_third_waits_for_either():
    server = Server(hold_first=True, hold=2)
    exchanger = Exchanger(server, in_flight=2)  # type: ignore[arg-type]
    answers: dict[int, str] = {}

    def finish(task: int) -> None:
        answers[task] = exchanger.finish(f"w-{task}", task, report()).state

    first_two = [threading.Thread(target=finish, args=(n,)) for n in (1, 2)]
    for thread in first_two:
        thread.start()
    for _ in first_two:  # both on their way at once, neither waiting for the other
        assert server.arrived.acquire(timeout=10)
    others = [threading.Thread(target=finish, args=(n,)) for n in (3, 4)]
    for thread in others:
        thread.start()
    deadline = time.monotonic() + 10
    while len(exchanger._waiting) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(server.batches) == 2
    server.release.set()
    for thread in (*first_two, *others):
        thread.join(10)
    assert sorted(map(sorted, server.batches)) == [[1], [2], [3, 4]]
    assert answers == {n: "SUCCESS" for n in (1, 2, 3, 4)}


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_many_slots_reporting_at_once_are_all_answered_and_nothing_stays_counted(
        in_flight: int):
    server = Server()
    exchanger = Exchanger(server, in_flight=in_flight)  # type: ignore[arg-type]
    answered: list[int] = []

    def slot(index: int) -> None:
        for n in range(50):
            task = index * 1000 + n
            assert exchanger.finish(f"w-{index}", task, report()).task["id"] == task
            answered.append(task)

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answered) == 400 and exchanger.carried == 400
    assert exchanger._flying == 0 and exchanger._waiting == []

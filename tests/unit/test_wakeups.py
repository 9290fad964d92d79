"""Wake-ups by topic: a change wakes the waiters of its topics and no others; nothing is
missed between a check and the wait; waiters leave no trace."""

from __future__ import annotations

import threading
import time

from blanket.wakeups import QUEUE, Wakeups, task_topic, worker_topic
from tests.conftest import wait_until


class Waiter(threading.Thread):
    """wait_for in a thread; `checks` counts the calls of its check."""

    def __init__(self, wakeups: Wakeups, topics: tuple[str, ...], timeout: float = 10.0,
                 next_deadline=lambda: None, passes: bool = False):
        super().__init__(daemon=True)
        self.passes = passes  # what it says when a relayed wake-up found nothing for it
        self.wakeups = wakeups
        self.topics = topics
        self.timeout = timeout
        self.next_deadline = next_deadline
        self.answer: object = None
        self.ready: object = None
        self.checks = 0
        self.checked = threading.Event()

    def check(self) -> object:
        self.checks += 1
        self.checked.set()
        return self.ready

    def run(self) -> None:
        self.answer = self.wakeups.wait_for(self.check, self.timeout, topics=self.topics,
                                            next_deadline=self.next_deadline,
                                            passes_on=lambda: self.passes)

    def event(self) -> threading.Event:
        (waiter,) = self.wakeups._waiters[self.topics[0]]
        return waiter.event


def started(waiter: Waiter) -> Waiter:
    waiter.start()
    assert waiter.checked.wait(10)
    return waiter


def idle_claims(wakeups: Wakeups, count: int, **options) -> list[Waiter]:
    """`count` claims waiting on QUEUE, in order, each armed (checked once, now waiting)."""
    waiters = []
    for _ in range(count):
        waiters.append(started(Waiter(wakeups, (QUEUE,), **options)))
        wait_armed(wakeups, len(waiters))
    return waiters


def wait_armed(wakeups: Wakeups, count: int) -> None:
    wait_until(lambda: sum(w.armed for w in wakeups._waiters.get(QUEUE, ())) >= count,
               interval=0.001)


def checks(waiters: list[Waiter]) -> list[int]:
    return [w.checks for w in waiters]


def test_a_change_wakes_only_the_waiters_of_its_topics():
    wakeups = Wakeups()
    claim = started(Waiter(wakeups, (QUEUE, worker_topic("w1"))))
    ended = started(Waiter(wakeups, (task_topic(7),)))
    wakeups.notify(task_topic(8))
    assert not claim.event().is_set() and not ended.event().is_set()
    wakeups.notify(QUEUE)
    assert not ended.event().is_set()
    ended.ready = "ended"
    wakeups.notify(task_topic(7))
    ended.join(10)
    assert ended.answer == "ended"
    claim.ready = "claimed"
    wakeups.notify(worker_topic("w1"))
    claim.join(10)
    assert claim.answer == "claimed"


def test_a_notification_without_topics_wakes_everyone():
    wakeups = Wakeups()
    waiters = [started(Waiter(wakeups, (topic,))) for topic in (QUEUE, task_topic(1))]
    for waiter in waiters:
        waiter.ready = "go"
    wakeups.notify()
    for waiter in waiters:
        waiter.join(10)
        assert waiter.answer == "go"


def test_a_change_during_the_check_is_not_missed():
    wakeups = Wakeups()
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 1:
            wakeups.notify(QUEUE)  # the change lands between the check and the wait
            return None
        return "seen"

    began = time.monotonic()
    assert wakeups.wait_for(check, 10, topics=(QUEUE,)) == "seen"
    assert len(calls) == 2 and time.monotonic() - began < 5


def test_waiters_are_forgotten_when_they_return():
    wakeups = Wakeups()
    waiter = started(Waiter(wakeups, (QUEUE, task_topic(3))))
    assert {topic: len(events) for topic, events in wakeups._waiters.items()} == {
        QUEUE: 1, task_topic(3): 1}
    waiter.ready = "done"
    wakeups.notify(QUEUE)
    waiter.join(10)
    assert wakeups._waiters == {}


def test_a_deadline_checks_again_without_a_notification():
    wakeups = Wakeups()
    due = time.time() + 0.05
    results = iter([None, "due"])
    assert wakeups.wait_for(lambda: next(results), 10, topics=(QUEUE,),
                            next_deadline=lambda: due) == "due"


def test_closing_releases_every_waiter():
    wakeups = Wakeups()
    waiter = started(Waiter(wakeups, (task_topic(1),)))
    wakeups.close()
    waiter.join(10)
    assert not waiter.is_alive() and waiter.answer is None


def test_listeners_hear_every_notification():
    wakeups = Wakeups()
    heard = []
    wakeups.add_listener(lambda: heard.append(1))
    wakeups.notify(QUEUE)
    wakeups.notify()
    assert len(heard) == 2


# QUEUE is relayed: one idle claim at a time

def test_a_new_task_wakes_one_idle_claim_not_all():
    wakeups = Wakeups()
    claims = idle_claims(wakeups, 5)
    wakeups.notify(QUEUE)
    wait_armed(wakeups, 5)  # the one woken checked and went back to waiting
    assert sorted(checks(claims)) == [1, 1, 1, 1, 2]
    wakeups.notify(QUEUE)  # the next change goes to another claim
    wait_armed(wakeups, 5)
    assert sorted(checks(claims)) == [1, 1, 1, 2, 2]


def test_a_claim_that_took_a_task_passes_the_wake_up_on():
    wakeups = Wakeups()
    first, second, third = idle_claims(wakeups, 3)
    first.ready = "task"
    wakeups.notify(QUEUE)
    first.join(10)
    assert first.answer == "task"
    wait_armed(wakeups, 2)
    wait_until(lambda: second.checks == 2, interval=0.001)  # there may be more: it looks too
    wait_armed(wakeups, 2)
    assert (second.checks, third.checks) == (2, 1)  # it found nothing: the relay ended


def test_a_claim_that_could_not_take_it_passes_it_on_to_one_that_can():
    wakeups = Wakeups()
    lacking = idle_claims(wakeups, 2, passes=True)  # say, without the tag the task needs
    able = started(Waiter(wakeups, (QUEUE,)))
    wait_armed(wakeups, 3)
    able.ready = "task"
    wakeups.notify(QUEUE)
    able.join(10)
    # both looked first (then, since a task was taken, one of them may look once more)
    assert able.answer == "task" and min(checks(lacking)) >= 2


def test_a_relay_ends_once_every_claim_tried():
    wakeups = Wakeups()
    claims = idle_claims(wakeups, 3, passes=True)
    wakeups.notify(QUEUE)
    wait_until(lambda: checks(claims) == [2, 2, 2], interval=0.001)
    wait_armed(wakeups, 3)
    time.sleep(0.05)  # nothing more happens: no claim is woken a second time
    assert checks(claims) == [2, 2, 2]


def test_a_relayed_wake_up_that_finds_every_claim_checking_waits_for_the_next():
    wakeups = Wakeups()
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 1:
            wakeups.notify(QUEUE)  # nobody is waiting now: the wake-up is kept
        return None if len(calls) < 2 else "seen"

    assert wakeups.wait_for(check, 10, topics=(QUEUE,)) == "seen"
    assert wakeups._pending == {}

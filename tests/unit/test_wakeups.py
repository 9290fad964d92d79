"""Wake-ups by topic: a change wakes the waiters of its topics and no others; nothing is
missed between a check and the wait; waiters leave no trace."""

from __future__ import annotations

import threading
import time

from blanket.wakeups import QUEUE, Wakeups, task_topic, worker_topic


class Waiter(threading.Thread):
    """wait_for in a thread; `checks` counts the calls of its check."""

    def __init__(self, wakeups: Wakeups, topics: tuple[str, ...], timeout: float = 10.0,
                 next_deadline=lambda: None):
        super().__init__(daemon=True)
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
                                            next_deadline=self.next_deadline)

    def event(self) -> threading.Event:
        (event,) = self.wakeups._waiters[self.topics[0]]
        return event


def started(waiter: Waiter) -> Waiter:
    waiter.start()
    assert waiter.checked.wait(10)
    return waiter


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

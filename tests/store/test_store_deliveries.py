"""Notifications in the store contract (both backends): a final end makes its deliveries in
its own transaction (finish, exchange, a lost worker, a queued task stopped), a retry makes
none; a due delivery is taken by one claimer; only the attempt that took it settles it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from blanket.models import Delivery, TaskState
from blanket.store.base import Claim, DeliveryTarget, End, NotifyTargets, Outcome, Store
from blanket.wakeups import DELIVERIES
from tests.store.test_store import NOW, claimed, failed, new_task

Opener = Callable[[], Store]
HOOK = DeliveryTarget("hook", '{"kind": "webhook", "url": "http://127.0.0.1:9/x", "label": "x"}')
CHAT = DeliveryTarget("chat", '{"kind": "webhook", "url": "http://127.0.0.1:9/y", "label": "y"}')


def targets_for(events: dict[str, tuple[DeliveryTarget, ...]],
                asked: list[tuple[str, str | None, str]] | None = None) -> NotifyTargets:
    def targets(type_name: str, schedule: str | None, event: str) -> tuple[DeliveryTarget, ...]:
        if asked is not None:
            asked.append((type_name, schedule, event))
        return events.get(event, ())
    return targets


def the(delivery_id: int, found: list[Delivery]) -> Delivery:
    """The delivery with this id among `found`."""
    return next(d for d in found if d.id == delivery_id)


def test_a_final_end_makes_one_delivery_per_target_with_its_event(store: Store) -> None:
    asked: list = []
    store.notify_targets = targets_for({"failed": (HOOK, CHAT)}, asked)
    task = claimed(store, schedule="nightly")
    store.finish_task(task.id, task.token, failed())
    assert asked == [("echo", "nightly", "failed")]
    found = store.task_deliveries(task.id)
    assert [(d.target_key, d.event, d.state, d.attempts) for d in found] == [
        ("hook", "failed", "pending", 0), ("chat", "failed", "pending", 0)]
    assert found[0].target["url"] == "http://127.0.0.1:9/x"
    assert found[0].created == found[0].next_at == NOW + 5
    assert store.next_delivery_at() == NOW + 5


def test_no_target_makes_no_delivery_and_a_retry_makes_none(store: Store) -> None:
    store.notify_targets = targets_for({"success": (HOOK,)})
    task = claimed(store, retries=1)
    again = store.finish_task(task.id, task.token, failed(requeue_at=NOW + 60,
                                                          requeue_score=1.0))
    assert again.state is TaskState.QUEUED and store.task_deliveries(task.id) == []
    assert store.next_delivery_at() is None


def test_an_end_whose_targets_raise_ends_nothing(store: Store) -> None:
    def broken(type_name: str, schedule: str | None, event: str) -> tuple:
        raise RuntimeError("no")
    store.notify_targets = broken
    task = claimed(store)
    with pytest.raises(RuntimeError):
        store.finish_task(task.id, task.token, failed())
    assert store.get_task(task.id).state is TaskState.CLAIMED  # one transaction: all or none


def test_an_exchange_makes_the_deliveries_of_each_end_and_wakes_the_loop(store: Store) -> None:
    store.notify_targets = targets_for({"success": (HOOK,), "failed": (CHAT,)})
    woken: list[tuple[str, ...]] = []
    store.on_change = lambda *topics: woken.append(topics)
    first = claimed(store)
    store.add_task(new_task())
    second = store.claim_task(Claim(
        worker="w2", tags=frozenset(), now=NOW))
    store.exchange([End(first.id, first.token, Outcome(TaskState.SUCCESS, 0, None, NOW + 1)),
                    End(second.id, second.token, failed())])
    assert [d.event for d in store.task_deliveries(first.id)] == ["success"]
    assert [d.event for d in store.task_deliveries(second.id)] == ["failed"]
    assert any(DELIVERIES in topics for topics in woken)


def test_a_task_whose_worker_died_for_good_is_lost_and_one_stopped_in_line_too(
        store: Store) -> None:
    store.notify_targets = targets_for({"lost": (HOOK,), "stopped": (CHAT,)})
    task = claimed(store)
    lost = store.lose_task(task.id, task.token, Outcome(
        TaskState.LOST, None, "worker w1 stopped answering", NOW + 1, requeue_at=NOW + 1,
        lost="worker w1 stopped answering"))
    assert lost.state is TaskState.FAILED
    assert [d.event for d in store.task_deliveries(task.id)] == ["lost"]
    queued = store.add_task(new_task())
    assert store.stop_queued(queued.id, NOW + 2, by="me") is not None
    assert [(d.event, d.target_key) for d in store.task_deliveries(queued.id)] == [
        ("stopped", "chat")]


def test_a_due_delivery_is_taken_by_one_claimer_and_settled_by_that_attempt(
        open_another: Opener) -> None:
    one, two = open_another(), open_another()  # two servers on one database
    one.notify_targets = targets_for({"failed": (HOOK, CHAT)})
    for _ in range(10):
        task = one.add_task(new_task())
        taken = one.claim_task(Claim(
            worker="w1", tags=frozenset(), now=NOW))
        assert taken is not None and taken.id == task.id
        one.finish_task(task.id, taken.token, failed())
    got: dict[str, list] = {"one": [], "two": []}
    start = threading.Barrier(2)

    def take(name: str, store: Store) -> None:
        start.wait()
        while batch := store.claim_deliveries(NOW + 10, NOW + 100, 3):
            got[name] += batch
    threads = [threading.Thread(target=take, args=item) for item in
               (("one", one), ("two", two))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ids = [d.id for d in got["one"] + got["two"]]
    assert len(ids) == 20 and len(set(ids)) == 20  # each taken once
    assert one.claim_deliveries(NOW + 50, NOW + 150, 100) == []  # held by their lease
    first = (got["one"] + got["two"])[0]
    assert first.attempts == 1
    # Its lease ran out and another attempt took it: the first attempt's answer is refused.
    again = the(first.id, two.claim_deliveries(NOW + 101, NOW + 200, 100))
    assert again.attempts == 2
    assert one.settle_delivery(first, NOW + 102, state="delivered", result="late") is False
    assert two.settle_delivery(again, NOW + 102, state="pending", result="HTTP 500",
                               retry_at=NOW + 110) is True
    shown = the(first.id, one.task_deliveries(first.task_id))
    assert (shown.state, shown.next_at, shown.result) == ("pending", NOW + 110, "HTTP 500")
    third = the(first.id, one.claim_deliveries(NOW + 110, NOW + 300, 100))
    assert one.settle_delivery(third, NOW + 111, state="delivered", result="HTTP 200")
    shown = the(first.id, two.task_deliveries(first.task_id))
    assert (shown.state, shown.finished, shown.attempts) == ("delivered", NOW + 111, 3)


def test_removing_a_task_keeps_its_pending_deliveries_only(store: Store) -> None:
    store.notify_targets = targets_for({"failed": (HOOK, CHAT)})
    task = claimed(store)
    store.finish_task(task.id, task.token, failed())
    hook = store.claim_deliveries(NOW + 10, NOW + 20, 1)[0]
    store.settle_delivery(hook, NOW + 11, state="delivered", result="HTTP 200")
    store.delete_task(task.id)
    assert [d.state for d in store.task_deliveries(task.id)] == ["pending"]


def test_the_sweep_keeps_a_task_with_a_notification_to_send_then_takes_both(store: Store):
    store.notify_targets = targets_for({"failed": (HOOK, CHAT)})
    task = claimed(store)
    store.finish_task(task.id, task.token, failed())
    taken = {d.target_key: d for d in store.claim_deliveries(NOW + 10, NOW + 70, 10)}
    assert store.settle_delivery(taken["hook"], NOW + 11, state="delivered", result="HTTP 200")
    assert store.delete_ended([task.id]) == []  # chat's is still to send: it reads the task
    assert store.settle_delivery(taken["chat"], NOW + 12, state="failed", result="HTTP 500")
    assert [e.id for e in store.delete_ended([task.id])] == [task.id]
    assert store.task_deliveries(task.id) == []


def test_a_skipped_task_makes_its_skipped_notifications_in_the_same_transaction(store: Store):
    store.notify_targets = targets_for({"skipped": (HOOK,), "failed": (CHAT,)})
    root = claimed(store)
    waiting = store.add_task(new_task(after=(root.id,)))
    behind = store.add_task(new_task(after=(waiting.id,)))
    store.finish_task(root.id, root.token, failed())
    for task_id in (waiting.id, behind.id):
        assert [(d.target_key, d.event) for d in store.task_deliveries(task_id)] == [
            ("hook", "skipped")]
    late = store.add_task(new_task(after=(root.id,)))  # skipped as it is submitted
    assert [(d.target_key, d.event) for d in store.task_deliveries(late.id)] == [
        ("hook", "skipped")]

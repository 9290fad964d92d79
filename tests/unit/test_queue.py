"""The queue's policies over a real SQLite store: lost attempts, retries, handbacks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from blanket.config.tasktype import TaskType
from blanket.models import TaskState, Worker
from blanket.server.queue import Queue
from blanket.store.base import Claim, NewTask
from blanket.store.sqlite import SQLiteStore

ECHO = TaskType(name="echo", command="echo hi")


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    store = SQLiteStore(tmp_path / "b.db")
    return Queue(store, lambda name: (ECHO, "v" * 64) if name == "echo" else None,
                 dict, lambda: {"echo": "v" * 64},
                 task_dir=lambda type_name, task_id: tmp_path / "tasks" / type_name / str(task_id))


def add(queue: Queue, retries: int = 0, retry_delay: float = 0.0) -> int:
    return queue.store.add_task(NewTask(type="echo", environment={}, tags=(), score=10.0,
                                        added=1.0, retries=retries,
                                        retry_delay=retry_delay)).id


def test_a_claim_binds_the_current_version(queue: Queue):
    add(queue)
    task, task_type = queue.claim_once("w", frozenset())
    assert task.version == "v" * 64 and task_type is ECHO


def test_a_running_task_whose_worker_went_silent_with_no_retry_left_fails(queue: Queue):
    add(queue)
    task, _ = queue.claim_once("w", frozenset())
    queue.store.mark_started(task.id, task.token, 1, task.claimed)
    [lost] = queue.reap_lost_tasks(5.0, now=task.claimed + 6)
    assert lost.state is TaskState.FAILED
    assert lost.error == "its worker died 1 time (last: worker w stopped answering)"
    assert (lost.attempts[-1]["state"], lost.attempts[-1]["error"]) == (
        "LOST", "worker w stopped answering")


def test_a_lost_task_with_retries_left_is_queued_again(queue: Queue):
    add(queue, retries=1, retry_delay=10)
    task, _ = queue.claim_once("w", frozenset())
    queue.store.mark_started(task.id, task.token, 1, task.claimed)
    [again] = queue.reap_lost_tasks(5.0, now=task.claimed + 6)
    assert again.state is TaskState.QUEUED
    assert again.not_before == task.claimed + 6 + 10


def test_a_claimed_task_that_never_started_is_queued_again_in_its_old_place(queue: Queue):
    add(queue, retries=1, retry_delay=10)
    task, _ = queue.claim_once("w", frozenset())
    [again] = queue.reap_lost_tasks(5.0, now=task.claimed + 6)
    assert again.state is TaskState.QUEUED and again.score == task.score
    assert again.not_before == task.claimed + 6
    assert [a["state"] for a in again.attempts] == ["LOST"]


def test_a_task_whose_workers_keep_dying_before_it_starts_fails_after_its_retries(
        queue: Queue):
    add(queue, retries=1)
    for _ in range(2):
        task, _ = queue.claim_once("w", frozenset())
        # Reaped as of its claim time (a negative bound: already silent), so that it is
        # queued again at a time the next claim, on the real clock, has already reached.
        [ended] = queue.reap_lost_tasks(-0.001, now=task.claimed)
    assert ended.state is TaskState.FAILED
    assert ended.error == ("its worker died 2 times (last: worker w stopped answering "
                           "before the task started)")
    assert queue.claim_once("w", frozenset()) is None


def test_a_reserve_whose_worker_died_is_queued_again_without_spending_an_attempt(
        queue: Queue):
    queue.store.save_worker(Worker(id="w", tags=(), host="h", pid=1, state="idle",
                                   registered=1.0, heartbeat=1.0))
    current, reserved = add(queue), add(queue)
    task, _ = queue.claim_once("w", frozenset())  # the worker's record now shows it
    reserve = queue.store.claim_task(Claim("w", frozenset(), {}, time.time(), reserve=True))
    assert (task.id, reserve.id) == (current, reserved)
    ended = {t.id: t for t in queue.reap_lost_tasks(-0.001, now=reserve.claimed)}
    assert ended[current].state is TaskState.FAILED  # it may have run: it counts
    back = ended[reserved]
    assert (back.state, back.attempt, back.score) == (TaskState.QUEUED, 0, reserve.score)
    assert back.attempts[-1]["error"] == (f"worker w stopped answering while it held the task "
                                          f"in reserve (it ran task {current})")
    # Once: lost in reserve again, it counts, and with no retries left it fails.
    queue.claim_once("w", frozenset())
    queue.store.save_worker(Worker(id="w", tags=(), host="h", pid=1, state="busy",
                                   registered=1.0, heartbeat=1.0, task=current))
    [ended_again] = queue.reap_lost_tasks(-0.001, now=time.time())
    assert ended_again.state is TaskState.FAILED
    assert [a.get("refunded", False) for a in ended_again.attempts] == [True, False]


def test_fresh_heartbeats_keep_a_task(queue: Queue):
    add(queue)
    task, _ = queue.claim_once("w", frozenset())
    assert queue.reap_lost_tasks(5.0, now=task.claimed + 1) == []


def test_a_handed_back_task_keeps_its_place_and_its_retries(queue: Queue):
    add(queue, retries=0)
    task, _ = queue.claim_once("w", frozenset())
    back, _ = queue.finish_and_claim(task.id, task.token, TaskState.STOPPED, None, None,
                                     handback=True)
    assert back.state is TaskState.QUEUED and back.score == task.score
    assert back.attempts[-1]["error"] == "handed back by its worker"


def test_a_failure_with_retries_backs_off_exponentially(queue: Queue):
    add(queue, retries=3, retry_delay=10)
    gaps = []
    for _ in range(3):
        claimed = queue.store.claim_task(Claim("w", frozenset(), {}, 1e12))
        ended, _ = queue.finish_and_claim(claimed.id, claimed.token, TaskState.FAILED, 1, "boom")
        gaps.append(round(ended.not_before - ended.attempts[-1]["finished"]))
    assert gaps == [10, 20, 40]
    last = queue.store.claim_task(Claim("w", frozenset(), {}, 1e12))
    final, _ = queue.finish_and_claim(last.id, last.token, TaskState.FAILED, 1, "boom")
    assert final.state is TaskState.FAILED and len(final.attempts) == 4


def test_a_lost_attempt_is_logged_once_saying_why(queue: Queue):
    add(queue, retries=1)
    task, _ = queue.claim_once("w", frozenset())
    with capture_logs() as logs:
        queue.reap_lost_tasks(5.0, now=task.claimed + 6)
    [line] = [e for e in logs if e.get("task") == task.id]
    assert (line["event"], line["attempt_state"]) == ("attempt ended, task queued again", "LOST")
    assert line["error"] == "worker w stopped answering before the task started"

"""The worker registry's rules over a real SQLite store: who may register which worker,
when a worker shows as lost, what stopping one does, what a claim and a heartbeat answer."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from blanket.auth import ADMIN, OPERATOR, WORKER, Forbidden, Identity
from blanket.config.tasktype import TaskType
from blanket.errors import InvalidInput
from blanket.models import Task, TaskState
from blanket.protocol import Leave, Orders
from blanket.server.queue import Queue
from blanket.server.registry import WorkerRegistry
from blanket.store.base import NewTask
from blanket.store.sqlite import SQLiteStore
from blanket.wakeups import QUEUE, Wakeups, worker_topic

ECHO = TaskType(name="echo", command="echo hi")
LOST_AFTER = 30.0
GPU_TOKEN = Identity("gpu-box", WORKER, tags=("gpu",), token_id="t1")
OTHER_TOKEN = Identity("other", WORKER, token_id="t2")
OPERATOR_TOKEN = Identity("ops", OPERATOR, token_id="t3")
ADMIN_TOKEN = Identity("admin", ADMIN, token_id="t4")


@pytest.fixture
def registry(tmp_path: Path) -> WorkerRegistry:
    store = SQLiteStore(tmp_path / "b.db")
    queue = Queue(store, lambda name: (ECHO, "v" * 64) if name == "echo" else None, dict,
                  lambda: {"echo": "v" * 64},
                  task_dir=lambda type_name, task_id: tmp_path / type_name / str(task_id))
    return WorkerRegistry(store, queue, Wakeups(), LOST_AFTER)


def register(registry: WorkerRegistry, worker_id: str = "w1",
             caller: Identity = GPU_TOKEN) -> str:
    return registry.register(caller, ["gpu"], "box", 1, worker_id).id


def running_task(registry: WorkerRegistry, worker_id: str = "w1") -> Task:
    registry.store.add_task(NewTask(type="echo", environment={}, tags=(), score=1.0,
                                    added=1.0))
    task, _ = registry.queue.claim_once(worker_id, frozenset({"gpu"}))
    return task


def silence(registry: WorkerRegistry, worker_id: str, seconds: float) -> None:
    worker = registry.get(worker_id)
    registry.store.save_worker(replace(worker, heartbeat=time.time() - seconds))


def test_a_worker_may_register_only_with_tags_its_token_allows(registry: WorkerRegistry):
    with pytest.raises(Forbidden, match="may not take tasks tagged cpu"):
        registry.register(GPU_TOKEN, ["gpu", "cpu"], "box", 1)


def test_a_worker_without_an_id_is_named_for_its_host_and_pid(registry: WorkerRegistry):
    worker = registry.register(GPU_TOKEN, [], "box", 42)
    assert worker.id.startswith("box-42-") and worker.owner == "gpu-box"


def test_a_worker_id_must_be_a_plain_name(registry: WorkerRegistry):
    with pytest.raises(InvalidInput, match="use letters, digits"):
        registry.register(GPU_TOKEN, [], "box", 1, "../w1")


def test_another_tokens_worker_id_is_refused_but_an_admin_may_take_it(
        registry: WorkerRegistry):
    register(registry)
    with pytest.raises(Forbidden, match="taken by a worker of another token"):
        registry.register(OTHER_TOKEN, [], "box", 2, "w1")
    assert registry.register(ADMIN_TOKEN, [], "box", 2, "w1").owner == "admin"


def test_the_same_token_may_register_its_worker_again(registry: WorkerRegistry):
    register(registry)
    assert registry.register(GPU_TOKEN, [], "box", 2, "w1").pid == 2


def test_a_worker_silent_past_lost_after_shows_as_lost(registry: WorkerRegistry):
    register(registry)
    assert registry.shown(registry.get("w1")).state == "idle"
    silence(registry, "w1", LOST_AFTER + 1)
    assert registry.shown(registry.get("w1")).state == "lost"
    assert [w.state for w in registry.listed()] == ["lost"]
    assert registry.get("w1").state == "idle"  # what is shown, not what is recorded


def test_a_worker_waiting_in_a_claim_here_is_not_lost(registry: WorkerRegistry):
    registry.lost_after = 0.1
    register(registry)
    waiting = threading.Thread(target=registry.claim, args=(registry.get("w1"), 1.0))
    waiting.start()
    time.sleep(0.4)
    assert registry.shown(registry.get("w1")).state == "idle"
    waiting.join()
    assert registry.shown(registry.get("w1")).state == "lost"


def test_stopping_an_active_worker_marks_it_stopping_with_its_mode(registry: WorkerRegistry):
    register(registry)
    worker, forgotten = registry.stop("w1", "handback", OPERATOR_TOKEN)
    assert not forgotten and (worker.state, worker.stop_mode) == ("stopping", "handback")
    assert [w.id for w in registry.listed()] == ["w1"]


def test_stopping_a_silent_worker_forgets_it(registry: WorkerRegistry):
    register(registry)
    silence(registry, "w1", LOST_AFTER + 1)
    worker, forgotten = registry.stop("w1", "finish", OPERATOR_TOKEN)
    assert forgotten and worker.state == "gone" and registry.listed() == []


def test_stopping_a_stopping_worker_whose_task_ended_forgets_it(registry: WorkerRegistry):
    register(registry)
    task = running_task(registry)
    registry.stop("w1", "finish", GPU_TOKEN)
    assert not registry.departed(registry.get("w1"))  # its task still runs
    registry.queue.finish_and_claim(task.id, task.token, TaskState.SUCCESS, 0, None)
    _, forgotten = registry.stop("w1", "finish", GPU_TOKEN)
    assert forgotten and registry.listed() == []


def test_a_worker_token_may_stop_only_its_own_workers(registry: WorkerRegistry):
    register(registry)
    with pytest.raises(Forbidden, match="registered with another token"):
        registry.stop("w1", "finish", OTHER_TOKEN)


def test_a_stop_mode_is_finish_or_handback(registry: WorkerRegistry):
    register(registry)
    with pytest.raises(InvalidInput, match="must be finish"):
        registry.stop("w1", "now", OPERATOR_TOKEN)


def test_a_stopping_worker_cannot_be_paused(registry: WorkerRegistry):
    register(registry)
    registry.stop("w1", "finish", OPERATOR_TOKEN)
    with pytest.raises(InvalidInput, match="is stopping"):
        registry.pause("w1")


def test_a_paused_worker_is_given_no_task(registry: WorkerRegistry):
    register(registry)
    registry.store.add_task(NewTask(type="echo", environment={}, tags=(), score=1.0,
                                    added=1.0))
    registry.pause("w1")
    assert registry.claim(registry.get("w1"), 0.0) is None
    registry.resume("w1")
    assert registry.claim(registry.get("w1"), 0.0)[0].worker == "w1"


def test_a_paused_workers_claim_waits_for_its_own_news_not_for_new_tasks(
        registry: WorkerRegistry):
    registry.store.on_change = registry.wakeups.notify  # as the server wires them
    register(registry)
    registry.pause("w1")
    answers: list = []
    waiting = threading.Thread(
        target=lambda: answers.append(registry.claim(registry.get("w1"), 30.0)))
    waiting.start()
    deadline = time.monotonic() + 10
    while not registry.wakeups._waiters.get(worker_topic("w1")):
        assert time.monotonic() < deadline, "the claim never started waiting"
        time.sleep(0.005)
    assert not registry.wakeups._waiters.get(QUEUE)  # a new task does not wake it
    registry.store.add_task(NewTask(type="echo", environment={}, tags=(), score=1.0,
                                    added=1.0))
    registry.resume("w1")  # its own news: it wakes and takes the task
    waiting.join(10)
    assert answers and answers[0][0].worker == "w1"


def test_a_stopping_worker_leaves_with_its_mode_on_its_next_claim(registry: WorkerRegistry):
    register(registry)
    worker = registry.get("w1")
    registry.stop("w1", "handback", OPERATOR_TOKEN)
    assert registry.claim(worker, 0.0) == Leave(stop="handback")
    assert registry.listed() == []


def test_a_running_attempt_gets_no_orders_until_it_must_stop(registry: WorkerRegistry):
    register(registry)
    task = running_task(registry)
    assert registry.orders(task.id, task.token) is None
    registry.queue.stop_task(task.id, "ops")
    assert registry.orders(task.id, task.token) == Orders(stop=True, handback=False,
                                                          state="CLAIMED")


def test_a_handing_back_worker_is_told_to_hand_its_task_back(registry: WorkerRegistry):
    register(registry)
    task = running_task(registry)
    registry.stop("w1", "handback", OPERATOR_TOKEN)
    assert registry.heartbeat(task.id, task.token) == Orders(stop=True, handback=True,
                                                             state="CLAIMED")


def test_an_attempt_held_by_another_tokens_worker_is_refused(registry: WorkerRegistry):
    register(registry)
    task = running_task(registry)
    with pytest.raises(Forbidden, match="held by a worker of another token"):
        registry.check_holder(OTHER_TOKEN, task.id, task.token)
    registry.check_holder(GPU_TOKEN, task.id, task.token)
    registry.check_holder(ADMIN_TOKEN, task.id, task.token)


def test_workers_silent_for_long_are_forgotten(registry: WorkerRegistry):
    register(registry, "w1")
    register(registry, "w2")
    silence(registry, "w1", 3600)
    assert [w.id for w in registry.forget_silent(time.time() - 600)] == ["w1"]
    assert [w.id for w in registry.listed()] == ["w2"]

"""Why a queued task waits: its start date, no worker up with its tags (lost and stopping
workers do not count), paused workers, its type's cap, or busy workers."""

from __future__ import annotations

from dataclasses import replace

from blanket.models import Task, TaskState, Worker
from blanket.server.waiting import WaitReasons

NOW = 1_000_000.0


def task(id: int, tags: tuple[str, ...] = (), type: str = "t", **kw) -> Task:
    return Task(id=id, type=type, state=TaskState.QUEUED, environment={}, tags=tags,
                score=0.0, added=NOW - 10, **kw)


def worker(id: str, tags: tuple[str, ...], state: str = "idle") -> Worker:
    return Worker(id=id, tags=tags, host="h", pid=1, state=state, registered=NOW,
                  heartbeat=NOW)


def reasons(tasks, workers, limits=None, running=None):
    counted = []

    def count(type_name: str) -> int:
        counted.append(type_name)
        return (running or {}).get(type_name, 0)

    found = WaitReasons(lambda: workers, lambda: limits or {}, count, clock=lambda: NOW)
    return {k: v.code for k, v in found.explain(tasks).items()}, counted


def test_a_task_no_worker_up_can_take_says_which_tags_are_missing():
    workers = [worker("a", ("unix",)), worker("b", ("gpu", "unix"), state="lost"),
               worker("c", ("gpu",), state="stopping")]
    found = WaitReasons(lambda: workers, dict, lambda _: 0, clock=lambda: NOW)
    why = found.explain([task(1, ("gpu",))])[1]
    assert why.code == "no_worker" and "gpu" in why.message and "blanket worker -t gpu" \
        in why.message


def test_each_reason_in_its_order():
    workers = [worker("a", ("unix",)), worker("p", ("paused-only",), state="paused")]
    tasks = [task(1, ("unix",), not_before=NOW + 60), task(2, ("paused-only",)),
             task(3, ("unix",), type="capped"), task(4, ("unix",)),
             replace(task(5), state=TaskState.RUNNING)]
    codes, counted = reasons(tasks, workers, limits={"capped": 2}, running={"capped": 2})
    assert codes == {1: "not_before", 2: "paused", 3: "max_concurrent", 4: "busy"}
    assert counted == ["capped"]  # only capped types are counted, once each


def test_a_past_start_date_or_a_type_below_its_cap_is_no_reason():
    workers = [worker("a", ())]
    codes, _ = reasons([task(1, not_before=NOW - 5, type="capped")], workers,
                       limits={"capped": 2}, running={"capped": 1})
    assert codes == {1: "busy"}


def test_nothing_is_asked_when_no_task_is_queued():
    def fail() -> list[Worker]:
        raise AssertionError("workers read for nothing")

    found = WaitReasons(fail, dict, lambda _: 0, clock=lambda: NOW)
    assert found.explain([replace(task(1), state=TaskState.SUCCESS)]) == {}


def test_the_workers_are_read_at_most_once_a_second():
    reads = []
    now = [NOW]

    def workers() -> list[Worker]:
        reads.append(now[0])
        return [worker("a", ())]

    found = WaitReasons(workers, dict, lambda _: 0, clock=lambda: now[0])
    for _ in range(5):
        found.explain([task(1)])
    now[0] += 1.5
    found.explain([task(1)])
    assert reads == [NOW, NOW + 1.5]


def test_one_task_waiting_for_a_free_worker_says_how_many_are_ahead():
    asked = []

    def ahead(task: Task) -> int:
        asked.append(task.id)
        return 3

    found = WaitReasons(lambda: [worker("a", ())], dict, lambda _: 0, clock=lambda: NOW,
                        ahead=ahead)
    assert found.explain([task(1)])[1].to_json() == {
        "code": "busy", "message": "waits for a worker with its tags to be free"}
    one = found.explain([task(1)], place_in_line=True)[1]
    assert one.ahead == 3 and one.message.endswith("behind 3 queued tasks")
    assert asked == [1]  # only when asked for: lists never pay a count per task

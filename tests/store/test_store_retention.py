"""The store's retention verbs, on SQLite and PostgreSQL: ended tasks a page at a time by
when they ended, a group's newest by id, removal of ended tasks only (with their dedupe keys),
and which versions tasks still use."""

from __future__ import annotations

import pytest

from blanket.errors import DuplicateTask
from blanket.models import TaskState
from blanket.store.base import MAX_BATCH, Claim, NewTask, Outcome, Store
from tests.store.conftest import Opener

NOW = 50_000.0


def add(store: Store, type: str = "echo", schedule: str | None = None,
        key: str | None = None, run: tuple[int, str, int, int] | None = None) -> int:
    return store.add_task(NewTask(type=type, environment={}, tags=(), score=1.0, added=1.0,
                                  schedule=schedule, dedupe_key=key, run=run)).id


def end(store: Store, task_id: int, at: float, state: TaskState = TaskState.SUCCESS,
        version: str | None = None) -> None:
    """Claim `task_id` (the only queued one) and end it at `at`."""
    task = store.claim_task(Claim("w", frozenset(), now=at - 1,
                                  versions={store.get_task(task_id).type: version}
                                  if version else {}))
    assert task is not None and task.id == task_id
    store.finish_task(task_id, task.token or "", Outcome(state, finished=at))


def ended_task(store: Store, at: float, state: TaskState = TaskState.SUCCESS,
               version: str | None = None, **fields: object) -> int:
    task_id = add(store, **fields)  # type: ignore[arg-type]
    end(store, task_id, at, state, version=version)
    return task_id


def test_ended_tasks_come_a_page_at_a_time_by_when_they_ended(store: Store) -> None:
    late = ended_task(store, 300.0)
    early = ended_task(store, 100.0)
    same_a = ended_task(store, 200.0)
    same_b = ended_task(store, 200.0, TaskState.FAILED)
    add(store)  # queued: never listed
    first = store.ended_page(None, until=NOW, limit=2)
    assert [e.id for e in first] == [early, same_a]
    assert first[0].finished == 100.0 and first[0].type == "echo"
    rest = store.ended_page((first[-1].finished, first[-1].id), until=NOW, limit=10)
    assert [e.id for e in rest] == [same_b, late]
    assert rest[0].state is TaskState.FAILED


def test_ended_pages_stop_at_until(store: Store) -> None:
    old = ended_task(store, 100.0)
    ended_task(store, 500.0)
    assert [e.id for e in store.ended_page(None, until=500.0, limit=10)] == [old]


def test_running_and_requeued_tasks_are_not_ended(store: Store) -> None:
    running = add(store)
    task = store.claim_task(Claim("w", frozenset(), now=10.0))
    assert task is not None
    store.mark_started(running, task.token or "", 1, 11.0)
    assert store.ended_page(None, until=NOW, limit=10) == []
    assert store.delete_ended([running]) == []
    assert store.get_task(running) is not None


def test_delete_ended_removes_only_ended_tasks_and_says_which(store: Store) -> None:
    done = ended_task(store, 100.0, TaskState.TIMEDOUT)
    queued = add(store)
    removed = store.delete_ended([done, queued, 999_999])
    assert [(e.id, e.state) for e in removed] == [(done, TaskState.TIMEDOUT)]
    assert store.get_task(done) is None
    assert store.get_task(queued) is not None


def test_a_running_workflow_runs_ended_tasks_stay_until_it_ends(store: Store) -> None:
    run = store.add_run("etl", "v", "", {}, 1.0, "alice")
    done = ended_task(store, 100.0, run=(run.id, "a", 0, 1))
    assert store.delete_ended([done]) == []  # its results may still be read
    store.end_run(run.id, "succeeded", None, 200.0)
    assert [e.id for e in store.delete_ended([done])] == [done]
    assert store.get_run(run.id) is None  # its last task gone, the ended run goes too


def test_an_ended_run_stays_while_one_of_its_tasks_does(store: Store) -> None:
    run = store.add_run("etl", "v", "", {}, 1.0, "alice")
    first = ended_task(store, 100.0, run=(run.id, "a", 0, 1))
    second = ended_task(store, 101.0, run=(run.id, "b", 0, 1))
    store.end_run(run.id, "failed", "b", 200.0)
    store.delete_ended([first])
    assert store.get_run(run.id) is not None
    # the removed one still shows, as removed: a rerun makes it again
    assert [(t.task_id, t.state) for t in store.run_tasks(run.id)] == [
        (first, None), (second, TaskState.SUCCESS)]
    store.delete_ended([second])
    assert store.get_run(run.id) is None and store.run_tasks(run.id) == []


def test_delete_ended_frees_the_tasks_dedupe_key(store: Store) -> None:
    first = add(store, key="inbox:abc")
    end(store, first, 100.0)
    with pytest.raises(DuplicateTask):
        add(store, key="inbox:abc")
    assert [e.id for e in store.delete_ended([first])] == [first]
    assert store.task_for_key("inbox:abc") is None
    assert add(store, key="inbox:abc") != first


def test_delete_ended_takes_a_bounded_batch(store: Store) -> None:
    with pytest.raises(ValueError, match="at most"):
        store.delete_ended(list(range(1, MAX_BATCH + 2)))
    assert store.delete_ended([]) == []


def test_a_groups_tasks_come_newest_first_a_page_at_a_time(store: Store) -> None:
    ended = [ended_task(store, 100.0 + n) for n in range(3)]
    nightly = ended_task(store, 100.0, schedule="nightly")
    ended_task(store, 100.0, type="other")
    queued = add(store)
    page = store.group_page(2**62, 3, type_name="echo")
    assert page == [(queued, None, False), (nightly, "nightly", True), (ended[2], None, True)]
    rest = store.group_page(page[-1][0], 10, type_name="echo")
    assert rest == [(ended[1], None, True), (ended[0], None, True)]
    assert store.group_page(2**62, 10, schedule="nightly") == [(nightly, "nightly", True)]
    assert store.group_page(ended[0], 10, type_name="echo") == []


def test_versions_in_use_are_read_by_ranges_of_ids(store: Store) -> None:
    store.record_version("v1", "echo", 1.0)
    store.record_version("v2", "echo", 2.0)
    a = ended_task(store, 100.0, version="v1")
    b = ended_task(store, 101.0, version="v2")
    c = ended_task(store, 102.0, version="v1")
    add(store)  # queued: no version yet
    assert store.max_task_id() > c
    assert store.versions_between(a, a) == {"v1": 1}
    assert store.versions_between(0, store.max_task_id()) == {"v1": 2, "v2": 1}
    assert store.delete_ended([b])
    assert store.versions_between(a, c) == {"v1": 2}


def test_version_records_can_be_listed_and_forgotten(store: Store) -> None:
    store.record_version("v1", "echo", 1.0)
    store.record_version("v2", "other", 2.0)
    assert store.version_records() == [("v1", "echo", 1.0), ("v2", "other", 2.0)]
    assert store.delete_versions(["v1", "nope"]) == 1
    assert store.delete_versions([]) == 0
    assert [r[0] for r in store.version_records()] == ["v2"]
    assert store.record_version("v1", "echo", 3.0)  # new again


def test_an_empty_store_has_no_task_id(store: Store) -> None:
    assert store.max_task_id() == 0


def test_one_server_at_a_time_sweeps(open_postgres: Opener) -> None:
    first, second = open_postgres(), open_postgres()
    assert first.try_sweep_lock()
    assert not second.try_sweep_lock()
    first.release_sweep_lock()
    assert second.try_sweep_lock()
    second.release_sweep_lock()


def test_a_single_sqlite_server_always_sweeps(store: Store) -> None:
    assert store.try_sweep_lock()
    store.release_sweep_lock()

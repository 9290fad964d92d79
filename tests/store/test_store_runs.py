"""Workflow runs in the store contract (both backends): a run keeps the file it started
from; a dedupe key starts one run even from two servers; a run ends once; a rerun comes back
only from failed or stopped with its round raised; links to tasks are made once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from blanket.models import TaskState
from blanket.store.base import Store
from tests.store.test_store import NOW, new_task

Opener = Callable[[], Store]


def started(store: Store, **fields) -> object:
    values = {"workflow": "etl", "version": "v1", "definition": "[steps.a]\n",
              "environment": {"DAY": "mon"}, "added": NOW, "submitted_by": "alice"}
    return store.add_run(**{**values, **fields})


def test_a_run_is_kept_with_its_file_and_variables(store: Store) -> None:
    run = started(store, schedule="nightly")
    again = store.get_run(run.id)
    assert again == run
    assert (run.workflow, run.version, run.definition, run.environment, run.state, run.round,
            run.submitted_by, run.schedule) == ("etl", "v1", "[steps.a]\n", {"DAY": "mon"},
                                                "running", 1, "alice", "nightly")
    assert store.get_run(run.id + 1000) is None


def test_a_dedupe_key_starts_one_run_even_from_two_servers(open_another: Opener) -> None:
    first, second = open_another(), open_another()
    found: list = []
    threads = [threading.Thread(target=lambda s=s: found.append(
        started(s, dedupe_key="schedule:etl:1.000"))) for s in (first, second, first)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({run.id for run in found}) == 1
    assert first.run_for_key("schedule:etl:1.000") == found[0]
    assert first.run_for_key("schedule:etl:2.000") is None
    assert len(first.list_runs()) == 1


def test_a_run_ends_once_and_reruns_only_from_failed_or_stopped(store: Store) -> None:
    run = started(store)
    assert store.rerun_run(run.id) is None  # running: nothing to rerun
    ended = store.end_run(run.id, "failed", "step b: task 3 ended FAILED", NOW + 5)
    assert ended is not None and (ended.state, ended.finished) == ("failed", NOW + 5)
    assert store.end_run(run.id, "succeeded", None, NOW + 6) is None  # ended already
    again = store.rerun_run(run.id)
    assert again is not None
    assert (again.state, again.round, again.reason, again.finished) == ("running", 2, None,
                                                                        None)
    assert store.end_run(run.id, "stopped", "stopped by bob", NOW + 7) is not None
    assert store.rerun_run(run.id).round == 3
    # a look at round 2, read before the rerun, must not end round 3
    assert store.end_run(run.id, "failed", "stale", NOW + 8, round_=2) is None
    assert store.end_run(run.id, "succeeded", None, NOW + 9, round_=3).state == "succeeded"


def test_running_runs_and_listings_by_workflow_state_and_page(store: Store) -> None:
    runs = [started(store, workflow=name) for name in ("a", "b", "a", "a")]
    store.end_run(runs[0].id, "succeeded", None, NOW)
    assert [r.id for r in store.running_runs()] == [r.id for r in runs[1:]]
    assert [r.id for r in store.list_runs()] == [r.id for r in reversed(runs)]
    assert [r.id for r in store.list_runs(workflow="a")] == [runs[3].id, runs[2].id,
                                                              runs[0].id]
    assert [r.id for r in store.list_runs(state="succeeded")] == [runs[0].id]
    assert [r.id for r in store.list_runs(before=runs[2].id, limit=1)] == [runs[1].id]
    assert store.list_runs(workflow="nope") == []
    nightly = started(store, schedule="nightly")
    assert [r.id for r in store.list_runs(state="running", schedule="nightly")] == [nightly.id]


def test_a_steps_task_is_tied_to_its_run_as_it_is_stored_once(store: Store) -> None:
    run = started(store)
    a, b = store.add_tasks([
        replace(new_task(), dedupe_key=f"run:{run.id}:a:0:1", run=(run.id, "a", 0, 1)),
        replace(new_task(), dedupe_key=f"run:{run.id}:b:3:1", run=(run.id, "b", 3, 1))])
    again = store.add_tasks([  # made again (two servers, a crash): the same task, one tie
        replace(new_task(), dedupe_key=f"run:{run.id}:a:0:1", run=(run.id, "a", 0, 1))])
    assert [t.id for t in again] == [a.id]
    store.delete_task(b.id)
    found = store.run_tasks(run.id)
    assert [(t.step, t.item, t.round, t.task_id) for t in found] == [("a", 0, 1, a.id),
                                                                     ("b", 3, 1, b.id)]
    assert found[0].state == TaskState.QUEUED and found[0].type == a.type
    assert found[1].state is None  # removed
    assert store.active_steps(run.id) == {"a"}
    store.stop_queued(a.id, NOW, "bob")
    assert store.active_steps(run.id) == frozenset()
    assert store.run_of_task(a.id) == (run.id, "a", 0, 1)
    assert store.run_first_task(run.id) == a.id and store.run_first_task(run.id + 1) is None
    assert store.run_of_task(a.id + 1000) is None
    assert store.run_tasks(run.id + 1000) == []


def test_a_steps_tasks_are_paged_and_filtered_by_state_in_the_store(store: Store) -> None:
    run = started(store)
    made = store.add_tasks([
        replace(new_task(), dedupe_key=f"run:{run.id}:s:{item}:1", run=(run.id, "s", item, 1))
        for item in range(30)] + [
        replace(new_task(), dedupe_key=f"run:{run.id}:t:0:1", run=(run.id, "t", 0, 1))])
    again = store.add_tasks([  # item 4's second round
        replace(new_task(), dedupe_key=f"run:{run.id}:s:4:2", run=(run.id, "s", 4, 2))])
    store.delete_task(made[7].id)
    store.stop_queued(made[9].id, NOW, "bob")
    count, page = store.run_step_tasks(run.id, "s")
    assert count == 31 and len(page) == 31  # 30 items, one with two rounds; not step t's
    assert [(t.item, t.round) for t in page[3:7]] == [(3, 1), (4, 1), (4, 2), (5, 1)]
    assert page[5].task_id == again[0].id
    count, page = store.run_step_tasks(run.id, "s", offset=28, limit=2)
    assert (count, [t.item for t in page]) == (31, [27, 28])
    count, page = store.run_step_tasks(run.id, "s", frozenset({"removed"}))
    assert (count, [(t.task_id, t.state) for t in page]) == (1, [(made[7].id, None)])
    count, page = store.run_step_tasks(run.id, "s", frozenset({"removed", "STOPPED"}))
    assert (count, [t.item for t in page]) == (2, [7, 9])
    count, page = store.run_step_tasks(run.id, "s", frozenset({"QUEUED"}), offset=27)
    assert (count, [t.item for t in page]) == (29, [28, 29])  # items 0-6 and 4 again, 8, 10-29
    assert store.run_step_tasks(run.id, "s", frozenset({"FAILED"})) == (0, [])
    assert store.run_step_tasks(run.id, "nothing") == (0, [])
    assert store.run_step_tasks(run.id + 1000, "s") == (0, [])

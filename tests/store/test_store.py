"""The store contract, as one suite every backend must pass (SQLite and PostgreSQL)."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blanket.errors import DuplicateTask, KeyReused, NotFound, StaleAttempt
from blanket.models import ScheduleState, Task, TaskFilter, TaskState, Worker
from blanket.store.base import (
    Claim,
    End,
    NewTask,
    Outcome,
    Store,
)
from blanket.store.sql import load_migrations, load_queries
from blanket.wakeups import QUEUE, task_topic, worker_topic
from tests.store.conftest import database_url, opener

POSTGRES = load_queries("postgres")

NOW = 10_000.0
Opener = Callable[[], Store]


def new_task(type: str = "echo", score: float = 100.0, tags: tuple[str, ...] = (),
             added: float = 1_000.0, **fields: object) -> NewTask:
    return NewTask(type=type, environment={"A": "1"}, tags=tags, score=score, added=added,
                   **fields)  # type: ignore[arg-type]


def claim(store: Store, tags: tuple[str, ...] = (), now: float = NOW,
          limits: dict[str, int] | None = None, worker: str = "w1") -> Task | None:
    return store.claim_task(Claim(worker=worker, tags=frozenset(tags), limits=limits or {},
                                  now=now))


def claimed(store: Store, **fields: object) -> Task:
    """Add a task and claim it (the test's queue must be otherwise empty)."""
    task = store.add_task(new_task(**fields))  # type: ignore[arg-type]
    taken = claim(store, tags=task.tags)
    assert taken is not None and taken.id == task.id
    return taken


def failed(at: float = NOW + 5, **fields: object) -> Outcome:
    return Outcome(state=TaskState.FAILED, exit_code=1, error="boom", finished=at,
                   **fields)  # type: ignore[arg-type]


# versions

def test_a_version_is_new_only_the_first_time(store: Store) -> None:
    assert store.record_version("abc", "echo", 1.0) is True
    assert store.record_version("abc", "echo", 2.0) is False


# adding and reading tasks

def test_an_added_task_is_queued_with_what_was_given(store: Store) -> None:
    task = store.add_task(NewTask(
        type="ocr", environment={"LANG": "eng"}, tags=("unix", "ocr", "unix"), score=42.5,
        added=1_000.0, not_before=2_000.0, schedule="nightly", retries=2, retry_delay=30.0,
        timeout=60.0, priority=3, inputs=("a.pdf",)))
    assert store.get_task(task.id) == task
    assert (task.type, task.state, task.environment, task.tags) == (
        "ocr", TaskState.QUEUED, {"LANG": "eng"}, ("ocr", "unix"))
    assert (task.score, task.added, task.not_before, task.schedule) == (
        42.5, 1_000.0, 2_000.0, "nightly")
    assert (task.retries, task.retry_delay, task.timeout, task.priority, task.inputs) == (
        2, 30.0, 60.0, 3, ("a.pdf",))
    assert (task.attempt, task.token, task.worker, task.attempts) == (0, None, None, ())


def test_task_ids_increase(store: Store) -> None:
    first, second = store.add_task(new_task()), store.add_task(new_task())
    assert second.id > first.id


def test_an_unknown_task_is_none(store: Store) -> None:
    assert store.get_task(999) is None


def test_a_task_directory_is_stored_when_it_starts(store: Store) -> None:
    task = claimed(store)
    store.mark_started(task.id, task.token or "", 1, NOW, "/var/tasks/echo/1")
    assert store.get_task(task.id).directory == "/var/tasks/echo/1"


# listing and counting

def ids(tasks: list[Task]) -> list[int]:
    return [t.id for t in tasks]


def test_listing_is_newest_first(store: Store) -> None:
    a, b, c = (store.add_task(new_task()) for _ in range(3))
    assert ids(store.list_tasks(TaskFilter())) == [c.id, b.id, a.id]


def test_listing_can_be_oldest_first(store: Store) -> None:
    a, b, c = (store.add_task(new_task()) for _ in range(3))
    assert ids(store.list_tasks(TaskFilter(oldest_first=True))) == [a.id, b.id, c.id]


def test_listing_filters_by_state(store: Store) -> None:
    running = claimed(store)
    queued = store.add_task(new_task())
    assert ids(store.list_tasks(TaskFilter(states=("CLAIMED",)))) == [running.id]
    assert ids(store.list_tasks(TaskFilter(states=("QUEUED", "CLAIMED")))) == [queued.id,
                                                                               running.id]


def test_listing_filters_by_type(store: Store) -> None:
    ocr = store.add_task(new_task(type="ocr"))
    store.add_task(new_task(type="echo"))
    zip_ = store.add_task(new_task(type="zip"))
    assert ids(store.list_tasks(TaskFilter(types=("ocr", "zip")))) == [zip_.id, ocr.id]


def test_listing_by_tags_returns_tasks_carrying_all_of_them(store: Store) -> None:
    both = store.add_task(new_task(tags=("gpu", "unix")))
    store.add_task(new_task(tags=("gpu",)))
    store.add_task(new_task(tags=("unixy", "gpu")))
    store.add_task(new_task())
    assert ids(store.list_tasks(TaskFilter(tags=("unix", "gpu")))) == [both.id]


def test_listing_by_tag_matches_it_literally(store: Store) -> None:
    store.add_task(new_task(tags=("gpuxbig",)))
    store.add_task(new_task(tags=("gpu%",)))
    exact = store.add_task(new_task(tags=("gpu_big",)))
    assert ids(store.list_tasks(TaskFilter(tags=("gpu_big",)))) == [exact.id]
    assert store.list_tasks(TaskFilter(tags=("gpu%big",))) == []


def test_listing_filters_by_schedule(store: Store) -> None:
    nightly = store.add_task(new_task(schedule="nightly"))
    store.add_task(new_task(schedule="hourly"))
    store.add_task(new_task())
    assert ids(store.list_tasks(TaskFilter(schedule="nightly"))) == [nightly.id]


def test_listing_added_after_is_inclusive_and_added_before_exclusive(store: Store) -> None:
    store.add_task(new_task(added=10.0))
    at_20 = store.add_task(new_task(added=20.0))
    at_25 = store.add_task(new_task(added=25.0))
    store.add_task(new_task(added=30.0))
    found = store.list_tasks(TaskFilter(added_after=20.0, added_before=30.0))
    assert ids(found) == [at_25.id, at_20.id]


def test_listing_filters_by_submitter_and_worker(store: Store) -> None:
    ran = claimed(store)  # by worker w1
    alice = store.add_task(new_task(submitted_by="alice"))
    store.add_task(new_task(submitted_by="bob"))
    assert ids(store.list_tasks(TaskFilter(submitted_by="alice"))) == [alice.id]
    assert ids(store.list_tasks(TaskFilter(worker="w1"))) == [ran.id]
    assert store.count_tasks(TaskFilter(worker="nobody")) == 0


def test_search_finds_the_id_the_type_and_environment_values_but_never_a_secret(
        store: Store) -> None:
    def add(type: str, environment: dict[str, str], secrets: tuple[str, ...] = ()) -> Task:
        return store.add_task(NewTask(type=type, environment=environment, tags=(),
                                      score=1.0, added=1.0, secrets=secrets))

    report = add("monthly_report", {"MONTH": "march"})
    backup = add("backup", {"HOST": "db-01.example", "PASSWORD": "hunter2-march"},
                 secrets=("PASSWORD",))
    odd = add("echo", {"WORD": "100%_sure"})

    def found(text: str) -> list[int]:
        return sorted(ids(store.list_tasks(TaskFilter(search=text))))

    assert found("REPORT") == [report.id]  # the type, either case
    assert found("db-01") == [backup.id]  # an environment value
    assert found("march") == [report.id]  # not the backup: march is only in its secret
    assert found("hunter2") == []
    assert found(str(odd.id)) == [odd.id]
    assert found("0%_") == [odd.id]  # % and _ are matched as themselves
    assert found("%") == [odd.id]
    assert store.count_tasks(TaskFilter(search="march")) == 1


def test_listing_pages_with_limit_and_offset(store: Store) -> None:
    tasks = [store.add_task(new_task()) for _ in range(5)]
    page = store.list_tasks(TaskFilter(limit=2, offset=1, oldest_first=True))
    assert ids(page) == [tasks[1].id, tasks[2].id]


def test_count_counts_every_match_regardless_of_paging(store: Store) -> None:
    for _ in range(3):
        store.add_task(new_task(type="ocr"))
    store.add_task(new_task(type="echo"))
    assert store.count_tasks(TaskFilter(types=("ocr",), limit=1, offset=1)) == 3
    assert store.count_tasks(TaskFilter()) == 4


def test_deleting_a_task_returns_it_and_removes_it(store: Store) -> None:
    task = store.add_task(new_task())
    assert store.delete_task(task.id) == task
    assert store.get_task(task.id) is None
    assert store.count_tasks(TaskFilter()) == 0


def test_deleting_an_unknown_task_returns_none(store: Store) -> None:
    assert store.delete_task(999) is None


# dedupe keys

def test_a_second_task_with_the_same_key_is_refused_naming_the_first(store: Store) -> None:
    first = store.add_task(new_task(dedupe_key="inbox/a.toml"))
    with pytest.raises(DuplicateTask) as refused:
        store.add_task(new_task(dedupe_key="inbox/a.toml"))
    assert refused.value.task_id == first.id
    assert store.count_tasks(TaskFilter()) == 1


def test_a_key_finds_its_task(store: Store) -> None:
    task = store.add_task(new_task(dedupe_key="k"))
    assert store.task_for_key("k") == task.id
    assert store.task_for_key("other") is None


def test_a_key_keeps_the_fingerprint_of_the_request_it_came_with(store: Store) -> None:
    task = store.add_task(new_task(dedupe_key="client:a:k", fingerprint="f1"))
    after = store.add_task(new_task(dedupe_key="client:a:w", after=(task.id,),
                                    fingerprint="f2"))
    [bulk] = store.add_tasks([new_task(dedupe_key="client:a:b:0", fingerprint="f3")])
    inbox = store.add_task(new_task(dedupe_key="inbox:x"))
    assert store.key_entry("client:a:k") == (task.id, "f1")
    assert store.key_entry("client:a:w") == (after.id, "f2")
    assert store.key_entry("client:a:b:0") == (bulk.id, "f3")
    assert store.key_entry("inbox:x") == (inbox.id, None)
    assert store.key_entry("client:a:nope") is None


def test_a_key_taken_by_another_request_refuses_the_whole_transaction(store: Store) -> None:
    first = store.add_task(new_task(dedupe_key="client:a:k", fingerprint="f1"))
    with pytest.raises(KeyReused) as refused:
        store.add_task(new_task(dedupe_key="client:a:k", fingerprint="f2"))
    assert refused.value.task_id == first.id and refused.value.status == 422
    with pytest.raises(KeyReused):  # a list whose place 1 holds it: none of it is stored
        store.add_tasks([new_task(dedupe_key="client:a:new", fingerprint="f2"),
                         new_task(dedupe_key="client:a:k", fingerprint="f2")])
    assert store.count_tasks(TaskFilter()) == 1 and store.key_entry("client:a:new") is None
    with pytest.raises(DuplicateTask):  # the same request, or one of unknown fingerprint
        store.add_task(new_task(dedupe_key="client:a:k", fingerprint="f1"))
    assert [t.id for t in store.add_tasks([new_task(dedupe_key="client:a:k")])] == [first.id]


def test_deleting_a_task_frees_its_key_and_no_other(store: Store) -> None:
    gone = store.add_task(new_task(dedupe_key="gone"))
    kept = store.add_task(new_task(dedupe_key="kept"))
    store.delete_task(gone.id)
    assert store.task_for_key("gone") is None
    assert store.task_for_key("kept") == kept.id
    again = store.add_task(new_task(dedupe_key="gone"))
    assert store.task_for_key("gone") == again.id


def test_concurrent_adds_with_one_key_make_one_task(open_another: Opener) -> None:
    stores = [open_another(), open_another()]

    def add(i: int) -> int:
        try:
            return stores[i % 2].add_task(new_task(dedupe_key="once")).id
        except DuplicateTask as refused:
            return refused.task_id

    with ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(add, range(16)))
    assert len(seen) == 1
    assert stores[0].count_tasks(TaskFilter()) == 1


def test_concurrent_lists_of_many_keys_are_stored(open_another: Opener) -> None:
    """Four lists of 10,000 keyed tasks (the most one request holds) at once: with
    PostgreSQL, a lock a key filled the server's shared lock table ("out of shared memory")."""
    stores = [open_another() for _ in range(4)]

    def add(j: int) -> int:
        return len(stores[j].add_tasks([new_task(dedupe_key=f"k{j}-{i}") for i in range(10_000)]))

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(add, range(4))) == [10_000] * 4


def test_concurrent_lists_sharing_keys_are_each_stored_whole(open_another: Opener) -> None:
    """Lists that share keys, stored at once through two stores (two servers): each answer
    holds one task a key, the same for both, and no list is stored in part."""
    stores = [open_another(), open_another()]

    def add(i: int) -> list[int]:
        keys = [f"k{(i + n) % 6}" for n in range(4)]  # each list overlaps the others
        return [t.id for t in stores[i % 2].add_tasks([new_task(dedupe_key=k) for k in keys])]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(add, range(24)))
    by_key: dict[str, set[int]] = {}
    for i, ids in enumerate(answers):
        for n, task_id in enumerate(ids):
            by_key.setdefault(f"k{(i + n) % 6}", set()).add(task_id)
    assert all(len(ids) == 1 for ids in by_key.values()), by_key
    assert stores[0].count_tasks(TaskFilter()) == 6


# claiming

def test_claiming_an_empty_queue_gives_none(store: Store) -> None:
    assert claim(store) is None


def test_claim_takes_the_lowest_score(store: Store) -> None:
    store.add_task(new_task(score=30.0))
    low = store.add_task(new_task(score=10.0))
    store.add_task(new_task(score=20.0))
    assert claim(store).id == low.id


def test_claim_breaks_score_ties_by_id(store: Store) -> None:
    first = store.add_task(new_task(type="b", score=10.0))
    store.add_task(new_task(type="a", score=10.0))
    assert claim(store).id == first.id


def test_claim_marks_the_task_claimed_by_the_worker(store: Store) -> None:
    store.add_task(new_task())
    task = claim(store, worker="w7", now=NOW)
    assert (task.state, task.worker, task.claimed, task.heartbeat) == (
        TaskState.CLAIMED, "w7", NOW, NOW)
    assert store.get_task(task.id) == task


def test_claim_binds_the_version_of_the_task_type(store: Store) -> None:
    store.add_task(new_task(type="echo"))
    store.add_task(new_task(type="other", score=200.0))
    versions = {"echo": "a" * 64}
    first = store.claim_task(Claim("w1", frozenset(), {}, NOW, versions))
    second = store.claim_task(Claim("w1", frozenset(), {}, NOW, versions))
    assert first is not None and first.version == "a" * 64
    assert second is not None and second.version is None


def test_claim_shows_the_worker_busy_with_the_task(store: Store) -> None:
    store.save_worker(Worker(id="w1", tags=(), host="h", pid=1, state="idle",
                             registered=1.0, heartbeat=1.0))
    task = claimed(store)
    worker = store.get_worker("w1")
    assert worker is not None
    assert (worker.state, worker.task, worker.heartbeat) == ("busy", task.id, NOW)


def test_claim_leaves_a_paused_worker_paused(store: Store) -> None:
    store.save_worker(Worker(id="w1", tags=(), host="h", pid=1, state="paused",
                             registered=1.0, heartbeat=1.0))
    claimed(store)
    assert store.get_worker("w1").state == "paused"  # type: ignore[union-attr]


def test_a_claimed_task_is_not_claimed_again(store: Store) -> None:
    claimed(store)
    assert claim(store) is None


def test_a_task_needing_a_tag_the_worker_lacks_is_never_claimed(store: Store) -> None:
    store.add_task(new_task(tags=("gpu", "unix"), score=1.0))
    assert claim(store, tags=("unix",)) is None


def test_a_task_is_claimed_by_a_worker_with_more_tags(store: Store) -> None:
    task = store.add_task(new_task(tags=("gpu",)))
    assert claim(store, tags=("gpu", "unix")).id == task.id


def test_a_task_without_tags_is_claimable_by_any_worker(store: Store) -> None:
    task = store.add_task(new_task())
    assert claim(store, tags=("anything",)).id == task.id


def test_an_ineligible_lower_score_is_passed_over(store: Store) -> None:
    store.add_task(new_task(tags=("gpu",), score=1.0))
    plain = store.add_task(new_task(score=50.0))
    assert claim(store).id == plain.id


def test_a_task_is_not_claimed_before_its_not_before(store: Store) -> None:
    task = store.add_task(new_task(not_before=NOW + 60))
    assert claim(store, now=NOW) is None
    assert claim(store, now=NOW + 60).id == task.id


def test_max_concurrent_counts_claimed_and_running_tasks(store: Store) -> None:
    first = claimed(store, type="ocr")
    store.mark_started(first.id, first.token, 1, NOW)
    second = store.add_task(new_task(type="ocr"))
    assert claim(store, limits={"ocr": 2}).id == second.id
    store.add_task(new_task(type="ocr"))
    assert claim(store, limits={"ocr": 2}) is None


def test_max_concurrent_leaves_other_types_claimable(store: Store) -> None:
    claimed(store, type="ocr")
    store.add_task(new_task(type="ocr", score=1.0))
    other = store.add_task(new_task(type="echo", score=99.0))
    assert claim(store, limits={"ocr": 1}).id == other.id


def test_a_finished_task_frees_its_slot(store: Store) -> None:
    task = claimed(store, type="ocr")
    waiting = store.add_task(new_task(type="ocr"))
    assert claim(store, limits={"ocr": 1}) is None
    store.finish_task(task.id, task.token, failed())
    assert claim(store, limits={"ocr": 1}).id == waiting.id


def test_each_claim_gets_a_fresh_token_and_the_next_attempt(store: Store) -> None:
    task = claimed(store)
    assert task.token and task.attempt == 1
    store.finish_task(task.id, task.token, failed(requeue_at=NOW, requeue_score=5.0))
    again = claim(store)
    assert again.id == task.id
    assert again.attempt == 2
    assert again.token and again.token != task.token


def test_concurrent_claims_take_every_task_exactly_once(open_another: Opener) -> None:
    stores = [open_another(), open_another()]
    added = {stores[0].add_task(new_task(score=float(i % 7))).id for i in range(40)}

    def drain(i: int) -> list[int]:
        taken = []
        while (task := claim(stores[i % 2], worker=f"w{i}")) is not None:
            taken.append(task.id)
        return taken

    with ThreadPoolExecutor(8) as pool:
        taken = [task_id for batch in pool.map(drain, range(8)) for task_id in batch]
    assert sorted(taken) == sorted(added)


def test_concurrent_claims_respect_max_concurrent(open_another: Opener) -> None:
    stores = [open_another(), open_another()]

    limits = {f"ocr{round_}": 3 for round_ in range(6)}

    def drain(i: int) -> int:
        count = 0
        while claim(stores[i % 2], limits=limits, worker=f"w{i}") is not None:
            count += 1
        return count

    # Several rounds, because a missing cap lock shows only when claimers interleave.
    for type_name in limits:
        for _ in range(12):
            stores[0].add_task(new_task(type=type_name))
        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(drain, range(8))) == 3


# reports from the attempt that holds the task

def with_token(verb: str) -> Callable[[Store, int, str], object]:
    return {
        "bind_version": lambda s, i, t: s.bind_version(i, t, "v1"),
        "mark_started": lambda s, i, t: s.mark_started(i, t, 123, NOW),
        "heartbeat_task": lambda s, i, t: s.heartbeat_task(i, t, NOW),
        "set_progress": lambda s, i, t: s.set_progress(i, t, 50, "half"),
        "finish_task": lambda s, i, t: s.finish_task(i, t, failed()),
    }[verb]


VERBS = ["bind_version", "mark_started", "heartbeat_task", "set_progress", "finish_task"]


@pytest.mark.parametrize("verb", VERBS)
def test_a_report_from_an_earlier_attempt_is_refused(store: Store, verb: str) -> None:
    old = claimed(store)
    store.finish_task(old.id, old.token, failed(requeue_at=NOW, requeue_score=1.0))
    current = claim(store)
    with pytest.raises(StaleAttempt):
        with_token(verb)(store, old.id, old.token)
    assert store.get_task(old.id) == current


@pytest.mark.parametrize("verb", VERBS)
def test_a_report_after_the_task_ended_is_refused(store: Store, verb: str) -> None:
    task = claimed(store)
    store.finish_task(task.id, task.token, failed())
    with pytest.raises(StaleAttempt):
        with_token(verb)(store, task.id, task.token)


@pytest.mark.parametrize("verb", VERBS)
def test_a_report_for_an_unknown_task_is_not_found(store: Store, verb: str) -> None:
    with pytest.raises(NotFound):
        with_token(verb)(store, 999, "token")


def test_binding_a_version_records_it(store: Store) -> None:
    task = claimed(store)
    assert store.bind_version(task.id, task.token, "abc123").version == "abc123"


def test_marking_started_records_running_time_and_pid(store: Store) -> None:
    task = claimed(store)
    running = store.mark_started(task.id, task.token, 4242, NOW + 1)
    assert (running.state, running.started, running.pid, running.heartbeat) == (
        TaskState.RUNNING, NOW + 1, 4242, NOW + 1)


def test_a_heartbeat_records_its_time(store: Store) -> None:
    task = claimed(store)
    assert store.heartbeat_task(task.id, task.token, NOW + 9).heartbeat == NOW + 9


def test_a_heartbeat_shows_its_worker_alive_too(store: Store) -> None:
    store.save_worker(Worker(id="w1", tags=(), host="h", pid=1, state="idle",
                             registered=1.0, heartbeat=1.0))
    task = claimed(store)
    store.heartbeat_task(task.id, task.token or "", NOW + 9)
    assert store.get_worker("w1").heartbeat == NOW + 9  # type: ignore[union-attr]


def test_progress_is_recorded_with_its_message(store: Store) -> None:
    task = claimed(store)
    updated = store.set_progress(task.id, task.token, 40, "pages")
    assert (updated.progress, updated.progress_message) == (40, "pages")


def test_progress_without_a_token_is_taken_while_the_task_runs(store: Store) -> None:
    task = claimed(store)
    assert store.set_progress(task.id, None, 70, None).progress == 70


def test_progress_without_a_token_is_refused_for_a_queued_task(store: Store) -> None:
    task = store.add_task(new_task())
    with pytest.raises(StaleAttempt):
        store.set_progress(task.id, None, 70, None)


def test_progress_without_a_token_for_an_unknown_task_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.set_progress(999, None, 70, None)


# finishing

def test_a_requeued_task_waits_with_its_new_time_and_score(store: Store) -> None:
    task = claimed(store)
    back = store.finish_task(task.id, task.token, failed(requeue_at=NOW + 30,
                                                         requeue_score=77.0))
    assert (back.state, back.not_before, back.score, back.token, back.worker) == (
        TaskState.QUEUED, NOW + 30, 77.0, None, None)
    assert claim(store, now=NOW + 29) is None
    assert claim(store, now=NOW + 30).id == task.id


def test_a_requeue_appends_the_attempt_to_the_history(store: Store) -> None:
    task = claimed(store)
    store.bind_version(task.id, task.token, "v1")
    store.mark_started(task.id, task.token, 7, NOW + 1)
    back = store.finish_task(task.id, task.token, failed(at=NOW + 5, requeue_at=NOW,
                                                         requeue_score=1.0))
    assert back.attempts == ({
        "attempt": 1, "worker": "w1", "state": "FAILED", "claimed": NOW, "started": NOW + 1,
        "finished": NOW + 5, "exit_code": 1, "error": "boom", "version": "v1"},)


def test_a_final_finish_records_state_exit_code_error_and_attempts(store: Store) -> None:
    task = claimed(store)
    store.finish_task(task.id, task.token, failed(requeue_at=NOW, requeue_score=1.0))
    again = claim(store)
    done = store.finish_task(again.id, again.token, Outcome(
        state=TaskState.TIMEDOUT, exit_code=None, error="ran past 60s", finished=NOW + 60))
    assert store.get_task(task.id) == done
    assert (done.state, done.exit_code, done.error, done.finished, done.token) == (
        TaskState.TIMEDOUT, None, "ran past 60s", NOW + 60, None)
    assert [(a["attempt"], a["state"]) for a in done.attempts] == [(1, "FAILED"),
                                                                   (2, "TIMEDOUT")]


# stopping

def test_a_stop_request_marks_an_active_task(store: Store) -> None:
    task = claimed(store)
    assert store.request_stop(task.id).stop_requested is True


def test_a_stop_request_leaves_a_queued_task_unmarked(store: Store) -> None:
    task = store.add_task(new_task())
    assert store.request_stop(task.id).stop_requested is False


def test_a_stop_request_for_an_unknown_task_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.request_stop(999)


def test_a_finish_can_carry_a_start_that_was_not_reported(store: Store) -> None:
    task = claimed(store)
    ended = store.finish_task(task.id, task.token or "", Outcome(
        TaskState.SUCCESS, 0, None, NOW + 2, started=NOW + 1, pid=42, directory="/w/1"))
    assert (ended.started, ended.pid, ended.directory) == (NOW + 1, 42, "/w/1")
    assert ended.attempts[-1]["started"] == NOW + 1


def test_a_reported_start_is_not_overwritten_by_the_finish(store: Store) -> None:
    task = claimed(store)
    store.mark_started(task.id, task.token or "", 7, NOW + 1, "/w/first")
    ended = store.finish_task(task.id, task.token or "", Outcome(
        TaskState.SUCCESS, 0, None, NOW + 3, started=NOW + 2, pid=8))
    assert (ended.started, ended.pid, ended.directory) == (NOW + 1, 7, "/w/first")


def test_a_new_claim_clears_an_old_stop_request(store: Store) -> None:
    task = claimed(store)
    store.request_stop(task.id)
    store.finish_task(task.id, task.token, failed(requeue_at=NOW, requeue_score=1.0))
    assert claim(store).stop_requested is False


def test_stopping_a_queued_task_ends_it_at_once(store: Store) -> None:
    task = store.add_task(new_task())
    stopped = store.stop_queued(task.id, NOW)
    assert (stopped.state, stopped.finished) == (TaskState.STOPPED, NOW)
    assert claim(store) is None


def test_stopping_a_task_that_is_not_queued_gives_none(store: Store) -> None:
    task = claimed(store)
    assert store.stop_queued(task.id, NOW) is None
    assert store.stop_queued(999, NOW) is None
    assert store.get_task(task.id).state == TaskState.CLAIMED


# what the reaper and the wake-up timer ask

def test_stale_tasks_are_active_ones_with_an_old_heartbeat(store: Store) -> None:
    old = claimed(store)
    fresh = store.add_task(new_task())
    fresh = claim(store, now=NOW + 100)
    store.mark_started(fresh.id, fresh.token, 1, NOW + 100)
    store.add_task(new_task())
    assert ids(store.stale_tasks(NOW + 50)) == [old.id]


def test_next_not_before_is_the_earliest_future_start(store: Store) -> None:
    store.add_task(new_task(not_before=NOW - 10))
    store.add_task(new_task(not_before=NOW + 90))
    store.add_task(new_task(not_before=NOW + 30))
    assert store.next_not_before(NOW) == NOW + 30


def test_next_not_before_ignores_tasks_no_longer_queued(store: Store) -> None:
    task = store.add_task(new_task(not_before=NOW + 30))
    store.stop_queued(task.id, NOW)
    store.add_task(new_task())
    assert store.next_not_before(NOW) is None


def run_to_end(store: Store, started: float, finished: float,
               state: TaskState = TaskState.SUCCESS) -> None:
    task = claimed(store, type="ocr")
    store.mark_started(task.id, task.token, 1, started)
    store.finish_task(task.id, task.token, Outcome(state=state, exit_code=0, finished=finished))


def test_recent_durations_are_successful_runs_newest_first(store: Store) -> None:
    run_to_end(store, started=100.0, finished=110.0)
    run_to_end(store, started=200.0, finished=230.0)
    run_to_end(store, started=300.0, finished=399.0, state=TaskState.FAILED)
    run_to_end(store, started=150.0, finished=155.0)
    assert store.recent_durations("ocr") == [30.0, 5.0, 10.0]
    assert store.recent_durations("ocr", limit=1) == [30.0]
    assert store.recent_durations("echo") == []


# workers

def worker(id: str = "w1", state: str = "idle", heartbeat: float = NOW,
           registered: float = NOW) -> Worker:
    return Worker(id=id, tags=("unix", "gpu"), host="box", pid=77, state=state,
                  registered=registered, heartbeat=heartbeat)


def test_a_saved_worker_reads_back(store: Store) -> None:
    store.save_worker(worker())
    assert store.get_worker("w1") == worker()
    assert store.get_worker("w2") is None


def test_saving_a_worker_again_updates_it_and_its_registration(store: Store) -> None:
    # A worker registering again under its id (restarted, or --id) registered now: the list
    # shows when its process joined, as the registration's answer says.
    store.save_worker(worker())
    store.save_worker(Worker(id="w1", tags=("unix",), host="box", pid=78, state="busy",
                             registered=NOW + 5, heartbeat=NOW + 5, task=3, stop_mode="finish"))
    assert store.get_worker("w1") == Worker(
        id="w1", tags=("unix",), host="box", pid=78, state="busy", registered=NOW + 5,
        heartbeat=NOW + 5, task=3, stop_mode="finish")


def test_workers_are_listed_by_id(store: Store) -> None:
    for name in ("w2", "w3", "w1"):
        store.save_worker(worker(name))
    assert [w.id for w in store.list_workers()] == ["w1", "w2", "w3"]


def test_deleting_a_worker_says_whether_it_existed(store: Store) -> None:
    store.save_worker(worker())
    assert store.delete_worker("w1") is True
    assert store.delete_worker("w1") is False
    assert store.list_workers() == []


@pytest.mark.parametrize(("before", "task", "after"), [
    ("idle", 5, "busy"), ("busy", None, "idle"), ("gone", None, "idle"),
    ("paused", 5, "paused"), ("stopping", None, "stopping"),
])
def test_touching_a_worker_records_its_task_and_keeps_a_pause_or_stop(
        store: Store, before: str, task: int | None, after: str) -> None:
    store.save_worker(worker(state=before))
    store.touch_worker("w1", task, NOW + 9)
    touched = store.get_worker("w1")
    assert touched is not None
    assert (touched.state, touched.task, touched.heartbeat) == (after, task, NOW + 9)
    store.touch_worker("nobody", None, NOW)  # a worker removed meanwhile: nothing to do
    assert store.get_worker("nobody") is None


def test_pausing_and_resuming_a_worker(store: Store) -> None:
    store.save_worker(worker())
    assert store.set_worker_state("w1", "paused").state == "paused"  # type: ignore[union-attr]
    store.touch_worker("w1", 5, NOW)  # a claim's touch does not undo the pause
    assert store.get_worker("w1").state == "paused"  # type: ignore[union-attr]
    resumed = store.set_worker_state("w1", "idle")
    assert resumed is not None and (resumed.state, resumed.task) == ("busy", 5)
    assert store.set_worker_state("nobody", "paused") is None


def test_a_stopping_worker_can_be_neither_paused_nor_resumed(store: Store) -> None:
    store.save_worker(worker())
    stopping = store.stop_worker("w1", "handback")
    assert stopping is not None and (stopping.state, stopping.stop_mode) == ("stopping", "handback")
    assert store.set_worker_state("w1", "paused").state == "stopping"  # type: ignore[union-attr]
    assert store.stop_worker("nobody", "finish") is None


# schedules

def test_schedule_state_round_trips(store: Store) -> None:
    state = ScheduleState(name="nightly", next_fire=NOW + 60, last_fire=NOW, last_task=4,
                          paused=True)
    store.save_schedule_state(state)
    assert store.get_schedule_state("nightly") == state
    assert store.get_schedule_state("hourly") is None


def test_planned_schedules_are_those_with_a_next_fire_or_a_waiting_run(store: Store) -> None:
    store.save_schedule_state(ScheduleState(name="b-next", next_fire=1.0))
    store.save_schedule_state(ScheduleState(name="a-waiting", pending_fire=2.0))
    store.save_schedule_state(ScheduleState(name="c-stopped", last_fire=1.0))
    assert store.planned_schedules() == ["a-waiting", "b-next"]


def test_saving_schedule_state_again_replaces_it(store: Store) -> None:
    store.save_schedule_state(ScheduleState(name="nightly", next_fire=1.0, paused=True))
    store.save_schedule_state(ScheduleState(name="nightly", next_fire=2.0, last_fire=1.0))
    assert store.get_schedule_state("nightly") == ScheduleState(
        name="nightly", next_fire=2.0, last_fire=1.0)


def test_a_pending_fire_round_trips_and_clears(store: Store) -> None:
    waiting = ScheduleState(name="nightly", next_fire=NOW + 60, last_fire=NOW - 60,
                            pending_fire=NOW)
    store.save_schedule_state(waiting)
    assert store.get_schedule_state("nightly") == waiting
    store.save_schedule_state(replace(waiting, pending_fire=None))
    assert store.get_schedule_state("nightly").pending_fire is None  # type: ignore[union-attr]


# migrations

def make_version_1_database(backend: str, url: str) -> None:
    """A database as blanket left it at schema version 1, with one schedule's state."""
    [(number, schema), *_] = load_migrations(backend)
    insert = "INSERT INTO schedule_state (name, next_fire) VALUES ('nightly', 10000.0)"
    if backend == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            db.executescript(schema)
            db.execute(insert)
            db.execute(f"PRAGMA user_version = {number}")
            db.commit()
        return
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(POSTGRES["create_schema_table"])
        db.execute(schema)
        db.execute(insert)
        db.execute("INSERT INTO blanket_schema (version, applied) VALUES (%s, 0)", (number,))


def applied_versions(backend: str, url: str) -> list[int]:
    if backend == "sqlite":
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            last = db.execute("PRAGMA user_version").fetchone()[0]  # SQLite keeps the last
        return [n for n, _ in load_migrations(backend) if n <= last]
    with psycopg.connect(url) as db:
        return [r[0] for r in db.execute("SELECT version FROM blanket_schema ORDER BY 1")]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_version_1_database_is_migrated_keeping_its_data(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        make_version_1_database(backend, url)
        with opener(url) as open_one:
            store = open_one()
            assert store.get_schedule_state("nightly") == ScheduleState("nightly", NOW)
            store.save_schedule_state(ScheduleState("nightly", NOW, pending_fire=NOW - 1))
            assert store.get_schedule_state("nightly").pending_fire == NOW - 1  # type: ignore[union-attr]
        assert applied_versions(backend, url) == [n for n, _ in load_migrations(backend)]


# wake-ups

def counting(store: Store) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    store.on_change = lambda *topics: calls.append(topics)
    return calls


def test_adding_a_task_wakes_claims(store: Store) -> None:
    calls = counting(store)
    store.add_task(new_task())
    assert calls == [(QUEUE,)]


def test_finishing_a_task_wakes_claims_and_its_own_waiters(store: Store) -> None:
    task = claimed(store)
    calls = counting(store)
    store.finish_task(task.id, task.token, failed())
    assert calls == [(QUEUE, task_topic(task.id))]


def test_stopping_a_queued_task_wakes_its_waiters(store: Store) -> None:
    task = store.add_task(new_task())
    calls = counting(store)
    store.stop_queued(task.id, NOW)
    assert calls == [(task_topic(task.id),)]


def test_announce_wakes_the_topics_it_names(store: Store) -> None:
    calls = counting(store)
    store.announce(worker_topic("w1"))
    assert calls == [(worker_topic("w1"),)]


# opening

def test_opening_the_same_database_again_keeps_its_data(open_another: Opener) -> None:
    task = open_another().add_task(new_task())
    again = open_another()
    assert again.get_task(task.id) == task
    assert again.add_task(new_task()).id > task.id


# the claim rule, as a property

@st.composite
def queues(draw: st.DrawFn) -> tuple[list[NewTask], frozenset[str], dict[str, int]]:
    tags = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3, unique=True)
    tasks = draw(st.lists(st.builds(
        lambda type_, score, task_tags, not_before: new_task(
            type=type_, score=score, tags=tuple(task_tags), not_before=not_before),
        st.sampled_from(["x", "y"]), st.sampled_from([1.0, 2.0, 3.0, 2.5]), tags,
        st.none() | st.sampled_from([NOW - 1, NOW, NOW + 1])), max_size=8))
    limits = draw(st.dictionaries(st.sampled_from(["x", "y"]), st.sampled_from([0, 1])))
    return tasks, frozenset(draw(tags)), limits


# Each example empties the queue it filled, so one store serves every example.
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue=queues())
def test_the_claimed_task_is_the_lowest_score_then_id_among_eligible_ones(
        store: Store, queue: tuple[list[NewTask], frozenset[str], dict[str, int]]) -> None:
    tasks, worker_tags, limits = queue
    added = [store.add_task(t) for t in tasks]
    try:
        eligible = [t for t in added
                    if set(t.tags) <= worker_tags
                    and (t.not_before is None or t.not_before <= NOW)
                    and limits.get(t.type, 1) > 0]
        expected = min(eligible, key=lambda t: (t.score, t.id), default=None)
        got = claim(store, tags=tuple(worker_tags), limits=limits)
        assert (got and got.id) == (expected and expected.id)
    finally:
        for task in added:
            store.delete_task(task.id)


# PostgreSQL only: several servers on one database

def test_a_change_on_one_server_wakes_another(open_postgres: Opener) -> None:
    here, there = open_postgres(), open_postgres()
    heard: queue.Queue[tuple[str, ...]] = queue.Queue()
    there.on_change = lambda *topics: heard.put(topics)
    task = here.add_task(new_task())
    assert heard.get(timeout=10) == (QUEUE,)
    here.stop_queued(task.id, NOW)
    assert heard.get(timeout=10) == (task_topic(task.id),)
    here.announce(worker_topic("w1"))  # a worker paused or stopped through another server
    assert heard.get(timeout=10) == (worker_topic("w1"),)


def test_only_one_server_holds_the_scheduler_lock(open_postgres: Opener) -> None:
    first, second = open_postgres(), open_postgres()
    assert first.try_scheduler_lock() is True
    assert first.try_scheduler_lock() is True
    assert second.try_scheduler_lock() is False


def test_the_scheduler_lock_passes_on_when_its_holder_closes(open_postgres: Opener) -> None:
    first, second = open_postgres(), open_postgres()
    first.try_scheduler_lock()
    first.close()
    assert second.try_scheduler_lock() is True


def test_servers_starting_together_migrate_once(open_postgres: Opener) -> None:
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_postgres(), range(4)))
    task = stores[0].add_task(new_task())
    assert all(s.get_task(task.id) == task for s in stores)


# several at once

def test_a_task_is_placed_before_anyone_can_see_or_claim_it(open_another) -> None:
    store, other = open_another(), open_another()
    calls = counting(store)
    seen: list[tuple[int, Task | None, list]] = []

    def place(task_id: int) -> None:
        seen.append((task_id, other.get_task(task_id), list(calls)))

    task = store.add_task(new_task(), place)
    assert seen == [(task.id, None, [])]  # not yet committed, nobody woken
    assert other.get_task(task.id) is not None and calls == [(QUEUE,)]


def test_a_placement_that_fails_stores_nothing(store: Store) -> None:
    def place(task_id: int) -> None:
        raise PermissionError(13, "Permission denied")

    calls = counting(store)
    with pytest.raises(PermissionError):
        store.add_task(new_task(dedupe_key="k"), place)
    assert store.count_tasks(TaskFilter()) == 0 and store.task_for_key("k") is None
    assert not calls
    assert store.add_task(new_task(dedupe_key="k")).id  # the key is free again


def test_a_duplicate_is_not_placed(store: Store) -> None:
    store.add_task(new_task(dedupe_key="k"))
    placed: list[int] = []
    with pytest.raises(DuplicateTask):
        store.add_task(new_task(dedupe_key="k"), placed.append)
    assert placed == []


def test_add_tasks_stores_them_in_order_in_one_call(store: Store) -> None:
    calls = counting(store)
    tasks = store.add_tasks([new_task(score=3.0), new_task(score=1.0), new_task(score=2.0)])
    assert [t.score for t in tasks] == [3.0, 1.0, 2.0]
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)
    assert ids(store.list_tasks(TaskFilter(oldest_first=True))) == [t.id for t in tasks]
    assert len(calls) == 1


def test_add_tasks_gives_back_each_task_as_the_store_holds_it(store: Store) -> None:
    store.add_task(new_task())  # ids already taken before the batch
    news = [new_task(tags=("b", "a", "b"), not_before=2_000.0, schedule="nightly", retries=2,
                     retry_delay=1.5, timeout=60.0, priority=-3, inputs=("in.txt",),
                     submitted_by="alice", secrets=("A",)),
            new_task(type="other", score=5.0)]
    given = store.add_tasks(news)
    assert given == [store.get_task(task.id) for task in given]
    assert [task.id for task in given] == [given[0].id, given[0].id + 1]


def test_add_tasks_gives_back_the_holder_of_a_used_key(store: Store) -> None:
    first = store.add_task(new_task(dedupe_key="k1"))
    tasks = store.add_tasks([new_task(dedupe_key="k1"), new_task(dedupe_key="k2"),
                             new_task(dedupe_key="k2")])
    assert tasks[0].id == first.id
    assert tasks[1].id == tasks[2].id != first.id
    assert store.count_tasks(TaskFilter()) == 2


def test_add_tasks_with_nothing_stores_nothing(store: Store) -> None:
    calls = counting(store)
    assert store.add_tasks([]) == []
    assert store.count_tasks(TaskFilter()) == 0 and not calls


# an end report that takes the next task

def test_finish_and_claim_ends_one_task_and_claims_the_next(store: Store) -> None:
    task = claimed(store)
    following = store.add_task(new_task())
    ended, taken = store.finish_and_claim(task.id, task.token or "", failed(),
                                          [Claim("w1", frozenset(), {}, NOW)])
    assert ended.state is TaskState.FAILED
    assert [t.id for t in taken] == [following.id] and taken[0].state is TaskState.CLAIMED


def test_finish_and_claim_with_an_empty_queue_claims_nothing(store: Store) -> None:
    task = claimed(store)
    ended, taken = store.finish_and_claim(task.id, task.token or "", failed(),
                                          [Claim("w1", frozenset(), {}, NOW)])
    assert ended.state is TaskState.FAILED and taken == []


def test_finish_and_claim_uses_the_slot_it_frees(store: Store) -> None:
    task = claimed(store, type="capped")
    following = store.add_task(new_task(type="capped"))
    _, taken = store.finish_and_claim(task.id, task.token or "", failed(),
                                      [Claim("w1", frozenset(), {"capped": 1}, NOW)])
    assert [t.id for t in taken] == [following.id]


def test_a_refused_finish_claims_nothing(store: Store) -> None:
    task = claimed(store)
    waiting = store.add_task(new_task())
    with pytest.raises(StaleAttempt):
        store.finish_and_claim(task.id, "not-the-token", failed(),
                               [Claim("w1", frozenset(), {}, NOW)])
    assert store.get_task(waiting.id).state is TaskState.QUEUED  # type: ignore[union-attr]


# a worker process's end reports, together

def test_an_exchange_ends_several_attempts_and_refuses_a_stale_one_alone(store: Store) -> None:
    first, second = claimed(store), claimed(store)
    waiting = store.add_task(new_task())
    ended, taken = store.exchange([
        End(first.id, first.token or "", failed()),
        End(second.id, "not-the-token", failed()),
        End(999999, "nothing", failed()),
    ], [Claim("w2", frozenset(), {}, NOW)])
    assert isinstance(ended[0], Task) and ended[0].state is TaskState.FAILED
    assert isinstance(ended[1], StaleAttempt) and isinstance(ended[2], NotFound)
    assert store.get_task(second.id).state is TaskState.CLAIMED  # type: ignore[union-attr]
    assert [t.id for t in taken] == [waiting.id] and taken[0].worker == "w2"


def test_an_exchange_claims_for_each_slot_until_the_queue_is_empty(store: Store) -> None:
    one, two = claimed(store), claimed(store)
    queued = [store.add_task(new_task(score=n)) for n in (1, 2)]
    ended, taken = store.exchange(
        [End(one.id, one.token or "", failed()), End(two.id, two.token or "", failed())],
        [Claim(slot, frozenset(), {}, NOW) for slot in ("w1", "w2", "w3")])
    assert all(isinstance(task, Task) for task in ended)
    assert [(t.id, t.worker) if t else None for t in taken] == [
        (queued[0].id, "w1"), (queued[1].id, "w2"), None]


def test_a_slot_running_its_reserve_is_recorded_even_when_its_claim_finds_nothing(
        store: Store) -> None:
    # The first slot's claim finds an empty queue; the second's, which names the reserve it
    # now runs, still records it as its task (the reaper tells reserves by that record).
    for slot in ("w1", "w2"):
        store.save_worker(Worker(id=slot, tags=(), host="h", pid=1, state="busy",
                                 registered=NOW, heartbeat=NOW))
    one, two = claimed(store), claimed(store)
    _, taken = store.exchange(
        [End(one.id, one.token or "", failed()), End(two.id, two.token or "", failed())],
        [Claim("w1", frozenset(), {}, NOW, end=0),
         Claim("w2", frozenset(), {}, NOW, reserve=True, running=4242, end=1)])
    assert taken == [None, None]
    assert store.get_worker("w2").task == 4242  # type: ignore[union-attr]


def test_a_reserve_that_finds_nothing_does_not_keep_the_next_slot_from_its_task(
        store: Store) -> None:
    # The first slot's reserve passes over the queued task (an idle worker could take it);
    # the second slot's plain claim after it still takes it, in the same exchange.
    store.save_worker(Worker(id="idle", tags=(), host="h", pid=1, state="idle",
                             registered=NOW, heartbeat=NOW))
    one, two = claimed(store), claimed(store)
    queued = store.add_task(new_task())
    _, taken = store.exchange(
        [End(one.id, one.token or "", failed()), End(two.id, two.token or "", failed())],
        [Claim("w1", frozenset(), {}, NOW, reserve=True, end=0),
         Claim("w2", frozenset(), {}, NOW, end=1),
         Claim("w3", frozenset(), {}, NOW, end=1)])
    assert taken[0] is None and taken[2] is None
    assert taken[1] is not None and (taken[1].id, taken[1].worker) == (queued.id, "w2")


def test_an_all_or_none_exchange_with_a_stale_end_changes_nothing(store: Store) -> None:
    first, second = claimed(store), claimed(store)
    with pytest.raises(StaleAttempt):
        store.exchange([End(first.id, first.token or "", failed()),
                        End(second.id, "not-the-token", failed())], all_or_none=True)
    assert store.get_task(first.id).state is TaskState.CLAIMED  # type: ignore[union-attr]


def test_an_exchange_wakes_the_ended_tasks_waiters(store: Store) -> None:
    first, second = claimed(store), claimed(store)
    calls = counting(store)
    store.exchange([End(first.id, first.token or "", failed()),
                    End(second.id, second.token or "", failed())])
    woken = {topic for topics in calls for topic in topics}
    assert {QUEUE, task_topic(first.id), task_topic(second.id)} <= woken


# a busy worker's reserve

def test_finish_and_claim_takes_the_next_task_and_a_reserve(store: Store) -> None:
    store.save_worker(worker())
    task = claimed(store)
    second, third = store.add_task(new_task(score=1)), store.add_task(new_task(score=2))
    _, taken = store.finish_and_claim(task.id, task.token or "", failed(), [
        Claim("w1", frozenset(), {}, NOW), Claim("w1", frozenset(), {}, NOW, reserve=True)])
    assert [t.id for t in taken] == [second.id, third.id]
    assert all(t.state is TaskState.CLAIMED and t.worker == "w1" for t in taken)
    # the worker's record shows the task it runs next, not its reserve
    assert store.get_worker("w1").task == second.id  # type: ignore[union-attr]


def test_a_reserve_is_not_taken_where_an_idle_worker_could_take_it(store: Store) -> None:
    store.save_worker(worker("w1", state="busy"))
    store.save_worker(Worker(id="idle-gpu", tags=("gpu",), host="box", pid=1, state="idle",
                             registered=NOW, heartbeat=NOW - 5))
    task = claimed(store)
    for_gpu = store.add_task(new_task(tags=("gpu",), score=1))
    for_unix = store.add_task(new_task(tags=("unix",), score=2))
    _, taken = store.finish_and_claim(task.id, task.token or "", failed(), [
        Claim("w1", frozenset({"unix", "gpu"}), {}, NOW, reserve=True, running=for_gpu.id)])
    # the idle worker could start the gpu task (and any untagged one): only unix is reserved
    assert [t.id for t in taken] == [for_unix.id]
    assert store.get_worker("w1").task == for_gpu.id  # type: ignore[union-attr]


def test_an_idle_worker_silent_for_long_does_not_hold_back_reserves(store: Store) -> None:
    store.save_worker(worker("w1", state="busy"))
    store.save_worker(Worker(id="gone-quiet", tags=(), host="box", pid=1, state="idle",
                             registered=0.0, heartbeat=NOW - 10 * 60))
    task = claimed(store)
    waiting = store.add_task(new_task())
    _, taken = store.finish_and_claim(task.id, task.token or "", failed(), [
        Claim("w1", frozenset(), {}, NOW, reserve=True)])
    assert [t.id for t in taken] == [waiting.id]


def test_passes_over_tells_of_queued_tasks_needing_a_tag_the_worker_lacks(store: Store) -> None:
    assert store.passes_over(frozenset()) is False  # nothing queued
    store.add_task(new_task(tags=()))
    store.add_task(new_task(tags=("unix",)))
    assert store.passes_over(frozenset({"unix"})) is False
    store.add_task(new_task(type="other", tags=("gpu", "unix")))
    assert store.passes_over(frozenset({"unix"})) is True
    assert store.passes_over(frozenset({"unix", "gpu", "extra"})) is False


def test_the_worker_of_an_attempt_is_found_by_its_token(store: Store) -> None:
    store.save_worker(worker())
    task = claimed(store)
    found = store.attempt_worker(task.id, task.token or "")
    assert found is not None and found.id == "w1" and set(found.tags) == {"gpu", "unix"}
    assert store.attempt_worker(task.id, "not-the-token") is None
    assert store.attempt_worker(99999, task.token or "") is None


def test_a_released_task_is_queued_again_as_if_never_claimed(store: Store) -> None:
    store.save_worker(worker())
    queued = store.add_task(new_task())
    taken = claim(store)
    assert taken is not None and taken.attempt == queued.attempt + 1
    calls = counting(store)
    back = store.release_task(taken.id, taken.token or "")
    assert back.state is TaskState.QUEUED and back.worker is None and back.token is None
    assert back.attempt == queued.attempt and back.attempts == ()
    assert QUEUE in calls[-1]  # idle claims hear of it
    again = claim(store, worker="w2")
    assert again is not None and again.id == queued.id and again.attempt == queued.attempt + 1


def test_a_started_or_superseded_task_is_not_released(store: Store) -> None:
    task = claimed(store)
    store.mark_started(task.id, task.token or "", 123, NOW, None)
    with pytest.raises(StaleAttempt):
        store.release_task(task.id, task.token or "")
    other = claimed(store)
    with pytest.raises(StaleAttempt):
        store.release_task(other.id, "not-the-token")
    with pytest.raises(NotFound):
        store.release_task(99999, "whatever")
    assert store.get_task(task.id).state is TaskState.RUNNING  # type: ignore[union-attr]


def test_an_outcome_function_sees_the_task_as_the_finish_reads_it(store: Store) -> None:
    # The retry policy decides on the row inside the finishing transaction, so a stop asked
    # for just before the end report is never answered by queueing the task again.
    task = claimed(store)
    store.request_stop(task.id)
    seen: list[Task] = []

    def decide(current: Task) -> Outcome:
        seen.append(current)
        return failed()

    ended = store.finish_task(task.id, task.token or "", decide)
    assert [t.stop_requested for t in seen] == [True]
    assert ended.state is TaskState.FAILED


def test_an_outcome_function_is_not_called_for_a_stale_report(store: Store) -> None:
    task = claimed(store)
    called: list[Task] = []
    with pytest.raises(StaleAttempt):
        store.finish_task(task.id, "not-the-token", lambda t: called.append(t) or failed())
    assert not called


# attempts whose worker died

def lost(at: float = NOW + 5, again: float | None = NOW + 5) -> Outcome:
    return Outcome(state=TaskState.LOST, error="worker w1 stopped answering", finished=at,
                   requeue_at=again, requeue_score=50.0, lost="worker w1 stopped answering")


def test_a_lost_attempt_with_attempts_left_is_queued_again_and_recorded_lost(
        store: Store) -> None:
    task = claimed(store, retries=1)
    again = store.lose_task(task.id, task.token or "", lost())
    assert (again.state, again.not_before, again.score) == (TaskState.QUEUED, NOW + 5, 50.0)
    assert [(a["state"], a["error"]) for a in again.attempts] == [
        ("LOST", "worker w1 stopped answering")]


def test_a_lost_attempt_that_never_started_spends_an_attempt(store: Store) -> None:
    task = claimed(store, retries=0)
    ended = store.lose_task(task.id, task.token or "", lost())
    assert ended.state is TaskState.FAILED
    assert ended.error == "its worker died 1 time (last: worker w1 stopped answering)"
    assert claim(store, now=NOW + 10) is None


def test_a_task_whose_workers_keep_dying_fails_after_its_retries_counting_them(
        store: Store) -> None:
    task = store.add_task(new_task(retries=2))
    for n in range(3):
        taken = claim(store, now=NOW + 10 * n)
        assert taken is not None and taken.id == task.id
        ended = store.lose_task(task.id, taken.token or "", lost(again=NOW + 10 * n))
    assert ended.state is TaskState.FAILED and ended.finished == NOW + 5
    assert ended.error == "its worker died 3 times (last: worker w1 stopped answering)"
    assert [a["state"] for a in ended.attempts] == ["LOST", "LOST", "LOST"]


def test_only_deaths_are_counted_as_deaths(store: Store) -> None:
    task = claimed(store, retries=1)
    store.finish_task(task.id, task.token or "", failed(requeue_at=NOW, requeue_score=1.0))
    again = claim(store, now=NOW + 1)
    assert again is not None
    ended = store.lose_task(task.id, again.token or "", lost())
    assert ended.error == "its worker died 1 time (last: worker w1 stopped answering)"
    assert [a["state"] for a in ended.attempts] == ["FAILED", "LOST"]


def test_a_lost_reserve_spends_no_attempt_once(store: Store) -> None:
    # A reserve its worker never started is queued again with its attempt given back, and
    # the history says so; a second such loss counts (the worker may have started it just
    # before it died, its report on the way), so a task that kills its workers still ends.
    task = claimed(store, retries=0)
    again = store.lose_task(task.id, task.token or "", replace(lost(), refund=True))
    assert (again.state, again.attempt, again.score) == (TaskState.QUEUED, 0, 50.0)
    assert [(a["state"], a.get("refunded")) for a in again.attempts] == [("LOST", True)]
    taken = claim(store, now=NOW + 10)
    assert taken is not None and taken.attempt == 1
    ended = store.lose_task(task.id, taken.token or "", replace(lost(), refund=True))
    assert ended.state is TaskState.FAILED
    assert ended.error == "its worker died 2 times (last: worker w1 stopped answering)"
    assert [a.get("refunded", False) for a in ended.attempts] == [True, False]


def test_a_lost_attempt_of_a_task_asked_to_stop_ends_it_stopped(store: Store) -> None:
    task = claimed(store, retries=3)
    store.request_stop(task.id, "ann")
    ended = store.lose_task(task.id, task.token or "", lost())
    assert (ended.state, ended.error) == (TaskState.STOPPED, "worker w1 stopped answering")


def test_losing_a_superseded_attempt_is_refused(store: Store) -> None:
    task = claimed(store, retries=1)
    store.lose_task(task.id, task.token or "", lost(again=NOW))
    with pytest.raises(StaleAttempt):
        store.lose_task(task.id, task.token or "", lost())


def test_ended_since_counts_by_type_state_and_minute(store: Store) -> None:
    for at, state in ((NOW + 5, TaskState.FAILED), (NOW + 6, TaskState.FAILED),
                      (NOW + 70, TaskState.SUCCESS)):
        task = claimed(store)
        outcome = failed(at=at) if state == TaskState.FAILED else Outcome(
            state=TaskState.SUCCESS, exit_code=0, finished=at)
        store.finish_task(task.id, task.token or "", outcome)
    store.add_task(new_task())  # queued: not ended
    rows = sorted(store.ended_since(NOW))
    assert [row[:4] for row in rows] == sorted([("echo", "FAILED", int((NOW + 5) // 60), 2),
                                                ("echo", "SUCCESS", int((NOW + 70) // 60), 1)])
    assert [row[:4] for row in store.ended_since(NOW + 60)] == [
        ("echo", "SUCCESS", int((NOW + 70) // 60), 1)]
    assert all(row[5] == 0 for row in rows)  # claimed, never started: no wait counted


def test_versions_run_lists_each_version_latest_used_first(store: Store) -> None:
    def ran(added: float, version: str, type: str = "echo") -> None:
        task = store.add_task(new_task(type=type, added=added))
        taken = store.claim_task(Claim(worker="w1", tags=frozenset(), limits={}, now=NOW,
                                       versions={type: version}))
        assert taken is not None and taken.id == task.id and taken.version == version

    ran(10.0, "v1")
    ran(20.0, "v1")
    ran(30.0, "v2")
    ran(40.0, "v9", type="other")
    store.add_task(new_task(added=50.0))  # queued: no version yet, so not counted
    assert store.versions_run("echo", 10) == [("v2", 30.0, 30.0, 1), ("v1", 10.0, 20.0, 2)]
    assert store.versions_run("echo", 1) == [("v2", 30.0, 30.0, 1)]
    assert store.versions_run("nothing", 10) == []


def test_queued_ahead_counts_the_tasks_before_one_in_line(store: Store) -> None:
    first = store.add_task(new_task(score=10.0))
    same = store.add_task(new_task(score=20.0))
    later_same = store.add_task(new_task(score=20.0, type="other"))
    store.add_task(new_task(score=30.0))
    assert [store.queued_ahead(t) for t in (first, same, later_same)] == [0, 1, 2]


def test_listing_sorts_by_a_column_with_missing_values_last(store: Store) -> None:
    a = store.add_task(new_task(type="b_type", priority=5))
    b = store.add_task(new_task(type="a_type", priority=-1))
    c = store.add_task(new_task(type="c_type", priority=5))
    assert ids(store.list_tasks(TaskFilter(sort="type", oldest_first=True))) == [b.id, a.id,
                                                                                 c.id]
    assert ids(store.list_tasks(TaskFilter(sort="priority"))) == [c.id, a.id, b.id]
    assert ids(store.list_tasks(TaskFilter(sort="finished"))) == [c.id, b.id, a.id]
    with pytest.raises(ValueError):
        store.list_tasks(TaskFilter(sort="environment; DROP TABLE tasks"))


def test_queued_by_type_counts_only_queued_tasks_of_each_type(store: Store) -> None:
    assert store.queued_by_type() == {}
    for type_name in ("a", "a", "b", "c"):
        store.add_task(new_task(type=type_name))
    taken = claim(store)
    assert taken is not None
    left = {"a": 2, "b": 1, "c": 1}
    left[taken.type] -= 1
    assert store.queued_by_type() == {name: n for name, n in left.items() if n}


def test_every_write_reports_its_commit_and_whether_it_was_durable(store: Store) -> None:
    commits: list[tuple[float, bool]] = []
    store.on_commit = lambda seconds, durable: commits.append((seconds, durable))
    task = store.add_task(new_task())
    assert [durable for _, durable in commits] == [True]
    store.get_task(task.id)
    store.list_tasks(TaskFilter())
    assert len(commits) == 1  # reads commit nothing worth timing
    taken = claim(store)
    assert taken is not None
    assert [durable for _, durable in commits] == [True, False]  # a claim does not wait
    store.finish_task(taken.id, taken.token or "", failed())
    assert [durable for _, durable in commits] == [True, False, True]
    assert all(seconds >= 0 for seconds, _ in commits)


def keyed(key: str, worker: str = "w1", **fields: object) -> Claim:
    return Claim(worker=worker, tags=frozenset(), limits={}, now=NOW, key=key,
                 **fields)  # type: ignore[arg-type]


def test_a_claim_asked_again_with_its_key_gets_the_same_task_and_token(store: Store) -> None:
    # The answer to the first never reached the worker (the server was killed, the
    # connection broke): asked again, it is the same attempt, not a second task.
    store.save_worker(worker())
    first = store.add_task(new_task(score=1))
    second = store.add_task(new_task(score=2))
    taken = store.claim_task(keyed("claim:k1"))
    assert taken is not None and taken.id == first.id
    again = store.claim_task(keyed("claim:k1"))
    assert again is not None and (again.id, again.token, again.attempt) == (
        taken.id, taken.token, taken.attempt)
    assert store.get_worker("w1").task == first.id  # type: ignore[union-attr]
    # A claim that may only replay (a paused worker's) gets it too, and nothing new.
    replayed = store.claim_task(keyed("claim:k1", replay_only=True))
    assert replayed is not None and (replayed.id, replayed.token) == (taken.id, taken.token)
    assert store.claim_task(keyed("claim:k2", replay_only=True)) is None
    other = store.claim_task(keyed("claim:k2"))  # a new key is a new claim
    assert other is not None and other.id == second.id


def test_a_claim_key_answers_only_its_own_worker_and_only_while_claimed(store: Store) -> None:
    store.save_worker(worker())
    first = store.add_task(new_task(score=1))
    second = store.add_task(new_task(score=2))
    third = store.add_task(new_task(score=3))
    taken = store.claim_task(keyed("claim:k1"))
    assert taken is not None and taken.id == first.id
    # Another worker using the same key claims anew: it never gets w1's task.
    elsewhere = store.claim_task(keyed("claim:k1", worker="w2"))
    assert elsewhere is not None and elsewhere.id == second.id
    # Once started, the task is no answer to the key any more.
    store.mark_started(first.id, taken.token or "", 7, NOW + 1)
    later = store.claim_task(keyed("claim:k1"))
    assert later is not None and later.id == third.id and later.token != taken.token


def test_a_released_task_is_no_answer_to_its_claim_key(store: Store) -> None:
    store.save_worker(worker())
    queued = store.add_task(new_task())
    taken = store.claim_task(keyed("claim:k1"))
    assert taken is not None
    store.release_task(taken.id, taken.token or "")
    again = store.claim_task(keyed("claim:k1"))
    # Claimed anew (the same task: it is the only one), with a new attempt token.
    assert again is not None and again.id == queued.id and again.token != taken.token


def test_an_exchange_sent_again_is_answered_what_the_first_claimed(store: Store) -> None:
    store.save_worker(worker())
    done = claimed(store)
    nxt = store.add_task(new_task(score=1))
    reserve = store.add_task(new_task(score=2))
    store.add_task(new_task(score=3))
    claims = [keyed("end:a/0", end=0), keyed("end:a/1", end=0, reserve=True)]
    ended, taken = store.exchange([End(done.id, done.token or "", failed())], claims)
    assert isinstance(ended[0], Task) and [t.id for t in taken] == [nxt.id, reserve.id]
    # The same report again: its end is refused (it ended), its claims are answered again.
    ended2, taken2 = store.exchange([End(done.id, done.token or "", failed())], claims)
    assert isinstance(ended2[0], StaleAttempt)
    assert [(t.id, t.token) for t in taken2] == [(t.id, t.token) for t in taken]
    assert store.get_task(done.id).attempts[-1]["state"] == "FAILED"  # type: ignore[union-attr]
    assert len(store.get_task(done.id).attempts) == 1  # type: ignore[union-attr]


def test_a_refused_report_without_earlier_claims_claims_nothing(store: Store) -> None:
    store.save_worker(worker())
    stale = claimed(store)
    store.add_task(new_task())
    ended, taken = store.exchange([End(stale.id, "not-the-token", failed())],
                                  [keyed("end:b/0", end=0)])
    assert isinstance(ended[0], StaleAttempt) and taken == [None]


def test_a_queued_task_is_answered_as_it_reads_back(store: Store) -> None:
    # A plain submission is answered without reading its row back: what it answers must be
    # what a read gives, every field.
    new = NewTask(type="echo", environment={"A": "1", "B": ""}, tags=("unix", "gpu", "unix"),
                  score=12.5, added=1_000.0, not_before=2_000.0, schedule="nightly",
                  retries=3, retry_delay=4.5, timeout=60.0, priority=2, inputs=("a.pdf",),
                  submitted_by="ops", secrets=("B",))
    placed: list[int] = []
    added = store.add_task(new, placed.append)
    assert added == store.get_task(added.id) and placed == [added.id]
    assert store.add_task(new_task()) == store.get_task(added.id + 1)

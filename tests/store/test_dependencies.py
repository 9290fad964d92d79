"""Tasks that wait for other tasks, on every backend: WAITING out of the claim's reach, released
in the transaction that ends the last one they wait for (with a score as if submitted then),
SKIPPED (and their own dependents with them) when one did not succeed, unless after_policy
is "always"; stopping or removing a waiting task or one waited for; unknown ids refused;
two servers ending the tasks of a fan-in at once release it exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from blanket.errors import DuplicateTask, InvalidInput
from blanket.models import TaskFilter, TaskState
from blanket.store.base import End, Outcome, Store
from blanket.store.sqlite import SQLiteStore
from tests.store.test_store import NOW, claim, failed, new_task

OK = Outcome(state=TaskState.SUCCESS, exit_code=0, finished=NOW + 5)


def end(store: Store, task_id: int, outcome: Outcome = OK) -> None:
    """Claim `task_id` (it must be the queue's head for its tags) and end it."""
    task = store.get_task(task_id)
    assert task is not None
    taken = claim(store, tags=task.tags, worker=f"w{task_id}")
    assert taken is not None and taken.id == task_id, taken
    store.finish_task(task_id, taken.token or "", outcome)


def state(store: Store, task_id: int) -> str:
    task = store.get_task(task_id)
    assert task is not None
    return task.state.value


def test_a_waiting_task_is_out_of_reach_until_what_it_waits_for_succeeds(store: Store):
    first = store.add_task(new_task(tags=("a",)))
    second = store.add_task(new_task(tags=("b",)))
    after = store.add_task(new_task(tags=("c",), after=(first.id, second.id)))
    assert after.state is TaskState.WAITING and after.after == (first.id, second.id)
    assert claim(store, tags=("c",)) is None  # not in the queue
    end(store, first.id)
    assert state(store, after.id) == "WAITING"
    end(store, second.id)
    released = store.get_task(after.id)
    assert released is not None and released.state is TaskState.QUEUED
    # as if submitted when released: its score moved on by the minutes it waited
    assert released.score == pytest.approx(after.score + (NOW + 5 - 1_000.0) / 60)
    taken = claim(store, tags=("c",))
    assert taken is not None and taken.id == after.id


def test_a_failure_skips_the_dependents_and_theirs(store: Store):
    root = store.add_task(new_task())
    child = store.add_task(new_task(after=(root.id,)))
    grandchild = store.add_task(new_task(after=(child.id,)))
    anyway = store.add_task(new_task(after=(child.id,), after_policy="always"))
    taken = claim(store)
    assert taken is not None and taken.id == root.id
    store.finish_task(root.id, taken.token or "", failed())
    skipped = store.get_task(child.id)
    assert skipped is not None and skipped.state is TaskState.SKIPPED
    assert skipped.error is not None and f"task {root.id}" in skipped.error
    assert "FAILED" in skipped.error and skipped.finished == NOW + 5
    assert state(store, grandchild.id) == "SKIPPED"
    assert state(store, anyway.id) == "QUEUED"  # after_policy always: it runs anyway


def test_always_runs_once_every_one_ended_whatever_their_state(store: Store):
    a = store.add_task(new_task(tags=("a",)))
    b = store.add_task(new_task(tags=("b",)))
    last = store.add_task(new_task(after=(a.id, b.id), after_policy="always"))
    end(store, a.id, failed())
    assert state(store, last.id) == "WAITING"
    assert store.stop_queued(b.id, NOW) is not None
    assert state(store, last.id) == "QUEUED"


def test_waiting_for_tasks_that_already_ended(store: Store):
    good = store.add_task(new_task(tags=("a",)))
    bad = store.add_task(new_task(tags=("b",)))
    end(store, good.id)
    end(store, bad.id, failed())
    assert store.add_task(new_task(after=(good.id,))).state is TaskState.QUEUED
    skipped = store.add_task(new_task(after=(good.id, bad.id)))
    assert skipped.state is TaskState.SKIPPED and f"task {bad.id}" in (skipped.error or "")
    anyway = store.add_task(new_task(after=(bad.id,), after_policy="always"))
    assert anyway.state is TaskState.QUEUED


def test_an_unknown_task_is_refused_and_nothing_is_stored(store: Store):
    real = store.add_task(new_task())
    gone = store.add_task(new_task())
    store.delete_task(gone.id)
    with pytest.raises(InvalidInput, match=f"no task {gone.id} \\(never submitted, or removed"):
        store.add_task(new_task(after=(real.id, gone.id)))
    assert [t.id for t in store.list_tasks(TaskFilter(limit=1000))] == [real.id]
    with pytest.raises(InvalidInput, match="task 999999 was not submitted before this one"):
        store.add_tasks([new_task(), new_task(after=(999999,))])
    assert [t.id for t in store.list_tasks(TaskFilter(limit=1000))] == [real.id]


def test_stopping_a_waiting_task_stops_it_and_skips_its_dependents(store: Store):
    root = store.add_task(new_task(tags=("a",)))
    waiting = store.add_task(new_task(after=(root.id,)))
    behind = store.add_task(new_task(after=(waiting.id,)))
    stopped = store.stop_queued(waiting.id, NOW, "me")
    assert stopped is not None and stopped.state is TaskState.STOPPED
    assert state(store, behind.id) == "SKIPPED"
    end(store, root.id)  # its edge to the stopped task is settled without effect
    assert state(store, waiting.id) == "STOPPED"


def test_removing_a_task_waited_for_skips_the_dependents(store: Store):
    root = store.add_task(new_task())
    waiting = store.add_task(new_task(after=(root.id,)))
    store.delete_task(root.id)
    skipped = store.get_task(waiting.id)
    assert skipped is not None and skipped.state is TaskState.SKIPPED
    assert "removed" in (skipped.error or "")


def test_removing_an_ended_task_changes_nothing_for_dependents(store: Store):
    root = store.add_task(new_task(tags=("a",)))
    other = store.add_task(new_task(tags=("b",)))
    waiting = store.add_task(new_task(after=(root.id, other.id)))
    end(store, root.id)
    store.delete_task(root.id)  # ended already: its dependents were told then
    assert state(store, waiting.id) == "WAITING"
    end(store, other.id)
    assert state(store, waiting.id) == "QUEUED"


def test_a_retry_is_no_end(store: Store):
    root = store.add_task(new_task(retries=1))
    waiting = store.add_task(new_task(after=(root.id,)))
    taken = claim(store)
    assert taken is not None
    store.finish_task(root.id, taken.token or "",
                      failed(requeue_at=NOW + 6, requeue_score=200.0))
    assert state(store, root.id) == "QUEUED" and state(store, waiting.id) == "WAITING"


def test_ends_in_one_exchange_release_a_fan_in(store: Store):
    parts = [store.add_task(new_task(tags=(f"p{n}",))) for n in range(3)]
    fan_in = store.add_task(new_task(after=tuple(p.id for p in parts)))
    tokens = [claim(store, tags=p.tags, worker=f"w{p.id}") for p in parts]
    ended, _ = store.exchange([End(t.id, t.token or "", OK) for t in tokens if t])
    assert all(not isinstance(e, Exception) for e in ended)
    assert state(store, fan_in.id) == "QUEUED"


def test_two_servers_ending_a_fan_in_release_it_once(open_another):
    """Two servers end the 40 tasks of a fan-in at once: the fan-in is released exactly
    when the last ends, never early, never twice, never forgotten."""
    first, second = open_another(), open_another()
    parts = [first.add_task(new_task(tags=(f"p{n}",))) for n in range(40)]
    fan_in = first.add_task(new_task(after=tuple(p.id for p in parts)))
    taken = [claim(first, tags=p.tags, worker=f"w{p.id}") for p in parts]

    def finish(index: int) -> None:
        task = taken[index]
        assert task is not None
        (first if index % 2 else second).finish_task(task.id, task.token or "", OK)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(finish, range(len(parts))))
    released = first.get_task(fan_in.id)
    assert released is not None and released.state is TaskState.QUEUED


def test_a_submission_racing_the_end_it_waits_for_is_never_stranded(open_another):
    """Submissions that wait for a task while another server ends it: each is either
    released by that end or sees it ended; none is left WAITING."""
    first, second = open_another(), open_another()
    for _ in range(10):
        root = first.add_task(new_task(tags=("r",)))
        taken = claim(first, tags=("r",), worker="racer")
        assert taken is not None

        def submit(n: int, root_id: int = root.id) -> int:
            return second.add_task(new_task(tags=(f"d{n}",), after=(root_id,))).id

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(submit, n) for n in range(6)]
            first.finish_task(root.id, taken.token or "", OK)
            ids = [f.result() for f in futures]
        assert {state(first, i) for i in ids} == {"QUEUED"}


def test_a_skipped_task_is_removed_by_the_sweep_like_any_ended_one(store: Store):
    root = store.add_task(new_task())
    skipped = store.add_task(new_task(after=(root.id,)))
    store.delete_task(root.id)
    assert state(store, skipped.id) == "SKIPPED"
    assert [e.id for e in store.delete_ended([skipped.id])] == [skipped.id]
    assert store.get_task(skipped.id) is None


def test_a_task_cannot_wait_for_itself_or_a_later_one(store: Store):
    first = store.add_task(new_task())
    with pytest.raises(InvalidInput, match=f"task {first.id + 1} was not submitted before"):
        store.add_task(new_task(after=(first.id, first.id + 1)))
    assert [t.id for t in store.list_tasks(TaskFilter(limit=10))] == [first.id]
    later = store.add_task(new_task())
    assert later.state is TaskState.QUEUED  # the refused one left nothing behind


def test_many_waits_are_read_and_written_in_a_few_statements(store: Store):
    roots = [store.add_task(new_task(tags=(f"r{n}",))) for n in range(300)]
    fan_in = store.add_task(new_task(after=tuple(r.id for r in reversed(roots))))
    assert fan_in.state is TaskState.WAITING and fan_in.after[0] == roots[-1].id
    for root in roots:
        end(store, root.id)
    assert state(store, fan_in.id) == "QUEUED"


def test_each_skip_is_told_once_its_transaction_committed(store: Store):
    """on_skipped (the server's finished counter) hears of every task skipped, by type, on
    every path that skips: an end and its cascade, a stop, a removal, a submission."""
    told: list[list[str]] = []
    store.on_skipped = told.append
    root = store.add_task(new_task(type="root"))
    child = store.add_task(new_task(type="child", after=(root.id,)))
    store.add_task(new_task(type="grandchild", after=(child.id,)))
    assert told == []
    taken = claim(store)
    assert taken is not None and taken.id == root.id
    store.finish_task(root.id, taken.token or "", failed())
    assert sorted(told.pop()) == ["child", "grandchild"] and told == []
    late = store.add_task(new_task(type="late", after=(root.id,)))  # root failed already
    assert late.state is TaskState.SKIPPED and told == [["late"]]
    told.clear()
    other = store.add_task(new_task(type="other", tags=("x",)))
    waiting = store.add_task(new_task(type="waiting", after=(other.id,)))
    behind = store.add_task(new_task(type="behind", after=(waiting.id,)))
    store.stop_queued(waiting.id, NOW, "me")
    assert told == [["behind"]]
    store.add_task(new_task(type="orphan", after=(other.id,)))
    store.delete_task(other.id)
    assert told == [["behind"], ["orphan"]]
    assert state(store, behind.id) == "SKIPPED"


def test_a_task_with_a_dedupe_key_waits_like_any_other(store: Store):
    """A dedupe key taken before the waits are read (PostgreSQL) or after (SQLite): the same
    rules, and a refused submission leaves its key free."""
    root = store.add_task(new_task(tags=("r",)))
    keyed = store.add_task(new_task(after=(root.id,), dedupe_key="k"))
    assert keyed.state is TaskState.WAITING and store.task_for_key("k") == keyed.id
    with pytest.raises(DuplicateTask):
        store.add_task(new_task(after=(root.id,), dedupe_key="k"))
    with pytest.raises(InvalidInput, match=f"task {keyed.id + 5} was not submitted before"):
        store.add_task(new_task(after=(root.id, keyed.id + 5), dedupe_key="k2"))
    assert store.task_for_key("k2") is None
    end(store, root.id)
    assert state(store, keyed.id) == "QUEUED"
    again = store.add_task(new_task(after=(keyed.id,), dedupe_key="k2"))
    assert again.id > keyed.id and again.state is TaskState.WAITING


def test_a_task_with_after_is_inserted_in_its_final_state_never_queued_first(tmp_path: Path):
    """Submitting with `after` reads the awaited tasks, then inserts the row WAITING, QUEUED
    or SKIPPED at once: no UPDATE of the tasks table (the row never enters the claim's index
    on its way to WAITING). Every statement the SQLite store runs is traced."""
    store = SQLiteStore(tmp_path / "blanket.db")
    try:
        ok, bad, running = (store.add_task(new_task(tags=(t,))) for t in ("a", "b", "c"))
        end(store, ok.id)
        end(store, bad.id, failed())
        traced: list[str] = []
        store._db.set_trace_callback(traced.append)
        waiting = store.add_task(new_task(after=(running.id,), dedupe_key="k"))
        queued = store.add_task(new_task(after=(ok.id,)))
        skipped = store.add_task(new_task(after=(bad.id,)))
        many = store.add_tasks([new_task(after=(running.id,)), new_task(after=(ok.id, bad.id)),
                                new_task(after=(ok.id,), after_policy="always")])
        store._db.set_trace_callback(None)
        assert [waiting.state, queued.state, skipped.state, *(t.state for t in many)] == [
            TaskState.WAITING, TaskState.QUEUED, TaskState.SKIPPED,
            TaskState.WAITING, TaskState.SKIPPED, TaskState.QUEUED]
        statements = [" ".join(line for line in s.upper().splitlines()
                               if not line.startswith("--")).strip() for s in traced]
        assert not [s for s in statements if s.startswith("UPDATE")], statements
        assert sum(s.startswith("INSERT INTO TASKS ") for s in statements) == 6
        # one edge each for the two WAITING tasks; none for a task skipped at submission
        assert sum(s.startswith("INSERT OR IGNORE INTO TASK_DEPS") for s in statements) == 2
        assert store.get_task(waiting.id) == waiting and store.task_for_key("k") == waiting.id
    finally:
        store.close()

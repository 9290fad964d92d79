"""Tasks that wait for other tasks, inside the store's transactions (both backends run this
over their own named queries, `sql/DIALECT/queries.sql`).

A task submitted with `after` is inserted WAITING (or QUEUED, or SKIPPED, as the tasks it
waits for stand then: it never passes through QUEUED), out of the claim's index, while `waiting_for`
(the tasks of its `after` not ended yet) is above zero; `task_deps` holds an edge from each
of those to it. When a task ends (or is removed before it ended), the transaction that ends
it counts each waiting dependent down: a dependent whose awaited task did not succeed is
SKIPPED (unless its after_policy is "always"), which ends it in turn and so reaches its own
dependents; one with nothing left to wait for joins the queue, its score moved on by the
time it waited, as if submitted then. An edge is settled once, and removed then.

A task can only wait for tasks that exist when it is submitted, so no cycle can form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blanket.errors import InvalidInput
from blanket.models import FINAL_STATES, TaskState
from blanket.wakeups import QUEUE, task_topic

FINAL = frozenset(state.value for state in FINAL_STATES)
REMOVED = "REMOVED"  # what a dependent is told of a task removed before it ended


# The columns insert_task writes for a task that waits for nothing.
NO_WAITS: Mapping[str, Any] = {"state": TaskState.QUEUED.value, "after": "[]", "policy": None,
                               "waiting_for": 0, "finished": None, "error": None}


@dataclass(frozen=True)
class Waits:
    """What a new task waiting for others is stored as: `columns` for insert_task (its
    state, after_ids, after_policy, waiting_for, and finished and error when skipped), the
    awaited tasks not ended yet (`pending`: an edge from each; none for a task SKIPPED at
    submission, which waits for nothing more), and whether it is SKIPPED."""

    columns: Mapping[str, Any]
    pending: list[int]
    skipped: bool


def waits_of(q: Mapping[str, str], cur: Any, after: Sequence[int], policy: str, now: float,
             id_list: Callable[[list[int]], Any], next_id: Callable[[], int],
             task_id: int | None = None) -> Waits:
    """How a task about to be inserted in this transaction waits for `after` (tasks submitted
    before it; InvalidInput names one that is not, or that does not exist): WAITING for
    those not ended, SKIPPED at once when one already ended otherwise than SUCCESS (policy
    "success"), else QUEUED. Read before the insert, so the row is written in its final
    state (never QUEUED on its way to WAITING: one statement less, and the claim's index
    untouched). The awaited tasks are read in one statement, in id order (PostgreSQL locks
    them in that order: an end, which locks its task and then the higher ids waiting for
    it, never waits in a cycle with it; the new row, inserted after, is seen by no one).

    `task_id`: the id the task will have, when the store took it already (PostgreSQL, for a
    task with a dedupe key); else `next_id()` answers it, asked only when an id is missing,
    to tell a later one from one never submitted. A task that exists when the awaited tasks
    are read was submitted before the new one: in SQLite the write transaction holds the
    only writer's lock from that read to the insert, and AUTOINCREMENT gives the insert an
    id above every one used before; in PostgreSQL (READ COMMITTED) a row the read sees was
    committed (or inserted by this transaction) before the statement began, after taking
    its id from the sequence, and the new row's id is taken from it later, so it is higher
    (the sequence hands out increasing values, its cache being 1). Neither can then wait
    for the other, so no cycle can form."""
    wanted = sorted(set(after))
    if task_id is not None:
        _refuse_later(wanted, task_id)
    states = {row["id"]: row["state"] for row in cur.execute(
        q["after_states"], {"ids": id_list(wanted)}).fetchall()}
    missing = [i for i in wanted if i not in states]
    if missing:
        if task_id is None:
            _refuse_later(wanted, next_id())
        raise InvalidInput(f"after: there is no task {missing[0]} (never submitted, or "
                           "removed since); a task can wait only for tasks that exist")
    pending = [i for i in wanted if states[i] not in FINAL]
    failed = next(((i, states[i]) for i in dict.fromkeys(after)
                   if states[i] in FINAL and states[i] != TaskState.SUCCESS.value), None)
    columns = {"after": _json_ids(after), "policy": None if policy == "success" else policy,
               "waiting_for": len(pending), "finished": None, "error": None,
               "state": TaskState.WAITING.value if pending else TaskState.QUEUED.value}
    if failed is not None and policy != "always":  # it waits for nothing more: no edges
        columns.update(state=TaskState.SKIPPED.value, finished=now, waiting_for=0,
                       error=skipped_because(*failed))
        return Waits(columns, [], True)
    return Waits(columns, pending, False)


def record_waits(q: Mapping[str, str], cur: Any, row: Any, waits: Waits,
                 on_skip: Callable[[Any], Any] = lambda row: None) -> None:
    """After inserting `row` as `waits` says, in the same transaction: an edge from each
    awaited task not ended yet, and `on_skip` told of a task skipped at submission (now
    that its row exists: the notifications it makes refer to it)."""
    if waits.pending:
        cur.executemany(q["insert_dep"], [{"after_id": i, "task_id": row["id"]}
                                          for i in waits.pending])
    if waits.skipped:
        on_skip(row)


def _refuse_later(wanted: Sequence[int], task_id: int) -> None:
    later = [i for i in wanted if i >= task_id]
    if later:
        raise InvalidInput(f"after: task {later[0]} was not submitted before this one; a task "
                           "can wait only for tasks submitted before it")


def ended(q: Mapping[str, str], cur: Any, task_id: int, state: str, now: float,
          on_skip: Callable[[Any], Any] = lambda row: None) -> list[int]:
    """`task_id` ended in `state` (or was REMOVED before it ended) in this transaction:
    settle the tasks waiting for it, and theirs in turn when one is skipped (`on_skip` gets
    each skipped row, to make its notifications in the same transaction). Answers the ids
    whose state changed (released to the queue, or skipped)."""
    changed: list[int] = []
    settling = [(task_id, state)]
    while settling:
        done, done_state = settling.pop()
        # One statement per end, on the hot path: the edges are read and settled at once.
        for row in cur.execute(q["take_dependents"], {"id": done}).fetchall():
            waiting = row["task_id"]
            counted = cur.execute(q["count_down"], {"id": waiting}).fetchone()
            if counted is None:  # no longer waiting: stopped, skipped or removed meanwhile
                continue
            if done_state != TaskState.SUCCESS.value and counted["after_policy"] != "always":
                skipped = cur.execute(q["skip"], {"id": waiting, "now": now, "error":
                                                  skipped_because(done, done_state)}).fetchone()
                on_skip(skipped)
                changed.append(waiting)
                settling.append((waiting, TaskState.SKIPPED.value))
            elif counted["waiting_for"] <= 0:
                cur.execute(q["release_waiting"], {"id": waiting, "now": now})
                changed.append(waiting)
    return changed


def woken_topics(ids: list[int]) -> list[str]:
    """The wake-up topics of dependents released or skipped: the queue when one was."""
    return [QUEUE, *map(task_topic, ids)] if ids else []


def skipped_because(after_id: int, state: str) -> str:
    if state == REMOVED:
        return f"task {after_id}, which it waited for, was removed before it ended"
    return (f"task {after_id}, which it waited for, ended {state}; it did not run "
            '(after_policy = "always" runs it anyway)')


def _json_ids(ids: Sequence[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in dict.fromkeys(ids)) + "]"

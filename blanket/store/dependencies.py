"""Tasks that wait for other tasks, inside the store's transactions (both backends run this
over their own named queries, `sql/DIALECT/queries.sql`).

A task submitted with `after` is WAITING, out of the claim's index, while `waiting_for`
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
from typing import Any

from blanket.errors import InvalidInput
from blanket.models import FINAL_STATES, TaskState
from blanket.wakeups import QUEUE, task_topic

FINAL = frozenset(state.value for state in FINAL_STATES)
REMOVED = "REMOVED"  # what a dependent is told of a task removed before it ended


def wait_for(q: Mapping[str, str], cur: Any, task_id: int, after: Sequence[int],
             policy: str, now: float, id_list: Callable[[list[int]], Any] = list,
             on_skip: Callable[[Any], Any] = lambda row: None) -> Any:
    """Record that `task_id`, inserted in this transaction, waits for `after` (tasks
    submitted before it; InvalidInput names one that is not, or that does not exist):
    WAITING for those not ended, SKIPPED at once when one already ended otherwise than
    SUCCESS (policy "success"), else left QUEUED. Answers its row. The awaited tasks are
    read in one statement, in id order (PostgreSQL locks them in that order: an end, which
    locks its task and then the higher ids waiting for it, never waits in a cycle with it)."""
    wanted = sorted(set(after))
    later = [i for i in wanted if i >= task_id]
    if later:
        raise InvalidInput(f"after: task {later[0]} was not submitted before this one; a task "
                           "can wait only for tasks submitted before it")
    states = {row["id"]: row["state"] for row in cur.execute(
        q["after_states"], {"ids": id_list(wanted)}).fetchall()}
    missing = [i for i in wanted if i not in states]
    if missing:
        raise InvalidInput(f"after: there is no task {missing[0]} (never submitted, or "
                           "removed since); a task can wait only for tasks that exist")
    pending = [i for i in wanted if states[i] not in FINAL]
    failed = next(((i, states[i]) for i in dict.fromkeys(after)
                   if states[i] in FINAL and states[i] != TaskState.SUCCESS.value), None)
    if pending:
        cur.executemany(q["insert_dep"], [{"after_id": i, "task_id": task_id} for i in pending])
    params = {"id": task_id, "after": _json_ids(after), "policy": None if policy ==
              "success" else policy, "waiting_for": len(pending), "finished": None,
              "error": None, "state": TaskState.WAITING.value if pending else
              TaskState.QUEUED.value}
    if failed is not None and policy != "always":
        params.update(state=TaskState.SKIPPED.value, finished=now, waiting_for=0,
                      error=skipped_because(*failed))
    row = cur.execute(q["set_after"], params).fetchone()
    if failed is not None and policy != "always":
        on_skip(row)
    return row


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

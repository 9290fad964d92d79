"""Verbs whose SQL and row handling are the same in both stores: each store supplies its
named queries and its `_tx`, `_one` and `_all`; the SQL text itself stays per dialect in
blanket/store/sql/."""

from __future__ import annotations

import json
import threading
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from blanket.models import Delivery, Run, RunTask, Task, TaskState, Token, Worker
from blanket.store import dependencies
from blanket.store.base import MAX_BATCH, Ended, Store, end_event
from blanket.store.rows import (
    delivery_from_row,
    run_from_row,
    run_task_from_row,
    token_from_row,
    worker_from_row,
    worker_params,
)
from blanket.wakeups import DELIVERIES

# Per thread, the types of the tasks its transaction skipped (a thread runs one transaction at
# a time, whichever store it is on).
_SKIPS = threading.local()


class SqlVerbs(Store):
    queries: dict[str, str]  # this dialect's named queries (blanket/store/sql/DIALECT/queries.sql)

    @abstractmethod
    def _tx(self, durable: bool = True) -> AbstractContextManager[Any]:
        """One transaction; yields something with `execute(query, params)`."""

    @abstractmethod
    def _one(self, query: str, params: Any = None) -> Any: ...

    @abstractmethod
    def _all(self, query: str, params: Any = None) -> list[Any]: ...

    # notifications
    def _skipped_in(self, db: Any, topics: list[str]) -> Callable[[Any], None]:
        """What a transaction does with a task it skipped (one it waited for did not
        succeed): its notifications, made there, and the delivery loop told once it commits
        (through `topics`)."""
        def skipped(row: Any) -> None:
            if self._deliveries_in(db, row) and DELIVERIES not in topics:
                topics.append(DELIVERIES)
            self._skipping().append(row["type"])
        return skipped

    def _skipping(self) -> list[str]:
        """The types of the tasks this thread's transaction skipped so far."""
        if not hasattr(_SKIPS, "types"):
            _SKIPS.types = []
        return _SKIPS.types

    def _skips_done(self, committed: bool) -> None:
        """The transaction ended: tell `on_skipped` what it skipped, if it committed."""
        types = getattr(_SKIPS, "types", None)
        if not types:
            return
        _SKIPS.types = []
        if committed:
            self.on_skipped(types)

    def _settled_in(self, db: Any, task_id: int, state: str, now: float,
                    topics: list[str], row: Any = None) -> None:
        """Inside the transaction in which task `task_id` ended as `state` (or was REMOVED
        before it ended): the tasks waiting for it settled, and, given its `row`, its
        notifications made; what to announce added to `topics`."""
        topics.extend(dependencies.woken_topics(dependencies.ended(
            self.queries, db, task_id, state, now, self._skipped_in(db, topics))))
        if row is not None and self._deliveries_in(db, row) and DELIVERIES not in topics:
            topics.append(DELIVERIES)

    def _deliveries_in(self, db: Any, row: Any, lost: str | None = None) -> bool:
        """Inside the transaction that ended the task `row`: make its deliveries, one per
        target `notify_targets` names (none asked: no statement). Whether any were made."""
        event = end_event(row["state"], lost)
        targets = self.notify_targets(row["type"], row["schedule"], event)
        if not targets:
            return False
        db.executemany(self.queries["insert_delivery"], [
            {"task_id": row["id"], "task_type": row["type"], "event": event,
             "target_key": t.key, "target": t.target, "now": row["finished"]}
            for t in targets])
        return True

    def claim_deliveries(self, now: float, lease: float, limit: int) -> list[Delivery]:
        with self._tx(durable=False) as db:
            rows = db.execute(self.queries["claim_deliveries"],
                              {"now": now, "lease": lease, "limit": limit}).fetchall()
        return sorted((delivery_from_row(r) for r in rows), key=lambda d: (d.created, d.id))

    def settle_delivery(self, delivery: Delivery, now: float, *, state: str,
                        result: str | None, retry_at: float | None = None) -> bool:
        with self._tx() as db:
            return db.execute(self.queries["settle_delivery"], {
                "id": delivery.id, "attempts": delivery.attempts, "state": state,
                "retry_at": retry_at, "result": result,
                "finished": None if state == "pending" else now}).rowcount == 1

    def task_deliveries(self, task_id: int) -> list[Delivery]:
        return [delivery_from_row(r)
                for r in self._all(self.queries["task_deliveries"], {"task_id": task_id})]

    def next_delivery_at(self) -> float | None:
        row = self._one(self.queries["next_delivery_at"])
        return None if row is None else row[0] if not isinstance(row, dict) else row["next_at"]

    # workflow runs
    def add_run(self, workflow: str, version: str, definition: str,
                environment: dict[str, str], added: float, submitted_by: str | None,
                schedule: str | None = None, dedupe_key: str | None = None) -> Run:
        with self._tx() as db:
            row = db.execute(self.queries["insert_run"], {
                "workflow": workflow, "version": version, "definition": definition,
                "environment": json.dumps(environment), "added": added,
                "submitted_by": submitted_by, "schedule": schedule,
                "dedupe_key": dedupe_key}).fetchone()
            if row is None:  # the key was taken: that run is this one
                row = db.execute(self.queries["run_for_key"],
                                 {"dedupe_key": dedupe_key}).fetchone()
        return run_from_row(row)

    def get_run(self, run_id: int) -> Run | None:
        row = self._one(self.queries["get_run"], {"id": run_id})
        return run_from_row(row) if row else None

    def list_runs(self, workflow: str | None = None, state: str | None = None,
                  before: int | None = None, limit: int = 100,
                  schedule: str | None = None) -> list[Run]:
        rows = self._all(self.queries["list_runs"], {
            "workflow": workflow, "state": state, "limit": limit, "schedule": schedule,
            "before": before if before is not None else 2**62})
        return [run_from_row(r) for r in rows]

    def run_for_key(self, key: str) -> Run | None:
        row = self._one(self.queries["run_for_key"], {"dedupe_key": key})
        return run_from_row(row) if row else None

    def running_runs(self) -> list[Run]:
        return [run_from_row(r) for r in self._all(self.queries["running_runs"])]

    def run_tasks(self, run_id: int) -> list[RunTask]:
        return [run_task_from_row(r)
                for r in self._all(self.queries["run_tasks"], {"run_id": run_id})]

    def run_step_tasks(self, run_id: int, step: str, states: frozenset[str] = frozenset(),
                       offset: int = 0, limit: int = 100) -> tuple[int, list[RunTask]]:
        params = {"run_id": run_id, "step": step, "all_states": not states,
                  "states": self._id_list(sorted(states - {"removed"})),
                  "removed": "removed" in states, "offset": offset, "limit": limit}
        count = self._one(self.queries["count_run_step_tasks"], params)
        rows = self._all(self.queries["run_step_tasks"], params)
        return count["count"], [run_task_from_row(r) for r in rows]

    def holds_version(self, owner: str, version: str) -> bool:
        return self._one(self.queries["holds_version"],
                         {"owner": owner, "version": version}) is not None

    def run_first_task(self, run_id: int) -> int | None:
        row = self._one(self.queries["run_first_task"], {"run_id": run_id})
        return None if row is None else row["task_id"]

    def active_steps(self, run_id: int) -> frozenset[str]:
        return frozenset(r["step"] for r in self._all(self.queries["active_steps"],
                                                      {"run_id": run_id}))

    def end_run(self, run_id: int, state: str, reason: str | None, now: float,
                round_: int | None = None) -> Run | None:
        with self._tx() as db:
            row = db.execute(self.queries["end_run"], {"id": run_id, "state": state,
                                                       "reason": reason, "now": now,
                                                       "round": round_}).fetchone()
        return run_from_row(row) if row else None

    def rerun_run(self, run_id: int) -> Run | None:
        with self._tx() as db:
            row = db.execute(self.queries["rerun_run"], {"id": run_id}).fetchone()
        return run_from_row(row) if row else None

    def run_of_task(self, task_id: int) -> tuple[int, str, int, int] | None:
        row = self._one(self.queries["run_of_task"], {"task_id": task_id})
        if row is None:
            return None
        return row["run_id"], row["step"], row["item"], row["round"]

    def versions_run(self, type_name: str,
                     limit: int) -> list[tuple[str, float, float, int]]:
        rows = self._all(self.queries["versions_run"], {"type": type_name, "limit": limit})
        return [(r["version"], float(r["first"]), float(r["last"]), int(r["n"])) for r in rows]

    def ended_since(self, since: float) -> list[tuple[str, str, int, int, float, int]]:
        rows = self._all(self.queries["ended_since"], {"since": since})
        return [(r["type"], r["state"], int(r["minute"]), int(r["n"]), float(r["waited"]),
                 int(r["started_n"])) for r in rows]

    def queued_ahead(self, task: Task) -> int:
        row = self._one(self.queries["queued_ahead"], {"score": task.score, "id": task.id})
        return int(row["n"]) if row else 0

    def queued_by_type(self) -> dict[str, int]:
        return {r["type"]: int(r["n"]) for r in self._all(self.queries["queued_by_type"])}

    # workers
    def save_worker(self, worker: Worker) -> None:
        with self._tx() as db:
            db.execute(self.queries["save_worker"], worker_params(worker))

    def list_workers(self) -> list[Worker]:
        return [worker_from_row(r) for r in self._all(self.queries["list_workers"])]

    def touch_worker(self, worker_id: str, task: int | None, now: float) -> None:
        with self._tx(durable=False) as db:
            db.execute(self.queries["touch_worker"], {"id": worker_id, "task": task, "now": now})

    # tokens
    def get_token(self, token_id: str) -> Token | None:
        row = self._one(self.queries["get_token"], {"id": token_id})
        return token_from_row(row) if row else None

    def list_tokens(self) -> list[Token]:
        return [token_from_row(r) for r in self._all(self.queries["list_tokens"])]

    def revoke_token(self, name: str, now: float) -> Token | None:
        with self._tx() as db:
            row = db.execute(self.queries["revoke_token"], {"name": name, "now": now}).fetchone()
            if row is not None:
                db.execute(self.queries["revoke_sessions"], {"id": row["id"], "now": now})
        return token_from_row(row) if row else None

    def end_session(self, token_id: str, now: float) -> None:
        with self._tx() as db:
            db.execute(self.queries["end_session"], {"id": token_id, "now": now})

    # versions and retention
    def _id_list(self, values: Sequence[Any]) -> Any:
        """A list as this dialect's queries take it (a JSON text for SQLite's json_each)."""
        return list(values)

    def version_records(self) -> list[tuple[str, str, float]]:
        return [(r["hash"], r["type_name"], float(r["created"]))
                for r in self._all(self.queries["version_records"])]

    def versions_between(self, first_id: int, last_id: int) -> dict[str, int]:
        rows = self._all(self.queries["versions_between"], {"first": first_id, "last": last_id})
        return {r["version"]: int(r["n"]) for r in rows}

    def delete_versions(self, hashes: Sequence[str]) -> int:
        if not hashes:
            return 0
        with self._tx() as db:
            return db.execute(self.queries["delete_versions"],
                              {"hashes": self._id_list(hashes)}).rowcount

    def ended_page(self, after: tuple[float, int] | None, until: float,
                   limit: int) -> list[Ended]:
        after_finished, after_id = after if after is not None else (-1e300, 0)
        rows = self._all(self.queries["ended_page"], {
            "until": until, "after_finished": after_finished, "after_id": after_id,
            "limit": limit})
        return [_ended(r) for r in rows]

    def group_page(self, before_id: int, limit: int, type_name: str | None = None,
                   schedule: str | None = None) -> list[tuple[int, str | None, bool]]:
        if schedule is not None:
            rows = self._all(self.queries["newest_of_schedule"],
                             {"schedule": schedule, "before": before_id, "limit": limit})
        elif type_name is not None:
            rows = self._all(self.queries["newest_of_type"],
                             {"type": type_name, "before": before_id, "limit": limit})
        else:
            raise ValueError("group_page needs a type or a schedule")
        return [(r["id"], r["schedule"], bool(r["ended"])) for r in rows]

    def max_task_id(self) -> int:
        row = self._one(self.queries["max_task_id"])
        return int(row["n"]) if row else 0

    def delete_ended(self, ids: Sequence[int]) -> list[Ended]:
        if len(ids) > MAX_BATCH:
            raise ValueError(f"delete_ended takes at most {MAX_BATCH} ids at once")
        if not ids:
            return []
        # Not waited for: a removal lost in a power cut is made again by the next sweep,
        # and claims, which wait for changes still on their way to disk, never wait for it.
        with self._tx(durable=False) as db:
            rows = db.execute(self.queries["delete_ended"],
                              {"ids": self._id_list([int(i) for i in ids])}).fetchall()
            if rows:
                removed = {"ids": self._id_list([r["id"] for r in rows])}
                db.execute(self.queries["delete_ended_keys"], removed)
                db.execute(self.queries["delete_ended_deliveries"], removed)
                runs = sorted(r["run_id"] for r in db.execute(
                    self.queries["delete_ended_run_ids"], removed).fetchall())
                gone = [r["id"] for r in db.execute(self.queries["delete_emptied_runs"], {
                    "ids": self._id_list(runs)}).fetchall()] if runs else []
                if gone:
                    db.execute(self.queries["delete_run_links"], {"ids": self._id_list(gone)})
        return [_ended(r) for r in rows]


def _ended(row: Any) -> Ended:
    return Ended(id=row["id"], type=row["type"], schedule=row["schedule"],
                 state=TaskState(row["state"]), finished=float(row["finished"]),
                 version=row["version"])
